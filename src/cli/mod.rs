//! The command line: `ecr-preflight serve`.

pub mod check;
pub mod layers;
mod serve;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::config::{Cli, Command, LogFormat};
use crate::decision_log::DecisionLog;
use crate::log_sink::{LineSink, SinkGuard};

/// Parses the command line, sets up logging and runs the subcommand.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The guard is held to the end of main: dropping it flushes the lines still queued.
    let (sink, _log_guard) = init_tracing(cli.log_format).unzip();
    // Decision lines skip tracing's formatter when they are JSON lines anyway.
    let decision_log = match (cli.log_format, sink) {
        (LogFormat::Json, Some(sink)) => DecisionLog::Json(sink),
        _ => DecisionLog::Tracing,
    };
    crate::tls::install_crypto_provider();
    let workers = match &cli.command {
        Command::Serve(args) => args.worker_threads.map(usize::from),
        _ => None,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.unwrap_or(crate::config::DEFAULT_WORKER_THREADS))
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

/// Logs go to stderr through the batching sink, so a log line costs the request a copy
/// into memory, not a write system call. `None` when the writer thread cannot start:
/// then logs are written directly.
fn init_tracing(format: LogFormat) -> Option<(LineSink, SinkGuard)> {
    let filter = EnvFilter::try_from_env("ECR_PREFLIGHT_LOG").unwrap_or_else(|_| {
        EnvFilter::new("info,aws_config=warn,aws_smithy_runtime=warn,hyper=warn")
    });
    let ansi = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    let sink = match LineSink::start(std::io::stderr()) {
        Ok((sink, guard)) => Some((sink, guard)),
        Err(e) => {
            eprintln!("warning: cannot start the log writer ({e}); writing logs directly");
            None
        }
    };
    let writer = sink.as_ref().map(|(s, _)| s.clone());
    let make_writer = move || -> Box<dyn std::io::Write> {
        match &writer {
            Some(sink) => Box::new(sink.writer()),
            None => Box::new(std::io::stderr()),
        }
    };
    let builder = builder.with_writer(make_writer);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
    sink
}
