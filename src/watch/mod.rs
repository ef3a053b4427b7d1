//! The controller face: an inventory of the images every workload uses (kube-runtime
//! watchers), re-verified against ECR once per interval by the engine (a background engine
//! of its own, within its own call budget), told as metrics, Events and `/inventory`. One
//! replica verifies, chosen by a Lease; every replica keeps the inventory, so a new leader
//! starts at once.

mod apart;
mod budget;
mod events;
mod intern;
pub mod inventory;
mod leader;
pub mod nodes;
pub mod pass_budget;
mod publish;
pub mod state;
pub mod verify;
mod walks;
pub mod watchers;

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::events::Reporter;
use kube::Client;
use tokio::sync::watch;

use crate::engine::{CacheSettings, Engine, EngineSettings};
pub use crate::metrics::WatchMetrics;
use crate::pull_secrets::SecretReader;
use crate::registry::Registry;
use crate::supervise;
pub use apart::{spawn_apart, start_apart};
pub use budget::Budgeted;
pub use events::{EventPace, EventSink};
pub use pass_budget::Rates;
pub use publish::Signals;
pub use state::{Inventory, InventoryView};
pub use verify::Verifier;
pub use watchers::Namespaces;

/// The Lease the replicas compete for.
pub const LEASE_NAME: &str = "ecr-preflight-watch";
/// The `reportingController` of the Events.
pub const REPORTER: &str = "ecr-preflight";

/// The controller's flags.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    pub recheck_interval: Duration,
    pub calls_per_second: f64,
    /// Requests a second to each registry other than ECR's.
    pub registry_requests_per_second: f64,
    pub namespaces: Namespaces,
    pub workload_metrics: bool,
    pub leader_election: bool,
    pub lease_namespace: String,
    pub lease_duration: Duration,
    /// This replica's name in the Lease and in its Events.
    pub identity: String,
    pub expiry: ExpirySettings,
    /// Ask registries other than ECR's with the pull secrets of the workloads that run
    /// each image (`--read-pull-secrets`).
    pub read_pull_secrets: bool,
}

/// What the controller does with lifecycle forecasts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpirySettings {
    /// Forecast when lifecycle policies act on the images in use.
    pub forecast: bool,
    /// An `ImageExpiring` Event once a rule will act on an image in use within this.
    pub warning: Duration,
    /// Cross-check each forecast with a lifecycle policy preview.
    pub preview: bool,
    /// Start restoring archived images that running workloads use.
    pub restore_archived: bool,
}

impl Default for ExpirySettings {
    fn default() -> Self {
        ExpirySettings {
            forecast: true,
            warning: DEFAULT_EXPIRY_WARNING,
            preview: false,
            restore_archived: false,
        }
    }
}

/// `--registry-requests-per-second`'s default: Docker Hub's anonymous pull limit is 100
/// manifest GETs in 6 hours, and HEADs are not counted, but every registry has a limit
/// somewhere; 5 a second verifies a 30-blob image in about 7 s.
pub const DEFAULT_REGISTRY_REQUESTS_PER_SECOND: f64 = 5.0;

/// `--expiry-warning`'s default: a week.
pub const DEFAULT_EXPIRY_WARNING: Duration = Duration::from_secs(7 * 86_400);

/// A running controller: what the admin listener shows.
#[derive(Clone)]
pub struct Controller {
    pub inventory: Arc<Inventory>,
    /// The cluster's nodes and NodePools: the platforms pods can land on.
    pub cluster: Arc<nodes::ClusterFacts>,
    pub metrics: Arc<WatchMetrics>,
    stop: Arc<watch::Sender<bool>>,
    /// True once the verifier has stopped and the Lease is given up.
    done: watch::Receiver<bool>,
}

/// The controller's Kubernetes client: kube's own retry of 429, 503 and 504 answers (up to
/// 15 times, a request at a time) is off, so that an API server outage reaches the
/// watchers, which retry with back-off and tell it once each (lost, back); the Lease and
/// the Events retry on their own.
pub fn controller_client(mut config: kube::Config) -> Result<Client, kube::Error> {
    config.default_retry = false;
    Client::try_from(config)
}

/// Tags, manifests (and images found intact) the controller's engine keeps at most.
pub const BACKGROUND_FACTS: u64 = 1_000;
/// Blobs found AVAILABLE the controller's engine keeps at most.
pub const BACKGROUND_BLOBS: u64 = 20_000;

