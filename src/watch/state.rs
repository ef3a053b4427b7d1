//! What the controller knows, shared by the watchers (who fill the store), the verifier (who
//! records what ECR said) and the admin listener (who shows it): and the `/inventory` view
//! built from both.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::inventory::{ObjectKey, Projection, Store, Workload, WorkloadContainer};
use super::pass_budget::PassBudget;
use crate::decision::{problems_of, ContainerFinding, Problem};
use crate::expiry::{self, Expiry, ExpiryRule};
use crate::image::{ImageId, ImageTarget};
use crate::manifest::Platform;
use crate::platforms::{ClusterFacts, ConfigCache, Landing};
use crate::report::{ImageReport, Outcome};
use crate::workload::WorkloadKind;

/// What the last verification of one image found.
#[derive(Debug, Clone)]
pub struct Verified {
    pub report: ImageReport,
    /// The digest its tag resolved to.
    pub resolved: Option<Arc<str>>,
    pub at: SystemTime,
    /// The platforms it has, where known (an index's children, or a single-arch image's
    /// config blob's).
    pub platforms: Option<Arc<[Platform]>>,
}

/// One workload container with the last verification of its image.
#[derive(Debug, Clone)]
pub struct Row {
    pub workload: Arc<Workload>,
    pub container: WorkloadContainer,
    pub verified: Option<Verified>,
    /// When a lifecycle rule will first act on its image.
    pub expiry: Option<Expiry>,
    /// Why its image has no forecast, when its repository could not be read.
    pub unforecast: Option<Arc<str>>,
    /// The platforms the workload can land on, where the cluster's are known.
    pub landings: Option<Arc<Vec<Landing>>>,
}

impl Row {
    /// The platforms the workload can land on that its image has no manifest for.
    pub fn missing_platforms(&self) -> Vec<String> {
        self.verified
            .as_ref()
            .and_then(|v| v.report.gap.as_ref())
            .map(|gap| gap.missing.iter().map(|l| l.platform.to_string()).collect())
            .unwrap_or_default()
    }
}

/// The verification of an image as it applies to one workload: an image without a
/// platform the workload can land on is `no_platform` there, as at admission.
fn for_workload(
    verified: Option<&Verified>,
    landings: Option<&Arc<Vec<Landing>>>,
) -> Option<Verified> {
    let mut v = verified?.clone();
    if let Some(landings) = landings {
        v.report.land(landings, v.platforms.as_deref());
    }
    Some(v)
}

impl Row {
    /// The outcome, `unknown` until the image has been verified.
    pub fn outcome(&self) -> Outcome {
        self.verified
            .as_ref()
            .map_or(Outcome::Unknown, |v| v.report.outcome())
    }

    /// The problems of its image, in the webhook's words; `None` until it has been verified.
    pub fn problems(&self) -> Option<Vec<Problem>> {
        let verified = self.verified.as_ref()?;
        Some(problems_of(&ContainerFinding {
            container: &self.container.name,
            kind: self.container.kind,
            report: &verified.report,
        }))
    }

    /// What is wrong, one line per problem; `None` when nothing is.
    pub fn problem(&self) -> Option<String> {
        let Some(problems) = self.problems() else {
            return Some("not verified yet".to_owned());
        };
        let lines: Vec<String> = problems.into_iter().map(|p| p.line).collect();
        (!lines.is_empty()).then(|| lines.join("; "))
    }

    /// The next node would pull something other than what runs: the tag now resolves to
    /// a digest none of the workload's pods run.
    pub fn drift(&self) -> bool {
        let is_tag = matches!(
            ImageTarget::classify(&self.container.image),
            Ok(ImageTarget::Ecr {
                id: ImageId::Tag(_),
                ..
            })
        );
        let running = &self.container.running_digests;
        let resolved = self.verified.as_ref().and_then(|v| v.resolved.as_deref());
        is_tag && !running.is_empty() && resolved.is_some_and(|d| !running.contains(d))
    }
}

