//! `ecr-preflight check`: the webhook's rules and messages applied to manifests, for CI.

mod input;
mod report;
mod subject;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use tokio::time::Instant;

use super::engine_args::EngineArgs;
use super::watch::ExpiryFlags;
use crate::engine::Engine;
use crate::lifecycle::expiry::{self, Forecasts};
use crate::registry::RegistryError;
use report::{Rows, Summary};

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Files, directories (walked for *.yaml, *.yml, *.json) or `-` for stdin.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// table (people), json (tools) or github (workflow annotations).
    #[arg(long, short, env = "ECR_PREFLIGHT_OUTPUT", default_value = "table")]
    pub output: OutputFormat,
    /// Add the forecast of each image's repository lifecycle policy (needs
    /// ecr:GetLifecyclePolicy and ecr:DescribeImages): images a rule will expire or archive
    /// within --expiry-warning are reported.
    #[arg(long, env = "ECR_PREFLIGHT_LIFECYCLE")]
    pub lifecycle: bool,
    #[command(flatten)]
    pub expiry: ExpiryFlags,
    /// Exit 1 when a rule will expire or archive an image within --expiry-warning (with
    /// --lifecycle); without it they are reported and the exit code is unchanged.
    #[arg(long, env = "ECR_PREFLIGHT_FAIL_ON_EXPIRY", requires = "lifecycle")]
    pub fail_on_expiry: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Github,
}

/// How long the forecasts may take, after the check: a repository's images may span many
/// DescribeImages pages.
const LIFECYCLE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

pub async fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    args.engine.validate().map_err(|e| anyhow::anyhow!(e))?;
    let deadline = Instant::now() + args.engine.timeout;
    let (documents, mut errors) = input::read_all(&args.paths);
    let subjects = subject::subjects(&documents, &mut errors);
    let images: Vec<String> = subjects.iter().map(|s| s.image.clone()).collect();
    let engine = args.engine.build_engine().await.engine;
    let reports = engine.check(&images, deadline).await;
    let mut rows = report::rows(&subjects, &reports);
    let mut lifecycle_errors = Vec::new();
    if args.lifecycle {
        let forecasts = forecast(&engine, &images, Instant::now() + LIFECYCLE_DEADLINE).await;
        report::add_expiry(&mut rows, &forecasts.images, args.expiry.expiry_warning);
        lifecycle_errors = report::lifecycle_errors(forecasts.errors);
    }
    let mut summary = Summary::of(&rows, &errors, &lifecycle_errors, args.fail_on_expiry);
    if args.lifecycle {
        summary = summary.with_lifecycle(&rows, &lifecycle_errors);
    }
    let rows = Rows {
        rows: &rows,
        lifecycle: args.lifecycle,
        lifecycle_errors: &lifecycle_errors,
    };
    let text = match args.output {
        OutputFormat::Table => report::table(&rows, &errors, &summary),
        OutputFormat::Json => report::json(&rows, &errors, &summary)?,
        OutputFormat::Github => report::github(&rows, &errors, &summary, args.fail_on_expiry),
    };
    print!("{text}");
    Ok(ExitCode::from(summary.exit_code()))
}

/// The forecast of every image's repository, within the run's deadline.
async fn forecast(engine: &Engine, images: &[String], deadline: Instant) -> Forecasts {
    let Some(facts) = engine.lifecycle() else {
        return Forecasts::default();
    };
    let digests_of = |image: &str| engine.manifest_digests(image);
    let forecasting = expiry::forecast_images(facts, images, digests_of, expiry::now());
    match tokio::time::timeout_at(deadline, forecasting).await {
        Ok(found) => found,
        Err(_) => Forecasts {
            errors: images
                .iter()
                .filter_map(|i| match crate::image::ImageTarget::classify(i) {
                    Ok(crate::image::ImageTarget::Ecr { repo, .. }) => {
                        Some((repo, RegistryError::Timeout.into()))
                    }
                    _ => None,
                })
                .collect::<std::collections::BTreeMap<_, _>>()
                .into_iter()
                .collect(),
            ..Forecasts::default()
        },
    }
}
