//! `ecr-preflight watch`: the controller alone, with the admin listener and no webhook; and
//! the controller's flags, which `serve --watch` shares.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use clap::{ArgAction, Args};

use super::engine_args::{parse_duration, EngineArgs};
use super::process::{credentials_gate, wait_for_signal};
use crate::engine::Engine;
use crate::registry::Registry;
use crate::server::{self, ReadyGate};
use crate::watch::{self, Controller, ExpirySettings, Namespaces, WatchSettings};

/// The controller's flags.
#[derive(Debug, Clone, Args)]
pub struct WatchFlags {
    /// Every image in use is verified again at least this often.
    #[arg(long, env = "ECR_PREFLIGHT_RECHECK_INTERVAL", default_value = "15m", value_parser = parse_duration)]
    pub recheck_interval: Duration,
    #[command(flatten)]
    pub scope: ScopeFlags,
    /// Export ecr_preflight_workload_images, one series per workload container (turn off
    /// for very large clusters).
    #[arg(long, env = "ECR_PREFLIGHT_WORKLOAD_METRICS", default_value_t = true,
        action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub workload_metrics: bool,
    /// Namespace of the ecr-preflight-watch Lease [default: the pod's namespace, else default].
    #[arg(long, env = "ECR_PREFLIGHT_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Elect one verifier among the replicas; false: this process verifies alone.
    #[arg(long, env = "ECR_PREFLIGHT_LEADER_ELECTION", default_value_t = true,
        action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub leader_election: bool,
    /// How long the Lease holds without renewal; another replica takes over after it.
    #[arg(long, env = "ECR_PREFLIGHT_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// Forecast when each repository's lifecycle policy will expire or archive the images in
    /// use (needs ecr:GetLifecyclePolicy and ecr:DescribeImages).
    #[arg(long, env = "ECR_PREFLIGHT_LIFECYCLE_FORECAST", default_value_t = true,
        action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub lifecycle_forecast: bool,
    #[command(flatten)]
    pub expiry: ExpiryFlags,
    /// Cross-check each repository's forecast with a lifecycle policy preview of ECR's own
    /// (needs ecr:StartLifecyclePolicyPreview and ecr:GetLifecyclePolicyPreview).
    #[arg(long, env = "ECR_PREFLIGHT_LIFECYCLE_PREVIEW", default_value_t = false,
        action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub lifecycle_preview: bool,
    /// Start restoring archived images that running workloads use, once per image (needs
    /// ecr:UpdateImageStorageClass; a restore is billed per GB retrieved).
    #[arg(long, env = "ECR_PREFLIGHT_RESTORE_ARCHIVED_IN_USE", default_value_t = false,
        action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub restore_archived_in_use: bool,
    /// Ask registries other than ECR's with the credentials of each pod's imagePullSecrets
    /// (dockerconfigjson, dockercfg), as its kubelet would: needs get on Secrets in the
    /// namespaces watched (docs/registries.md). The webhook of `serve` reads them too.
    #[arg(long, env = "ECR_PREFLIGHT_READ_PULL_SECRETS", default_value_t = false,
        action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub read_pull_secrets: bool,
}

/// How far ahead a lifecycle rule's action on an image is told.
#[derive(Debug, Clone, Args)]
pub struct ExpiryFlags {
    /// Tell of a lifecycle rule that will expire or archive an image in use within this.
    #[arg(long, env = "ECR_PREFLIGHT_EXPIRY_WARNING", default_value = "7d", value_parser = parse_duration)]
    pub expiry_warning: Duration,
}