/// The engine the controller verifies with: admission's registry behind the background
/// budget, and caches that never keep an answer for longer than half an interval, so each
/// pass asks ECR afresh (a deletion or a re-pushed tag is seen by the next pass).
///
/// Its caches carry facts from one step of a repository's verification to the next (the
/// manifests to the platform check, the resolved tags to the forecasts), never from one
/// pass to the next, so they are sized for a repository at a time ([`BACKGROUND_FACTS`],
/// [`BACKGROUND_BLOBS`]), not for the cluster: at 100,000 Pods admission's sizes held
/// 51 MiB after a pass (docs/performance.md 8b). A repository with more images in use than
/// that may have a manifest asked for twice in a pass, never a wrong answer.
pub fn background_engine(
    admission: &Engine,
    registry: Arc<dyn Registry>,
    settings: &EngineSettings,
    watch: &WatchSettings,
) -> Engine {
    let fresh = watch.recheck_interval / 2;
    let cache = CacheSettings {
        tag_ttl: fresh,
        manifest_ttl: fresh,
        blob_ttl: fresh,
        tag_capacity: settings.cache.tag_capacity.min(BACKGROUND_FACTS),
        manifest_capacity: settings.cache.manifest_capacity.min(BACKGROUND_FACTS),
        blob_capacity: settings.cache.blob_capacity.min(BACKGROUND_BLOBS),
    };
    let budgeted = Budgeted::new(registry, watch.calls_per_second)
        .with_registry_rate(watch.registry_requests_per_second);
    admission.background(
        Arc::new(budgeted),
        EngineSettings {
            cache,
            ..settings.clone()
        },
    )
}

impl Controller {
    /// Starts the watchers and the verifier (when this replica leads) in the background.
    /// Never waits for the API server: the watchers and the Lease retry with back-off
    /// while it cannot be reached.
    pub fn start(client: Client, engine: Arc<Engine>, settings: WatchSettings) -> Controller {
        let namespaces = Arc::new(settings.namespaces.clone());
        let inventory = Inventory::new(watchers::count(&namespaces));
        let metrics = Arc::new(WatchMetrics {
            task_restarts: engine.metrics().task_restarts.clone(),
            ..WatchMetrics::default()
        });
        watchers::spawn_all(&client, &namespaces, &inventory, &metrics.task_restarts);
        let cluster = nodes::ClusterFacts::new();
        nodes::spawn(&client, &cluster, &metrics.task_restarts);
        nodes::widen_with_cluster(&cluster, engine.clone(), &metrics.task_restarts);
        inventory.attach_cluster(cluster.clone());
        let events = EventSink {
            client: client.clone(),
            reporter: Reporter {
                controller: REPORTER.to_owned(),
                instance: Some(settings.identity.clone()),
            },
            pace: EventPace::default(),
        };
        let signals = Arc::new(Signals::new(
            metrics.clone(),
            settings.workload_metrics,
            settings.expiry.warning,
            Some(events),
        ));
        let verifier = Verifier::new(
            engine,
            inventory.clone(),
            settings.recheck_interval,
            signals.clone(),
            metrics.clone(),
            &settings.expiry,
        )
        .with_budget(Rates {
            ecr_calls: settings.calls_per_second,
            registry_requests: settings.registry_requests_per_second,
        })
        .with_pull_secrets(
            settings
                .read_pull_secrets
                .then(|| SecretReader::new(client.clone())),
        );
        let (stop, stopped) = watch::channel(false);
        let (released, done) = watch::channel(false);
        let leader = Arc::new(leader::Leader {
            client,
            settings,
            verifier,
            signals,
            metrics: metrics.clone(),
        });
        // A leader that panics is started afresh (a new Lease manager, the same identity);
        // one that ended because it was stopped is done.
        let restarts = metrics.task_restarts.clone();
        supervise::spawn_until("leader", restarts, stopped.clone(), move || {
            leader::lead(leader.clone(), stopped.clone(), released.clone())
        });
        Controller {
            inventory,
            cluster,
            metrics,
            stop: Arc::new(stop),
            done,
        }
    }

    /// Stops verifying and gives the Lease up (bounded), for a shutdown: the next leader
    /// takes over at once.
    pub async fn stop(&self) {
        self.stop.send_replace(true);
        let mut done = self.done.clone();
        let _ = tokio::time::timeout(leader::RELEASE_WAIT * 2, done.wait_for(|d| *d)).await;
    }
}

/// This replica's name: the pod's (`POD_NAME`, from the downward API), else the host's,
/// with a random suffix so that two processes on one host differ.
pub fn identity() -> String {
    let base = std::env::var("POD_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|n| !n.is_empty()))
        .unwrap_or_else(|| REPORTER.to_owned());
    let suffix: String = std::iter::repeat_with(fastrand::alphanumeric)
        .take(6)
        .collect::<String>()
        .to_lowercase();
    format!("{base}-{suffix}")
}
