//! `ecr-preflight serve`: its arguments; wire configuration, engine, TLS and listeners; run
//! until SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use clap::Args;
use rustls::sign::CertifiedKey;

use super::engine_args::{parse_duration, routed, Built, EngineArgs};
use super::process::{credentials_gate, wait_for_signal};
use super::watch::{controller_parts, kube_client, kube_config, WatchFlags};
use crate::admission::DecisionLog;
use crate::admission::{OwnedObjects, Policy};
use crate::decision::{Mode, OnError};
use crate::pull_secrets::SecretReader;
use crate::server::tls::{self, CertStore};
use crate::server::{self, Limits, WebhookConfig};
use crate::watch::{self, Controller};

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
    /// Serve POST /mutate: each Pod's images written by tag are pinned to the digest the
    /// check found intact (repo:tag@sha256:…), in every mode (docs/pinning.md).
    #[arg(long, env = "ECR_PREFLIGHT_PIN_DIGESTS", default_value_t = false,
        action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub pin_digests: bool,
    /// At most how long readiness waits for AWS credentials at start-up. Past it the pod
    /// turns ready anyway, with a warning, and lookups answer `unknown` (saying why) until
    /// the background retries find credentials.
    #[arg(long, env = "ECR_PREFLIGHT_CREDENTIALS_WAIT", default_value = "10s", value_parser = parse_duration)]
    pub credentials_wait: Duration,
    /// Threads serving requests [default: 1].
    #[arg(long, env = "ECR_PREFLIGHT_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub worker_threads: Option<u16>,
    /// Run the controller in this process too: re-verify every image in use (see the
    /// controller's flags).
    #[arg(long, env = "ECR_PREFLIGHT_WATCH")]
    pub watch: bool,
    #[command(flatten)]
    pub watch_flags: WatchFlags,
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

pub async fn run(args: ServeArgs, decision_log: DecisionLog) -> anyhow::Result<ExitCode> {
    let tls_source = args.tls_source().map_err(|e| anyhow!(e))?;
    args.engine.validate().map_err(|e| anyhow!(e))?;
    let certificates = CertStore::new(first_certificate(&tls_source)?);
    if args.watch {
        args.watch_flags.validate().map_err(|e| anyhow!(e))?;
    }
    let built = args.engine.build_engine().await;
    if let TlsSource::Files { cert, key } = &tls_source {
        tls::spawn_reloader(
            certificates.clone(),
            cert.clone(),
            key.clone(),
            args.tls_reload_interval,
            &built.engine.metrics().task_restarts,
        );
    }
    let (controller, config_platforms) = if args.watch {
        (
            Some(controller(&args, &built).await?),
            Some(
                args.engine
                    .config_platforms(&built.ecr, built.other.clone())?,
            ),
        )
    } else {
        (None, None)
    };
    let pull_secrets = if args.watch_flags.read_pull_secrets {
        let client = kube_client().await.map_err(|e| {
            anyhow!("--read-pull-secrets: {e:#}. Give it a Kubernetes configuration (in-cluster, KUBECONFIG or ~/.kube/config), or leave pull secrets unread")
        })?;
        Some(SecretReader::new(client))
    } else {
        None
    };
    let credentials = built.credentials;
    let engine = Arc::new(built.engine);
    let config = WebhookConfig {
        listen: args.listen,
        metrics_listen: args.metrics_listen,
        policy: Policy {
            mode: args.mode,
            on_error: args.on_error,
            owned_objects: args.owned_objects,
        },
        timeout: args.engine.timeout,
        certificates,
        limits: Limits {
            // No request outlives its budget, so draining needs no longer; idle
            // keep-alive connections are closed when it ends.
            drain_timeout: args.engine.timeout + Duration::from_secs(1),
            ..Limits::default()
        },
        decision_log,
        ready_when: credentials.map(|keeper| credentials_gate(keeper, args.credentials_wait)),
        controller: controller.clone(),
        config_platforms,
        pull_secrets,
        pin_digests: args.pin_digests,
    };
    let running = server::start_webhook(engine, config).await?;
    tracing::info!(
        webhook = %running.webhook_addr.map(|a| a.to_string()).unwrap_or_default(),
        metrics = %running.metrics_addr,
        mode = args.mode.as_str(),
        timeout = ?args.engine.timeout,
        "serving"
    );
    wait_for_signal().await;
    running.set_unready();
    if let Some(controller) = &controller {
        // The Lease goes to another replica now, not after its duration.
        controller.stop().await;
    }
    tracing::info!(delay = ?args.shutdown_delay, "shutting down: unready, still serving until the delay ends");
    tokio::select! {
        () = tokio::time::sleep(args.shutdown_delay) => {}
        () = wait_for_signal() => tracing::info!("second signal: draining now"),
    }
    tracing::info!("draining open requests");
    running.shutdown();
    running.wait().await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// The controller beside the webhook, on a thread and runtime of its own, with SDK clients
/// and a registry API client of its own (see `watch::start_apart`). Without a Kubernetes
/// configuration `--watch` cannot be kept, and saying so at start-up beats a webhook that
/// looks healthy while nothing re-verifies (once started, the controller never holds
/// admission back: an API server that cannot be reached is retried in the background).
async fn controller(args: &ServeArgs, built: &Built) -> anyhow::Result<Controller> {
    let cannot = |e: anyhow::Error| {
        anyhow!("--watch: the controller cannot start: {e:#}. Give it a Kubernetes configuration (in-cluster, KUBECONFIG or ~/.kube/config), or run serve without --watch to serve the webhook alone")
    };
    let config = kube_config().await.map_err(cannot)?;
    let ecr = Arc::new(built.ecr.apart());
    let other = args.engine.distribution();
    let registry = routed(ecr.clone(), other.clone());
    let (engine, settings) =
        controller_parts(&built.engine, registry, &args.engine, &args.watch_flags);
    let controller = watch::start_apart(config, engine, settings)
        .await
        .map_err(cannot)?;
    controller
        .inventory
        .attach_configs(args.engine.config_platforms(&ecr, other)?);
    Ok(controller)
}

/// The certificate served from the start: the files', or a self-signed one.
fn first_certificate(source: &TlsSource) -> anyhow::Result<CertifiedKey> {
    Ok(match source {
        TlsSource::Files { cert, key } => tls::load_files(cert, key)?,
        TlsSource::SelfSigned => {
            tracing::warn!("serving a self-signed certificate for localhost: development only");
            let (cert, key) = tls::self_signed_pem()?;
            tls::certified_key(
                cert.as_bytes(),
                key.as_bytes(),
                "self-signed".as_ref(),
                "self-signed".as_ref(),
            )?
        }
    })
}