/// The store, the verifications, and whether every watcher has listed once.
pub struct Inventory {
    store: Mutex<Store>,
    verified: Mutex<HashMap<Box<str>, Verified>>,
    /// Images in use a lifecycle rule will act on.
    expiry: Mutex<HashMap<Box<str>, Expiry>>,
    /// Images in use without a forecast because their repository could not be read, and why.
    unforecast: Mutex<HashMap<Box<str>, Arc<str>>>,
    /// Whether the background budget holds a pass of every repository in use.
    budget: Mutex<Option<PassBudget>>,
    /// When the last full re-verification finished.
    full_pass: Mutex<Option<SystemTime>>,
    /// Watchers that have not finished their first list.
    unsynced: watch::Sender<usize>,
    /// The cluster's nodes and NodePools, when they are watched.
    cluster: std::sync::OnceLock<Arc<ClusterFacts>>,
    /// Where single-arch images' platforms are read, when the registry API is configured.
    configs: std::sync::OnceLock<Arc<ConfigCache>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inventory {
    /// An empty inventory that counts as synced once `watchers` have each listed once.
    pub fn new(watchers: usize) -> Arc<Self> {
        Arc::new(Inventory {
            store: Mutex::default(),
            verified: Mutex::default(),
            expiry: Mutex::default(),
            unforecast: Mutex::default(),
            budget: Mutex::default(),
            full_pass: Mutex::default(),
            unsynced: watch::Sender::new(watchers),
            cluster: std::sync::OnceLock::new(),
            configs: std::sync::OnceLock::new(),
        })
    }

    /// Single-arch images' platforms are read through `configs` from now on.
    pub fn attach_configs(&self, configs: Arc<ConfigCache>) {
        let _ = self.configs.set(configs);
    }

    pub fn configs(&self) -> Option<&ConfigCache> {
        self.configs.get().map(|c| &**c)
    }

    /// Where the workloads can land comes from `cluster` from now on.
    pub fn attach_cluster(&self, cluster: Arc<ClusterFacts>) {
        let _ = self.cluster.set(cluster);
    }

    pub fn apply(&self, key: ObjectKey, projection: Option<Projection>) {
        lock(&self.store).apply(key, projection);
    }

    /// A watcher's (re)list: replaces what it watches, and counts its first.
    pub fn relisted(
        &self,
        kind: WorkloadKind,
        namespace: Option<&str>,
        listed: Vec<(ObjectKey, Projection)>,
        first: bool,
    ) {
        lock(&self.store).replace(kind, namespace, listed);
        if first {
            self.unsynced.send_modify(|n| *n = n.saturating_sub(1));
        }
    }

    pub fn is_synced(&self) -> bool {
        *self.unsynced.borrow() == 0
    }

    /// Returns once every watcher has listed once.
    pub async fn wait_synced(&self) {
        let mut rx = self.unsynced.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    pub fn generation(&self) -> u64 {
        lock(&self.store).generation()
    }

    /// Objects held.
    pub fn objects(&self) -> usize {
        lock(&self.store).len()
    }

    pub fn workloads(&self) -> Vec<Workload> {
        lock(&self.store).workloads()
    }

    /// Every distinct image in use, sorted.
    pub fn images(&self) -> BTreeSet<Box<str>> {
        lock(&self.store).images()
    }

    pub fn record(&self, verified: impl IntoIterator<Item = Verified>) {
        let mut map = lock(&self.verified);
        for v in verified {
            map.insert(v.report.image.as_str().into(), v);
        }
    }

    /// The forecasts of images whose repositories were read (`None` forgets an earlier
    /// one), and why the others have none: an earlier forecast of theirs is kept.
    pub fn record_expiry(
        &self,
        forecasts: impl IntoIterator<Item = (String, Option<Expiry>)>,
        unread: impl IntoIterator<Item = (String, String)>,
    ) {
        let mut map = lock(&self.expiry);
        let mut unforecast = lock(&self.unforecast);
        for (image, expiry) in forecasts {
            unforecast.remove(image.as_str());
            match expiry {
                Some(e) => map.insert(image.into(), e),
                None => map.remove(image.as_str()),
            };
        }
        for (image, why) in unread {
            unforecast.insert(image.into(), why.into());
        }
    }

    pub fn is_verified(&self, image: &str) -> bool {
        lock(&self.verified).contains_key(image)
    }

    /// A full pass ended: forgets images no longer in use.
    pub fn full_pass_done(&self, at: SystemTime, in_use: &HashSet<Box<str>>) {
        lock(&self.verified).retain(|image, _| in_use.contains(image));
        lock(&self.expiry).retain(|image, _| in_use.contains(image));
        lock(&self.unforecast).retain(|image, _| in_use.contains(image));
        *lock(&self.full_pass) = Some(at);
    }

    pub fn last_full_pass(&self) -> Option<SystemTime> {
        *lock(&self.full_pass)
    }

    /// Every workload container with its image's last verification.
    pub fn rows(&self) -> Vec<Row> {
        let workloads = self.workloads();
        let verified = lock(&self.verified);
        let expiry = lock(&self.expiry);
        let unforecast = lock(&self.unforecast);
        let cluster = self.cluster.get();
        workloads
            .into_iter()
            .flat_map(|w| {
                let landings = cluster
                    .zip(w.placement.as_deref())
                    .and_then(|(c, p)| c.landable(p));
                let w = Arc::new(w);
                let rows: Vec<Row> = w
                    .containers
                    .iter()
                    .map(|c| Row {
                        workload: w.clone(),
                        container: c.clone(),
                        verified: for_workload(verified.get(&*c.image), landings.as_ref()),
                        expiry: expiry.get(&*c.image).cloned(),
                        unforecast: unforecast.get(&*c.image).cloned(),
                        landings: landings.clone(),
                    })
                    .collect();
                rows
            })
            .collect()
    }

    /// The `/inventory` document.
    pub fn view(&self) -> InventoryView {
        let mut view = InventoryView::of(self.last_full_pass(), &self.rows());
        view.budget = lock(&self.budget).clone();
        view
    }

    pub fn record_budget(&self, budget: Option<PassBudget>) {
        *lock(&self.budget) = budget;
    }
}

/// `GET /inventory` and `report -o json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InventoryView {
    /// When the last full re-verification finished (RFC 3339), `null` before the first.
    pub verified_at: Option<String>,
    /// Whether `--watch-ecr-calls-per-second` lets a pass verify every repository within
    /// `--recheck-interval` (the most loaded registry's figures); `null` before a pass.
    #[serde(default)]
    pub budget: Option<PassBudget>,
    pub workloads: Vec<WorkloadView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WorkloadView {
    pub namespace: String,
    pub kind: String,
    pub name: String,
    /// The platforms its pods can land on, with what is behind each ("linux/arm64 (3
    /// nodes, NodePool general)"); empty while the cluster's are unknown.
    #[serde(default)]
    pub platforms: Vec<String>,
    pub containers: Vec<ContainerView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContainerView {
    pub name: String,
    pub image: String,
    pub running_digests: Vec<String>,
    /// One of the engine's outcome names.
    pub outcome: String,
    pub problem: Option<String>,
    pub drift: bool,
    pub verified_at: Option<String>,
    /// When a lifecycle rule will first act on the image (RFC 3339), `null` when none will.
    pub expires_at: Option<String>,
    /// `expire` or `archive`.
    pub expiry_action: Option<String>,
    pub expiry_rule: Option<ExpiryRule>,
    /// Why there is no forecast, when the image's repository could not be read (an
    /// AWS-owned repository answers AccessDenied, say); `null` otherwise.
    #[serde(default)]
    pub no_forecast: Option<String>,
    /// Platforms the workload can land on that the image has no manifest for.
    #[serde(default)]
    pub missing_platforms: Vec<String>,
}

impl InventoryView {
    pub fn of(verified_at: Option<SystemTime>, rows: &[Row]) -> Self {
        let mut workloads: Vec<WorkloadView> = Vec::new();
        for row in rows {
            let key = &row.workload.key;
            let same = workloads.last().is_some_and(|w| {
                w.namespace == *key.namespace && w.kind == *key.kind && w.name == *key.name
            });
            if !same {
                let platforms = row
                    .landings
                    .iter()
                    .flat_map(|l| l.iter())
                    .map(|l| format!("{} ({})", l.platform, l.behind()))
                    .collect();
                workloads.push(WorkloadView {
                    namespace: key.namespace.to_string(),
                    kind: key.kind.to_string(),
                    name: key.name.to_string(),
                    platforms,
                    containers: Vec::new(),
                });
            }
            if let Some(w) = workloads.last_mut() {
                w.containers.push(ContainerView {
                    name: row.container.name.to_string(),
                    image: row.container.image.to_string(),
                    running_digests: row
                        .container
                        .running_digests
                        .iter()
                        .map(ToString::to_string)
                        .collect(),
                    outcome: row.outcome().as_str().to_owned(),
                    problem: row.problem(),
                    drift: row.drift(),
                    verified_at: row.verified.as_ref().map(|v| rfc3339(v.at)),
                    expires_at: row.expiry.as_ref().map(|e| expiry::rfc3339(e.forecast.at)),
                    expiry_action: row
                        .expiry
                        .as_ref()
                        .map(|e| e.forecast.action.as_str().to_owned()),
                    expiry_rule: row.expiry.as_ref().map(ExpiryRule::of),
                    no_forecast: row.unforecast.as_deref().map(str::to_owned),
                    missing_platforms: row.missing_platforms(),
                });
            }
        }
        InventoryView {
            verified_at: verified_at.map(rfc3339),
            budget: None,
            workloads,
        }
    }
}

/// `2026-11-30T19:33:33Z`, to the second.
pub fn rfc3339(at: SystemTime) -> String {
    let seconds = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    expiry::rfc3339(i64::try_from(seconds).unwrap_or(i64::MAX))
}