/// Which namespaces the controller and `report` look at, and how fast they ask ECR.
#[derive(Debug, Clone, Args)]
pub struct ScopeFlags {
    /// ECR calls a second the re-verification may make per account and region, apart from
    /// admission's.
    #[arg(
        long,
        env = "ECR_PREFLIGHT_WATCH_ECR_CALLS_PER_SECOND",
        default_value_t = 10.0
    )]
    pub watch_ecr_calls_per_second: f64,
    /// Requests a second the re-verification may make to each registry other than ECR's
    /// (`--registries`): a manifest or blob HEAD is one, where an ECR call answers 100.
    #[arg(
        long,
        env = "ECR_PREFLIGHT_REGISTRY_REQUESTS_PER_SECOND",
        default_value_t = crate::watch::DEFAULT_REGISTRY_REQUESTS_PER_SECOND
    )]
    pub registry_requests_per_second: f64,
    /// Namespaces to watch, comma-separated [default: all].
    #[arg(long, env = "ECR_PREFLIGHT_WATCH_NAMESPACES", value_delimiter = ',')]
    pub watch_namespaces: Vec<String>,
    /// Namespaces never watched, comma-separated.
    #[arg(long, env = "ECR_PREFLIGHT_EXCLUDE_NAMESPACES", value_delimiter = ',')]
    pub exclude_namespaces: Vec<String>,
}

impl ScopeFlags {
    pub fn validate(&self) -> Result<(), String> {
        let rate = self.watch_ecr_calls_per_second;
        if !(rate.is_finite() && (0.1..=1000.0).contains(&rate)) {
            return Err("--watch-ecr-calls-per-second must be between 0.1 and 1000".into());
        }
        let rate = self.registry_requests_per_second;
        if !(rate.is_finite() && (0.1..=1000.0).contains(&rate)) {
            return Err("--registry-requests-per-second must be between 0.1 and 1000".into());
        }
        Ok(())
    }

    pub fn namespaces(&self) -> Namespaces {
        let clean = |list: &[String]| -> Vec<String> {
            list.iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        };
        Namespaces {
            only: clean(&self.watch_namespaces),
            excluded: clean(&self.exclude_namespaces).into_iter().collect(),
        }
    }
}

impl WatchFlags {
    pub fn validate(&self) -> Result<(), String> {
        if self.recheck_interval < Duration::from_secs(1) {
            return Err("--recheck-interval must be at least 1s".into());
        }
        self.scope.validate()?;
        if self.lease_duration < Duration::from_secs(2) {
            return Err("--lease-duration must be at least 2s".into());
        }
        if self.lifecycle_preview && !self.lifecycle_forecast {
            return Err(
                "--lifecycle-preview cross-checks the forecast: it needs --lifecycle-forecast"
                    .into(),
            );
        }
        Ok(())
    }

    pub fn settings(&self) -> WatchSettings {
        WatchSettings {
            recheck_interval: self.recheck_interval,
            calls_per_second: self.scope.watch_ecr_calls_per_second,
            registry_requests_per_second: self.scope.registry_requests_per_second,
            namespaces: self.scope.namespaces(),
            workload_metrics: self.workload_metrics,
            leader_election: self.leader_election,
            lease_namespace: self
                .lease_namespace
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(own_namespace),
            lease_duration: self.lease_duration,
            identity: watch::identity(),
            expiry: ExpirySettings {
                forecast: self.lifecycle_forecast,
                warning: self.expiry.expiry_warning,
                preview: self.lifecycle_preview,
                restore_archived: self.restore_archived_in_use,
            },
            read_pull_secrets: self.read_pull_secrets,
        }
    }
}

/// The namespace this pod runs in (`POD_NAMESPACE`, else the service account's), or
/// `default` outside a cluster.
fn own_namespace() -> String {
    std::env::var("POD_NAMESPACE")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace").ok()
        })
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".to_owned())
}

#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// Plain-HTTP address for /healthz, /readyz, /metrics and /inventory.
    #[arg(
        long,
        env = "ECR_PREFLIGHT_METRICS_LISTEN",
        default_value = "[::]:9090"
    )]
    pub metrics_listen: SocketAddr,
    /// At most how long readiness waits for AWS credentials at start-up.
    #[arg(long, env = "ECR_PREFLIGHT_CREDENTIALS_WAIT", default_value = "10s", value_parser = parse_duration)]
    pub credentials_wait: Duration,
    #[command(flatten)]
    pub watch: WatchFlags,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// The Kubernetes configuration from the standard chain: in-cluster service account, else
