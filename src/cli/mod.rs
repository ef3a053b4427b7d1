//! The command line: `ecr-preflight serve`, `check`, `layers`, `watch` and `report`. Each subcommand owns its
//! arguments; the engine's, which `serve` and `check` share, are in `engine_args.rs`.

mod check;
mod engine_args;
mod layers;
mod process;
mod report;
mod serve;
mod watch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::admission::DecisionLog;
use crate::logging::{self, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "ecr-preflight",
    version,
    about = "Stops images whose layers are missing in Amazon ECR before they are scheduled"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log line format.
    #[arg(
        long,
        global = true,
        env = "ECR_PREFLIGHT_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the validating admission webhook.
    Serve(serve::ServeArgs),
    /// Check Kubernetes manifests (files, directories, or - for stdin) like the webhook would.
    Check(check::CheckArgs),
    /// Blob availability in ECR, like `aws ecr batch-check-layer-availability`, or for every
    /// blob of an image.
    Layers(layers::LayersArgs),
    /// The controller alone: re-verify every image the cluster runs, with the admin
    /// listener (/healthz, /readyz, /metrics, /inventory) and no webhook.
    Watch(watch::WatchArgs),
    /// List the cluster once, verify every image in use and print it (exit 1 when one is
    /// broken, 3 when ECR could not answer for some, 2 when the cluster cannot be read).
    Report(report::ReportArgs),
}

/// Parses the command line, sets up logging and runs the subcommand.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The guard is held to the end of main: dropping it flushes the lines still queued.
    let (sink, _log_guard) = logging::init(cli.log_format).unzip();
    // Decision lines skip tracing's formatter when they are JSON lines anyway.
    let decision_log = match (cli.log_format, sink) {
        (LogFormat::Json, Some(sink)) => DecisionLog::Json(sink),
        _ => DecisionLog::Tracing,
    };
    crate::server::tls::install_crypto_provider();
    let workers = match &cli.command {
        Command::Serve(args) => args.worker_threads.map(usize::from),
        _ => None,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.unwrap_or(serve::DEFAULT_WORKER_THREADS))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args, decision_log).await,
            Command::Check(args) => check::run(args).await,
            Command::Layers(args) => layers::run(args).await,
            Command::Watch(args) => watch::run(args).await,
            Command::Report(args) => report::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
