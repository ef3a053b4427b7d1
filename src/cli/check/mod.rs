//! `ecr-preflight check`: the webhook's rules and messages applied to manifests, for CI.

mod input;
mod report;
mod subject;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use tokio::time::Instant;

use super::engine_args::EngineArgs;
use report::Summary;

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Files, directories (walked for *.yaml, *.yml, *.json) or `-` for stdin.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// table (people), json (tools) or github (workflow annotations).
    #[arg(long, short, env = "ECR_PREFLIGHT_OUTPUT", default_value = "table")]
    pub output: OutputFormat,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Github,
}

pub async fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    args.engine.validate().map_err(|e| anyhow::anyhow!(e))?;
    let deadline = Instant::now() + args.engine.timeout;
    let (documents, mut errors) = input::read_all(&args.paths);
    let subjects = subject::subjects(&documents, &mut errors);
    let images: Vec<String> = subjects.iter().map(|s| s.image.clone()).collect();
    let engine = args.engine.build_engine().await.engine;
    let reports = engine.check(&images, deadline).await;
    let rows = report::rows(&subjects, &reports);
    let summary = Summary::of(&rows, &errors);
    let text = match args.output {
        OutputFormat::Table => report::table(&rows, &errors, &summary),
        OutputFormat::Json => report::json(&rows, &errors, &summary)?,
        OutputFormat::Github => report::github(&rows, &errors, &summary),
    };
    print!("{text}");
    Ok(ExitCode::from(summary.exit_code()))
}
