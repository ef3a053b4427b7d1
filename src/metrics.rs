//! Prometheus metrics (OpenMetrics text). Every label value comes from a small fixed set:
//! never an image, a namespace or an object name, except in the controller's per-workload
//! series (`ecr_preflight_workload_images`), which `--workload-metrics=false` turns off.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::findings::Outcome;
use crate::registry::RegistryError;

/// The content type `/metrics` answers with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Admission latency buckets, 0.5 ms to 10 s.
const ADMISSION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// ECR call latency buckets, 5 ms to 10 s.
const ECR_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    /// A workload kind, or `other`.
    pub kind: &'static str,
    /// CREATE, UPDATE, DELETE, CONNECT, or `other`.
    pub operation: &'static str,
    /// allowed, denied, warned, error.
    pub decision: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum EcrOperation {
    BatchGetImage,
    BatchCheckLayerAvailability,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EcrLabels {
    /// admission (the webhook and the CLI) or watch (the controller's re-verification).
    pub source: &'static str,
    pub operation: EcrOperation,
    /// success, throttled, access_denied, not_found, timeout, transport, server_error, error.
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: EcrOperation,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// tag, manifest, blob, image.
    pub cache: &'static str,
    /// hit, miss.
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub version: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn ecr_histogram() -> Histogram {
    Histogram::new(ECR_BUCKETS)
}

/// What the engine records: ECR calls and cache lookups.
#[derive(Clone)]
pub struct EngineMetrics {
    /// The `source` label of this engine's ECR calls.
    source: &'static str,
    pub ecr_requests: Family<EcrLabels, Counter>,
    pub ecr_duration: HistogramFamily<OperationLabels>,
    pub cache_requests: Family<CacheLabels, Counter>,
    /// SDK clients (one a region and endpoint flavour) evicted to keep their number bounded.
    pub ecr_clients_evicted: Counter,
    /// Background tasks restarted, by task: the process's, shared by every engine.
    pub task_restarts: crate::supervise::TaskRestarts,
    /// The series of `cache_requests`, resolved once: a lookup by labels hashes them and
    /// takes a lock, several times per admission on the warm path.
    cache_counters: [[Counter; 2]; CACHES.len()],
}

/// The caches whose lookups are counted, in `cache_counters` order.
const CACHES: [&str; 4] = ["image", "tag", "manifest", "blob"];

impl Default for EngineMetrics {
    fn default() -> Self {
        let cache_requests = Family::<CacheLabels, Counter>::default();
        let cache_counters = CACHES.map(|cache| {
            ["hit", "miss"].map(|result| {
                cache_requests
                    .get_or_create(&CacheLabels { cache, result })
                    .clone()
            })
        });
        EngineMetrics {
            source: "admission",
            ecr_requests: Family::default(),
            ecr_duration: Family::new_with_constructor(ecr_histogram),
            ecr_clients_evicted: Counter::default(),
            task_restarts: crate::supervise::TaskRestarts::default(),
            cache_requests,
            cache_counters,
        }
    }
}

impl EngineMetrics {
    /// The metrics of a background engine: its ECR calls counted in the same series with
    /// `source="watch"`; its cache lookups kept apart, so that admission's hit ratio stays
    /// admission's.
    pub fn background(&self) -> Self {
        EngineMetrics {
            source: "watch",
            ecr_requests: self.ecr_requests.clone(),
            ecr_duration: self.ecr_duration.clone(),
            ecr_clients_evicted: self.ecr_clients_evicted.clone(),
            task_restarts: self.task_restarts.clone(),
            ..EngineMetrics::default()
        }
    }

    /// Records one ECR call: its outcome and how long it took.
    pub fn ecr_call<T>(
        &self,
        operation: EcrOperation,
        elapsed: Duration,
        result: &Result<T, RegistryError>,
    ) {
        let outcome = match result {
            Ok(_) => "success",
            Err(RegistryError::Throttled(_)) => "throttled",
            Err(RegistryError::AccessDenied { .. } | RegistryError::NeedsCredentials { .. }) => {
                "access_denied"
            }
            Err(RegistryError::RepositoryNotFound { .. }) => "not_found",
            Err(RegistryError::Timeout) => "timeout",
            Err(RegistryError::Transport(_)) => "transport",
            Err(RegistryError::Server(_)) => "server_error",
            Err(RegistryError::Service { .. }) => "error",
            Err(RegistryError::Credentials(_)) => "credentials",
        };
        self.ecr_requests
            .get_or_create(&EcrLabels {
                source: self.source,
                operation,
                outcome,
            })
            .inc();
        self.ecr_duration
            .get_or_create(&OperationLabels { operation })
            .observe(elapsed.as_secs_f64());
    }

    pub fn cache(&self, cache: &'static str, hit: bool) {
        let counter = CACHES
            .iter()
            .position(|c| *c == cache)
            .and_then(|i| self.cache_counters.get(i))
            .and_then(|pair| pair.get(usize::from(!hit)));
        match counter {
            Some(counter) => {
                counter.inc();
            }
            None => {
                let result = if hit { "hit" } else { "miss" };
                self.cache_requests
                    .get_or_create(&CacheLabels { cache, result })
                    .inc();
            }
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkloadLabels {
    pub namespace: String,
    pub kind: String,
    pub name: String,
    pub container: String,
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExpiryLabels {
    pub namespace: String,
    pub kind: String,
    pub name: String,
    pub container: String,
    /// `expire` or `archive`.
    pub action: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RepositoryLabels {
    pub repository: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// What the controller records.
#[derive(Default)]
pub struct WatchMetrics {
    /// 1 per workload container and its image's current outcome (leader only).
    pub workload_images: Family<WorkloadLabels, Gauge>,
    /// Distinct images in use, by outcome.
    pub images_in_use: Family<OutcomeLabels, Gauge>,
    pub last_full_pass: Gauge<f64, AtomicU64>,
    pub cycle_duration: Gauge<f64, AtomicU64>,
    pub leader: Gauge,
    pub objects: Gauge,
    pub events: Family<ReasonLabels, Counter>,
    /// Events dropped because the queue to the API server was full.
    pub events_dropped: Family<ReasonLabels, Counter>,
    /// When a lifecycle rule will act on a workload container's image (leader only).
    pub workload_expiry: Family<ExpiryLabels, Gauge>,
    /// Images on which a lifecycle policy preview and the forecast disagree.
    pub preview_disagreements: Family<RepositoryLabels, Counter>,
    /// Repositories in use whose lifecycle policy or images could not be read, a pass each.
    pub forecast_errors: Family<RepositoryLabels, Counter>,
    /// Calls a pass needs over what the budget allows it, for the most loaded registry
    /// (above 1: passes overrun `--recheck-interval`).
    pub pass_budget_ratio: Gauge<f64, AtomicU64>,
    /// The controller's background tasks restarted after a panic or an unexpected end (the
    /// engine's family, registered with it).
    pub task_restarts: crate::supervise::TaskRestarts,
}

impl WatchMetrics {
    /// Events posted (or, without an Event sink, that would have been), of both reasons.
    pub fn events_posted(&self) -> u64 {
        ["ImageUnavailable", "ImageAvailable"]
            .into_iter()
            .map(|reason| self.events.get_or_create(&ReasonLabels { reason }).get())
            .sum()
    }

    /// Events posted (or that would have been) with `reason`.
    pub fn events_of(&self, reason: &'static str) -> u64 {
        self.events.get_or_create(&ReasonLabels { reason }).get()
    }

    /// Events dropped because their queue was full, of every reason.
    pub fn events_dropped(&self) -> u64 {
        [
            "ImageUnavailable",
            "ImageAvailable",
            "ImageExpiring",
            "ImageRestoreStarted",
        ]
        .into_iter()
        .map(|reason| {
            self.events_dropped
                .get_or_create(&ReasonLabels { reason })
                .get()
        })
        .sum()
    }

    /// Images a lifecycle policy preview of `repository` and the forecast disagreed on, in
    /// all; `None` before its first cross-check.
    pub fn disagreements(&self, repository: &str) -> Option<u64> {
        let labels = RepositoryLabels {
            repository: repository.to_owned(),
        };
        self.preview_disagreements.get(&labels).map(|c| c.get())
    }

    /// Times `repository` could not be read for a forecast; `None` before the first.
    pub fn forecast_errors_of(&self, repository: &str) -> Option<u64> {
        let labels = RepositoryLabels {
            repository: repository.to_owned(),
        };
        self.forecast_errors.get(&labels).map(|c| c.get())
    }

    fn register(&self, r: &mut Registry) {
        r.register(
            "ecr_preflight_workload_images",
            "Workload containers by their image's outcome (1 each; the leader only)",
            self.workload_images.clone(),
        );
        r.register(
            "ecr_preflight_images_in_use",
            "Distinct images in use, by outcome of their last verification",
            self.images_in_use.clone(),
        );
        r.register(
            "ecr_preflight_watch_last_full_verification_timestamp_seconds",
            "When the last full re-verification of the images in use finished (Unix time; before the first, when verifying began)",
            self.last_full_pass.clone(),
        );
        r.register(
            "ecr_preflight_watch_cycle_duration_seconds",
            "How long the last full re-verification took",
            self.cycle_duration.clone(),
        );
        r.register(
            "ecr_preflight_watch_leader",
            "1 while this replica leads the re-verification",
            self.leader.clone(),
        );
        r.register(
            "ecr_preflight_watch_objects",
            "Objects held in the inventory",
            self.objects.clone(),
        );
        r.register(
            "ecr_preflight_watch_events",
            "Kubernetes Events posted, by reason",
            self.events.clone(),
        );
        r.register(
            "ecr_preflight_watch_events_dropped",
            "Kubernetes Events dropped because the queue to the API server was full, by reason",
            self.events_dropped.clone(),
        );
        r.register(
            "ecr_preflight_workload_image_expiry_timestamp_seconds",
            "When a lifecycle rule will expire or archive a workload container's image (Unix time; absent when none will; the leader only)",
            self.workload_expiry.clone(),
        );
        r.register(
            "ecr_preflight_watch_pass_budget_ratio",
            "Calls a full re-verification needs over what --watch-ecr-calls-per-second allows it within --recheck-interval, for the most loaded registry (above 1: passes overrun the interval)",
            self.pass_budget_ratio.clone(),
        );
        r.register(
            "ecr_preflight_lifecycle_forecast_errors",
            "Times a repository in use could not be read for a lifecycle forecast (GetLifecyclePolicy or DescribeImages refused or failed), by repository",
            self.forecast_errors.clone(),
        );
        r.register(
            "ecr_preflight_lifecycle_preview_disagreements",
            "Images a lifecycle policy preview and the forecast disagree on (--lifecycle-preview)",
            self.preview_disagreements.clone(),
        );
    }
}

/// What the webhook records per admission.
pub struct Metrics {
    pub admission_requests: Family<AdmissionLabels, Counter>,
    pub admission_duration: Histogram,
    pub images_checked: Family<ResultLabels, Counter>,
    /// The series of `images_checked` by outcome, resolved once (see `cache_counters`).
    outcome_counters: [Counter; Outcome::ALL.len()],
    pub missing_blobs: Counter,
    /// `/mutate`'s images, by what became of them (`pinned`, `by_digest`, `unverified`,
    /// `skipped`).
    pub images_pinned: Family<ResultLabels, Counter>,
    registry: Registry,
}

impl Metrics {
    /// Registers every metric, the engine's and the controller's included.
    pub fn new(engine: &EngineMetrics, watch: Option<&WatchMetrics>) -> Arc<Self> {
        let mut registry = Registry::default();
        let admission_requests = Family::<AdmissionLabels, Counter>::default();
        let admission_duration = Histogram::new(ADMISSION_BUCKETS);
        let images_checked = Family::<ResultLabels, Counter>::default();
        let missing_blobs = Counter::default();
        let build_info = Family::<VersionLabels, Gauge>::default();
        build_info
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        let r = &mut registry;
        r.register(
            "ecr_preflight_admission_requests",
            "Admission reviews answered",
            admission_requests.clone(),
        );
        r.register(
            "ecr_preflight_admission_duration_seconds",
            "Time to answer an admission review",
            admission_duration.clone(),
        );
        r.register(
            "ecr_preflight_images_checked",
            "Images checked, by outcome",
            images_checked.clone(),
        );
        r.register(
            "ecr_preflight_missing_blobs",
            "Blobs found missing in ECR",
            missing_blobs.clone(),
        );
        r.register(
            "ecr_preflight_ecr_requests",
            "ECR API calls, by source, operation and outcome",
            engine.ecr_requests.clone(),
        );
        r.register(
            "ecr_preflight_ecr_request_duration_seconds",
            "Duration of ECR API calls",
            engine.ecr_duration.clone(),
        );
        r.register(
            "ecr_preflight_task_restarts",
            "Background tasks (watchers, Node and NodePool watchers, platform widening, the leader, the Event poster, the certificate reloader) restarted after a panic or an unexpected end, by task",
            engine.task_restarts.clone(),
        );
        r.register(
            "ecr_preflight_ecr_clients_evicted",
            "AWS SDK clients (one a region and endpoint flavour) evicted, least recently used first, to keep at most 16",
            engine.ecr_clients_evicted.clone(),
        );
        r.register(
            "ecr_preflight_cache_requests",
            "Cache lookups, by cache and result",
            engine.cache_requests.clone(),
        );
        r.register("ecr_preflight_build_info", "Build information", build_info);
        let images_pinned = Family::<ResultLabels, Counter>::default();
        r.register(
            "ecr_preflight_images_pinned",
            "Pod images /mutate looked at (--pin-digests), by what became of them: pinned to the digest checked, by_digest (written with one), unverified (not found intact: left as written), skipped (not checked)",
            images_pinned.clone(),
        );
        if let Some(watch) = watch {
            watch.register(r);
        }
        Arc::new(Metrics {
            admission_requests,
            admission_duration,
            outcome_counters: Outcome::ALL.map(|outcome| {
                images_checked
                    .get_or_create(&ResultLabels {
                        result: outcome.as_str(),
                    })
                    .clone()
            }),
            images_checked,
            missing_blobs,
            images_pinned,
            registry,
        })
    }

    pub fn image_checked(&self, outcome: Outcome, missing: usize) {
        if let Some(counter) = self.outcome_counters.get(outcome as usize) {
            counter.inc();
        }
        self.missing_blobs.inc_by(missing as u64);
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

/// The `operation` label: the admission operations, or `other`.
pub fn operation_label(operation: &str) -> &'static str {
    match operation {
        "CREATE" => "CREATE",
        "UPDATE" => "UPDATE",
        "DELETE" => "DELETE",
        "CONNECT" => "CONNECT",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    /// Every metric registered, each with one series, encoded: metric name → label keys.
    fn exported() -> BTreeMap<String, BTreeSet<String>> {
        let engine = EngineMetrics::default();
        let watch = WatchMetrics::default();
        let metrics = Metrics::new(&engine, Some(&watch));
        metrics
            .admission_requests
            .get_or_create(&AdmissionLabels {
                kind: "Pod",
                operation: "CREATE",
                decision: "allowed",
            })
            .inc();
        metrics.admission_duration.observe(0.01);
        metrics.image_checked(Outcome::Ok, 1);
        metrics
            .images_pinned
            .get_or_create(&ResultLabels { result: "pinned" })
            .inc();
        let operation = EcrOperation::BatchGetImage;
        engine
            .ecr_requests
            .get_or_create(&EcrLabels {
                source: "admission",
                operation,
                outcome: "success",
            })
            .inc();
        engine
            .ecr_duration
            .get_or_create(&OperationLabels { operation })
            .observe(0.01);
        let (namespace, kind, name, container) = ("ns", "Deployment", "web", "app");
        watch
            .workload_images
            .get_or_create(&WorkloadLabels {
                namespace: namespace.into(),
                kind: kind.into(),
                name: name.into(),
                container: container.into(),
                outcome: "ok",
            })
            .set(1);
        watch
            .workload_expiry
            .get_or_create(&ExpiryLabels {
                namespace: namespace.into(),
                kind: kind.into(),
                name: name.into(),
                container: container.into(),
                action: "expire",
            })
            .set(1);
        watch
            .images_in_use
            .get_or_create(&OutcomeLabels { outcome: "ok" })
            .set(1);
        watch
            .events
            .get_or_create(&ReasonLabels {
                reason: "ImageUnavailable",
            })
            .inc();
        watch
            .events_dropped
            .get_or_create(&ReasonLabels {
                reason: "ImageUnavailable",
            })
            .inc();
        let repository = RepositoryLabels {
            repository: "r".into(),
        };
        watch.preview_disagreements.get_or_create(&repository).inc();
        watch.forecast_errors.get_or_create(&repository).inc();
        engine
            .task_restarts
            .get_or_create(&crate::supervise::TaskLabels { task: "Pod" })
            .inc();
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for line in metrics.encode().lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap_or_default();
                out.entry(name.to_owned()).or_default();
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (name, labels) = match line.split_once('{') {
                Some((name, rest)) => (name, rest.split('}').next().unwrap_or_default()),
                None => (line.split(' ').next().unwrap_or_default(), ""),
            };
            let keys = labels
                .split(',')
                .filter_map(|kv| kv.split_once('=').map(|(k, _)| k.to_owned()));
            let keys: Vec<String> = keys.collect();
            out.entry(name.to_owned()).or_default().extend(keys.clone());
            // A histogram's or counter's family, by the name its TYPE line gives.
            for suffix in ["_bucket", "_sum", "_count", "_total", "_created"] {
                if let Some(base) = name.strip_suffix(suffix) {
                    let keys = keys.iter().filter(|k| *k != "le").cloned();
                    out.entry(base.to_owned()).or_default().extend(keys);
                }
            }
        }
        out
    }

    /// Every `ecr_preflight_…{labels}` a document, the chart's alerts and dashboard, or the
    /// README names: its name is exported and every label it matches on is one of the
    /// metric's. An alert written from the docs must match something.
    #[test]
    fn documents_name_only_metrics_and_labels_the_product_exports() {
        let exported = exported();
        let root = env!("CARGO_MANIFEST_DIR");
        let mut files: Vec<String> = ["README.md", "charts/ecr-preflight/README.md"]
            .iter()
            .map(|f| format!("{root}/{f}"))
            .collect();
        for dir in [
            "docs",
            "charts/ecr-preflight/templates",
            "charts/ecr-preflight/files",
        ] {
            for entry in std::fs::read_dir(format!("{root}/{dir}")).expect("dir") {
                files.push(entry.expect("entry").path().display().to_string());
            }
        }
        let mut checked = 0;
        for file in files {
            let text = std::fs::read_to_string(&file).expect("read");
            let mut rest = text.as_str();
            while let Some(at) = rest.find("ecr_preflight_") {
                rest = &rest[at..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                let name = &rest[..end];
                rest = &rest[end..];
                // A prefix in prose ("ecr_preflight_*"), or the env variables' prefix.
                if name.ends_with('_') || name.chars().any(|c| c.is_ascii_uppercase()) {
                    continue;
                }
                let keys = exported.get(name).unwrap_or_else(|| {
                    panic!("{file} names {name}, which the product does not export")
                });
                if let Some(matchers) = rest.strip_prefix('{') {
                    let matchers = matchers.split('}').next().unwrap_or_default();
                    for key in matchers
                        .split(',')
                        .filter_map(|m| m.split(['=', '!']).next())
                        .map(|k| k.trim().trim_start_matches('\\').trim_matches('"'))
                        .filter(|k| !k.is_empty() && !k.starts_with('{'))
                    {
                        assert!(
                            keys.contains(key),
                            "{file} matches {name} on label {key:?}; it has {keys:?}"
                        );
                    }
                }
                checked += 1;
            }
        }
        assert!(checked > 20, "only {checked} references found");
    }
}
