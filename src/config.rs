//! Typed configuration: flags, each also read from `ECR_PREFLIGHT_<FLAG>`, checked once at
//! start-up before anything binds.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::admission::OwnedObjects;
use crate::cache::CacheSettings;
use crate::decision::{Mode, OnError};
use crate::manifest::Platform;

#[derive(Debug, Parser)]
#[command(
    name = "ecr-preflight",
    version,
    about = "Stops images whose layers are missing in Amazon ECR before they are scheduled"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log line format.
    #[arg(
        long,
        global = true,
        env = "ECR_PREFLIGHT_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the validating admission webhook.
    Serve(ServeArgs),
    /// Check Kubernetes manifests (files, directories, or - for stdin) like the webhook would.
    Check(crate::cli::check::CheckArgs),
    /// Blob availability in ECR, like `aws ecr batch-check-layer-availability`, or for every
    /// blob of an image.
    Layers(crate::cli::layers::LayersArgs),
}

/// What the engine needs; shared by every subcommand that checks images.
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// Whole-decision budget (e.g. 3s, 1500ms).
    #[arg(long, env = "ECR_PREFLIGHT_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Index children to check, as os/architecture[/variant], comma-separated.
    #[arg(
        long,
        env = "ECR_PREFLIGHT_PLATFORMS",
        value_delimiter = ',',
        default_value = "linux/amd64,linux/arm64,windows/amd64"
    )]
    pub platforms: Vec<Platform>,
    /// Repository prefixes served by ECR pull-through cache rules (e.g. docker-hub/,ecr-public/).
    #[arg(
        long,
        env = "ECR_PREFLIGHT_PULL_THROUGH_PREFIXES",
        value_delimiter = ','
    )]
    pub pull_through_prefixes: Vec<String>,
    /// ECR API endpoint override (tests, VPC endpoints). AWS_ENDPOINT_URL_ECR works too.
    #[arg(long, env = "ECR_PREFLIGHT_ECR_ENDPOINT_URL")]
    pub ecr_endpoint_url: Option<String>,
    /// How long tag → digest answers are cached.
    #[arg(long, env = "ECR_PREFLIGHT_TAG_CACHE_TTL", default_value = "60s", value_parser = parse_duration)]
    pub tag_cache_ttl: Duration,
    /// Most tag → digest entries kept.
    #[arg(long, env = "ECR_PREFLIGHT_TAG_CACHE_SIZE", default_value_t = 10_000)]
    pub tag_cache_size: u64,
    /// How long manifests (immutable, by digest) are cached.
    #[arg(long, env = "ECR_PREFLIGHT_MANIFEST_CACHE_TTL", default_value = "24h", value_parser = parse_duration)]
    pub manifest_cache_ttl: Duration,
    /// Most manifests kept.
    #[arg(
        long,
        env = "ECR_PREFLIGHT_MANIFEST_CACHE_SIZE",
        default_value_t = 10_000
    )]
    pub manifest_cache_size: u64,
    /// How long a blob found AVAILABLE is trusted.
    #[arg(long, env = "ECR_PREFLIGHT_BLOB_CACHE_TTL", default_value = "10m", value_parser = parse_duration)]
    pub blob_cache_ttl: Duration,
    /// Most AVAILABLE blob entries kept (about 100 bytes each).
    #[arg(long, env = "ECR_PREFLIGHT_BLOB_CACHE_SIZE", default_value_t = 200_000)]
    pub blob_cache_size: u64,
    /// How long a batch of ECR lookups waits for concurrent requests to join it.
    #[arg(long, env = "ECR_PREFLIGHT_BATCH_WINDOW", default_value = "2ms", value_parser = parse_duration)]
    pub batch_window: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Webhook (HTTPS) address; `[::]` is dual-stack.
    #[arg(long, env = "ECR_PREFLIGHT_LISTEN", default_value = "[::]:8443")]
    pub listen: SocketAddr,
    /// PEM certificate chain for the webhook listener.
    #[arg(long, env = "ECR_PREFLIGHT_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for the webhook listener.
    #[arg(long, env = "ECR_PREFLIGHT_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// How often the certificate and key files are checked for a new pair.
    #[arg(long, env = "ECR_PREFLIGHT_TLS_RELOAD_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub tls_reload_interval: Duration,
    /// On SIGTERM, keep serving (unready) this long before draining, so endpoints and the
    /// API server stop sending requests first.
    #[arg(long, env = "ECR_PREFLIGHT_SHUTDOWN_DELAY", default_value = "5s", value_parser = parse_duration)]
    pub shutdown_delay: Duration,
    /// Serve a self-signed certificate for localhost (development only).
    #[arg(long, env = "ECR_PREFLIGHT_INSECURE_SELF_SIGNED")]
    pub insecure_self_signed: bool,
    /// Plain-HTTP address for /healthz, /readyz and /metrics.
    #[arg(
        long,
        env = "ECR_PREFLIGHT_METRICS_LISTEN",
        default_value = "[::]:9090"
    )]
    pub metrics_listen: SocketAddr,
    /// What to do with broken images: enforce (deny), warn (allow with warnings), audit (record).
    #[arg(long, env = "ECR_PREFLIGHT_MODE", default_value = "enforce")]
    pub mode: Mode,
    /// In enforce mode, allow or deny when ECR cannot answer.
    #[arg(long, env = "ECR_PREFLIGHT_ON_ERROR", default_value = "allow")]
    pub on_error: OnError,
    /// Objects with a controller owner: audit (record only) or enforce (apply the mode).
    #[arg(long, env = "ECR_PREFLIGHT_OWNED_OBJECTS", default_value = "audit")]
    pub owned_objects: OwnedObjects,
    /// Threads serving requests [default: 1].
    #[arg(long, env = "ECR_PREFLIGHT_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub worker_threads: Option<u16>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// Default worker threads. A cached review costs about 15 µs of CPU, so one thread serves