/// KUBECONFIG or ~/.kube/config (an http:// server, as `kubectl proxy` gives, works too).
pub async fn kube_config() -> anyhow::Result<kube::Config> {
    kube::Config::infer()
        .await
        .map_err(|e| anyhow!("no Kubernetes configuration found: {e}"))
}

/// A Kubernetes client for one-shot reads (`report`): kube's own retries included.
pub async fn kube_client() -> anyhow::Result<kube::Client> {
    kube::Client::try_from(kube_config().await?)
        .map_err(|e| anyhow!("cannot build the Kubernetes client: {e}"))
}

/// The controller's Kubernetes client (see [`watch::controller_client`]).
pub async fn controller_client() -> anyhow::Result<kube::Client> {
    watch::controller_client(kube_config().await?)
        .map_err(|e| anyhow!("cannot build the Kubernetes client: {e}"))
}

/// Starts the controller on `engine`'s registry, within its own budget, on the caller's
/// runtime (`watch`: nothing else runs there).
pub fn start_controller(
    client: kube::Client,
    engine: &Engine,
    registry: Arc<dyn Registry>,
    engine_args: &EngineArgs,
    flags: &WatchFlags,
) -> Controller {
    let (background, settings) = controller_parts(engine, registry, engine_args, flags);
    Controller::start(client, background, settings)
}

/// The controller's engine (on `registry`, behind the background budget) and settings,
/// logged as it starts.
pub fn controller_parts(
    engine: &Engine,
    registry: Arc<dyn Registry>,
    engine_args: &EngineArgs,
    flags: &WatchFlags,
) -> (Arc<Engine>, WatchSettings) {
    let settings = flags.settings();
    let background =
        watch::background_engine(engine, registry, &engine_args.engine_settings(), &settings);
    tracing::info!(
        interval = ?settings.recheck_interval,
        expiry_warning = ?settings.expiry.warning,
        lifecycle_preview = settings.expiry.preview,
        restore_archived_in_use = settings.expiry.restore_archived,
        calls_per_second = settings.calls_per_second,
        leader_election = settings.leader_election,
        lease_namespace = %settings.lease_namespace,
        identity = %settings.identity,
        "controller starting"
    );
    (Arc::new(background), settings)
}

pub async fn run(args: WatchArgs) -> anyhow::Result<ExitCode> {
    args.engine.validate().map_err(|e| anyhow!(e))?;
    args.watch.validate().map_err(|e| anyhow!(e))?;
    let client = controller_client().await?;
    let built = args.engine.build_engine().await;
    let controller = start_controller(
        client,
        &built.engine,
        built.registry.clone(),
        &args.engine,
        &args.watch,
    );
    controller.inventory.attach_configs(
        args.engine
            .config_platforms(&built.ecr, built.other.clone())?,
    );
    // Ready once credentials are in hand (or their wait is over) and every watcher has
    // listed once.
    let inventory = controller.inventory.clone();
    let credentials = built
        .credentials
        .map(|keeper| credentials_gate(keeper, args.credentials_wait));
    let gate: ReadyGate = Box::pin(async move {
        if let Some(gate) = credentials {
            gate.await;
        }
        inventory.wait_synced().await;
        tracing::info!("inventory listed: ready");
    });
    let running = server::start_admin(
        &built.engine,
        args.metrics_listen,
        controller.clone(),
        Some(gate),
    )
    .await?;
    tracing::info!(metrics = %running.metrics_addr, "watching");
    wait_for_signal().await;
    running.set_unready();
    controller.stop().await;
    running.shutdown();
    running.wait().await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}
