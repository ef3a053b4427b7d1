//! Logging: the batched line sink every log line goes through, the decision line, and the
//! subscriber set-up of the command line.

mod sink;

pub(crate) use sink::{push_rfc3339_micros, push_zero_padded};
pub use sink::{LineSink, SinkGuard};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[cfg(feature = "aws")]
pub use subscriber::init;

/// The log filter without `ECR_PREFLIGHT_LOG`.
pub const DEFAULT_FILTER: &str =
    "info,aws_config=warn,aws_smithy_runtime=warn,hyper=warn,kube_client::client::builder=off";

#[cfg(feature = "aws")]
mod subscriber {
    use std::io::IsTerminal;

    use tracing_subscriber::EnvFilter;

    use super::{LineSink, LogFormat, SinkGuard, DEFAULT_FILTER};

    /// Logs go to stderr through the batching sink, so a log line costs the request a copy
    /// into memory, not a write system call. `None` when the writer thread cannot start:
    /// then logs are written directly.
    pub fn init(format: LogFormat) -> Option<(LineSink, SinkGuard)> {
        let filter = EnvFilter::try_from_env("ECR_PREFLIGHT_LOG").unwrap_or_else(|_| {
            // kube's client logs every failed request at ERROR: an outage is told by the
            // watchers, once each, and those lines are left to ECR_PREFLIGHT_LOG=debug.
            EnvFilter::new(DEFAULT_FILTER)
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
}
