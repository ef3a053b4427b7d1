//! `ecr-preflight report`: the controller's inventory, built once from one list of the
//! cluster, verified at once and printed; exit codes as `check`'s.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::anyhow;
use clap::{Args, ValueEnum};

use super::engine_args::EngineArgs;
use super::watch::{kube_client, ScopeFlags};
use crate::decision::Severity;
use crate::lifecycle::expiry;
use crate::pull_secrets::{Keyring, SecretReader};
use crate::watch::state::Row;
use crate::watch::{nodes, verify, watchers, Budgeted, InventoryView};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Table,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// Output format: a table, or JSON in the shape of the admin listener's /inventory.
    #[arg(short = 'o', long, default_value = "table")]
    pub output: ReportFormat,
    #[command(flatten)]
    pub scope: ScopeFlags,
    /// Ask registries other than ECR's with the credentials of the imagePullSecrets of the
    /// workloads that run each image, as `watch` does (needs get on Secrets).
    #[arg(long, env = "ECR_PREFLIGHT_READ_PULL_SECRETS", default_value_t = false,
        action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub read_pull_secrets: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// How long the whole verification may take, waits for the call budget included.
const REPORT_DEADLINE: Duration = Duration::from_secs(600);

pub async fn run(args: ReportArgs) -> anyhow::Result<ExitCode> {
    args.engine.validate().map_err(|e| anyhow!(e))?;
    args.scope.validate().map_err(|e| anyhow!(e))?;
    let rate = args.scope.watch_ecr_calls_per_second;
    let client = kube_client().await?;
    let inventory = watchers::list_once(&client, &args.scope.namespaces())
        .await
        .map_err(|e| anyhow!("cannot read the cluster: {e}"))?;
    let cluster = nodes::list_once(&client)
        .await
        .map_err(|e| anyhow!("cannot read the cluster's nodes: {e}"))?;
    let built = args.engine.build_engine().await;
    inventory.attach_configs(
        args.engine
            .config_platforms(&built.ecr, built.other.clone())?,
    );
    let budgeted = Arc::new(Budgeted::new(built.registry.clone(), rate));
    let engine = built
        .engine
        .background(budgeted, args.engine.engine_settings());
    nodes::widen_once(&cluster, &engine);
    inventory.attach_cluster(cluster);
    let images: Vec<String> = inventory.images().into_iter().map(String::from).collect();
    let keyring = match args.read_pull_secrets {
        true => {
            let reader = SecretReader::new(client.clone());
            verify::pull_keyring(&reader, &engine, &inventory, &images).await
        }
        false => Keyring::default(),
    };
    let recorded = verify::record(
        &engine,
        &inventory,
        (images, &keyring),
        REPORT_DEADLINE,
        true,
    )
    .await;
    for (repo, error) in &recorded.errors {
        tracing::warn!(repository = %repo, error = %error, "cannot forecast lifecycle policies' actions for this repository");
    }
    let rows = inventory.rows();
    let view = InventoryView::of(Some(SystemTime::now()), &rows);
    match args.output {
        ReportFormat::Json => println!("{}", serde_json::to_string_pretty(&view)?),
        ReportFormat::Table => print!("{}", table(&rows)),
    }
    Ok(ExitCode::from(exit_code(&rows)))
}

/// 1 when an image in use is broken, else 3 when ECR could not answer for one, else 0.
fn exit_code(rows: &[Row]) -> u8 {
    let severities = rows.iter().flat_map(|row| match row.problems() {
        None => vec![Severity::Unknown],
        Some(problems) => problems.into_iter().map(|p| p.severity).collect(),
    });
    // Severity orders Broken first.
    match severities.min() {
        Some(Severity::Broken) => 1,
        Some(Severity::Unknown) => 3,
        _ => 0,
    }
}

fn table(rows: &[Row]) -> String {
    let mut lines: Vec<[String; 8]> = vec![[
        "NAMESPACE".into(),
        "KIND".into(),
        "NAME".into(),
        "CONTAINER".into(),
        "IMAGE".into(),
        "OUTCOME".into(),
        "DRIFT".into(),
        "EXPIRES".into(),
    ]];
    let mut problems = Vec::new();
    for row in rows {
        let w = &row.workload.key;
        lines.push([
            w.namespace.to_string(),
            w.kind.to_string(),
            w.name.to_string(),
            row.container.name.to_string(),
            row.container.image.to_string(),
            row.outcome().as_str().to_owned(),
            if row.drift() { "yes" } else { "no" }.to_owned(),
            row.expiry.as_ref().map_or_else(
                || "-".to_owned(),
                |e| {
                    let f = &e.forecast;
                    format!(
                        "{} {} (rule {})",
                        expiry::rfc3339(f.at),
                        f.action.as_str(),
                        f.rule_priority
                    )
                },
            ),
        ]);
        if let Some(p) = row.problem() {
            problems.push(format!("{}/{}/{}: {p}", w.namespace, w.kind, w.name));
        }
        if let Some(e) = &row.expiry {
            problems.push(format!(
                "{}/{}/{}: container {}: {} will be {}",
                w.namespace,
                w.kind,
                w.name,
                row.container.name,
                row.container.image,
                e.sentence()
            ));
        }
    }
    let mut widths = [0usize; 8];
    for line in &lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in &lines {
        let cells: Vec<String> = line
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    if !problems.is_empty() {
        out.push('\n');
        for p in problems {
            out.push_str(&p);
            out.push('\n');
        }
    }
    out.push_str(&format!(
        "{} workload containers, {} images\n",
        rows.len(),
        rows.iter()
            .map(|r| &r.container.image)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    ));
    out
}
