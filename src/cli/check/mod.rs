//! `ecr-preflight check`: the webhook's rules and messages applied to manifests, for CI.

mod input;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use serde::Deserialize;
use tokio::time::Instant;

use crate::admission::review::ObjectView;
use crate::config::EngineArgs;
use crate::workload::{self, WorkloadKind};
pub use input::{Document, InputError};
pub use report::{Row, Summary};

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

/// Exit codes, the first that applies.
pub const EXIT_INPUT: u8 = 2;
pub const EXIT_BROKEN: u8 = 1;
pub const EXIT_UNKNOWN: u8 = 3;

/// A container of an object read from the input.
#[derive(Debug, Clone)]
pub struct Subject {
    pub file: String,
    pub document: usize,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub container: String,
    pub container_kind: crate::decision::ContainerKind,
    pub image: String,
}

/// Every container of every object with a pod template; objects that do not decode are
/// input errors.
pub fn subjects(documents: &[Document], errors: &mut Vec<InputError>) -> Vec<Subject> {
    let mut out = Vec::new();
    for doc in documents {
        let kind = doc
            .object
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or_default();
        let group = doc
            .object
            .get("apiVersion")
            .and_then(|v| v.as_str())
            .and_then(|v| v.rsplit_once('/').map(|(g, _)| g))
            .unwrap_or_default();
        let Some(workload_kind) = WorkloadKind::from_group_kind(group, kind) else {
            continue;
        };
        let view = match ObjectView::deserialize(&doc.object) {
            Ok(v) => v,
            Err(e) => {
                errors.push(InputError {
                    file: doc.file.clone(),
                    document: Some(doc.index),
                    message: format!("malformed {kind}: {e}"),
                });
                continue;
            }
        };
        let name = view
            .metadata
            .name
            .as_deref()
            .or(view.metadata.generate_name.as_deref())
            .unwrap_or_default()
            .to_owned();
        let namespace = view.metadata.namespace.as_deref().map(str::to_owned);
        for c in workload::images_of(workload_kind, &view) {
            out.push(Subject {
                file: doc.file.clone(),
                document: doc.index,
                kind: kind.to_owned(),
                namespace: namespace.clone(),
                name: name.clone(),
                container: c.name.into_owned(),
                container_kind: c.kind,
                image: c.image.into_owned(),
            });
        }
    }
    out
}

pub async fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    args.engine.validate().map_err(|e| anyhow::anyhow!(e))?;
    let deadline = Instant::now() + args.engine.timeout;
    let (documents, mut errors) = input::read_all(&args.paths);
    let subjects = subjects(&documents, &mut errors);
    let mut images: Vec<String> = subjects.iter().map(|s| s.image.clone()).collect();
    images.sort();
    images.dedup();
    let engine = super::serve::build_engine(&args.engine).await;
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