/// tens of thousands a second, far above any API server's admission rate, and ECR calls
/// wait on the network, not on a thread. A second thread adds capacity only on an idle node;
/// on a busy one (or under a CPU limit) the threads share the same CPU time and hand work
/// between CPUs: measured on 2 CPUs shared with a load generator, 20 µs of CPU a request
/// with two threads against 14–16 µs with one (docs/performance.md).
pub const DEFAULT_WORKER_THREADS: usize = 1;

/// Where the webhook's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    Files { cert: PathBuf, key: PathBuf },
    SelfSigned,
}

impl ServeArgs {
    /// Cross-field checks that clap cannot express.
    pub fn tls_source(&self) -> Result<TlsSource, String> {
        match (&self.tls_cert, &self.tls_key, self.insecure_self_signed) {
            (Some(cert), Some(key), false) => Ok(TlsSource::Files {
                cert: cert.clone(),
                key: key.clone(),
            }),
            (None, None, true) => Ok(TlsSource::SelfSigned),
            (Some(_), Some(_), true) => {
                Err("--insecure-self-signed cannot be combined with --tls-cert/--tls-key".into())
            }
            (Some(_), None, _) => Err("--tls-cert needs --tls-key".into()),
            (None, Some(_), _) => Err("--tls-key needs --tls-cert".into()),
            (None, None, false) => Err(
                "give --tls-cert and --tls-key, or --insecure-self-signed for development".into(),
            ),
        }
    }
}

impl EngineArgs {
    pub fn cache_settings(&self) -> CacheSettings {
        CacheSettings {
            manifest_capacity: self.manifest_cache_size,
            manifest_ttl: self.manifest_cache_ttl,
            tag_capacity: self.tag_cache_size,
            tag_ttl: self.tag_cache_ttl,
            blob_capacity: self.blob_cache_size,
            blob_ttl: self.blob_cache_ttl,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.timeout < Duration::from_millis(100) {
            return Err("--timeout must be at least 100ms".into());
        }
        if self.batch_window > Duration::from_millis(100) {
            return Err(
                "--batch-window must be at most 100ms: it adds to every cold lookup".into(),
            );
        }
        if self.platforms.is_empty() {
            return Err("--platforms must name at least one platform".into());
        }
        Ok(())
    }
}

/// Accepts `3s`, `1500ms`, `1m30s` and Go's `1m0s`, as the API server writes durations.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("invalid duration {s:?}: {e}"))
}
