//! What the controller knows, shared by the watchers (who fill the store), the verifier (who
//! records what ECR said) and the admin listener (who shows it): and the `/inventory` view
//! built from both.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::intern::Interner;
use super::inventory::{
    Map, ObjectKey, Projection, PullSecretUses, Store, Workload, WorkloadContainer,
};
use super::pass_budget::PassBudget;
use super::walks;
use crate::decision::{problems_of, ContainerFinding, Problem};
use crate::findings::{ImageReport, Outcome};
use crate::image::Reference;
use crate::lifecycle::expiry::{self, Expiry, ExpiryRule};
use crate::manifest::Platform;
use crate::platforms::{ClusterFacts, ConfigCache, Landing};
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
        // A tag of any registry: the resolved digest is only known for checked ones.
        let is_tag = Reference::parse(&self.container.image).is_ok_and(|r| r.digest.is_none());
        let running = &self.container.running_digests;
        let resolved = self.verified.as_ref().and_then(|v| v.resolved.as_deref());
        is_tag && !running.is_empty() && resolved.is_some_and(|d| !running.contains(d))
    }
}

/// What the verifier found, by image: persistent maps, so that a snapshot is a clone.
#[derive(Clone, Default)]
struct Findings {
    verified: Map<Box<str>, Verified>,
    /// Images in use a lifecycle rule will act on.
    expiry: Map<Box<str>, Expiry>,
    /// Images in use without a forecast because their repository could not be read, and why.
    unforecast: Map<Box<str>, Arc<str>>,
    /// Whether the background budget holds a pass of every repository in use.
    budget: Option<PassBudget>,
    /// When the last full re-verification finished.
    full_pass: Option<SystemTime>,
    /// Bumped on every change.
    generation: u64,
}

/// Which state a snapshot shows: the store's, the findings' and the cluster's generations.
type Version = (u64, u64, u64);

/// The store, the verifications, and whether every watcher has listed once.
///
/// Readers never walk under a lock: they take a [`Snapshot`] (constant time, the locks held
/// for a clone of two persistent maps' roots) and walk that, on the walks' thread when it is
/// cluster-sized, while the watchers and the verifier go on writing.
pub struct Inventory {
    store: Mutex<Store>,
    /// Shares the projections' repeated values before they are stored.
    interner: Mutex<Interner>,
    findings: Mutex<Findings>,
    /// The last `/inventory` document served and the state it shows; one is built at a time.
    published: tokio::sync::Mutex<Option<(Version, Bytes)>>,
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

/// The images of `map` not in `in_use`.
fn out_of_use<V>(map: &Map<Box<str>, V>, in_use: &HashSet<Box<str>>) -> Vec<Box<str>> {
    map.keys()
        .filter(|i| !in_use.contains(*i))
        .cloned()
        .collect()
}

impl Inventory {
    /// An empty inventory that counts as synced once `watchers` have each listed once.
    pub fn new(watchers: usize) -> Arc<Self> {
        Arc::new(Inventory {
            store: Mutex::default(),
            interner: Mutex::default(),
            findings: Mutex::default(),
            published: tokio::sync::Mutex::default(),
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

    pub fn apply(&self, mut key: ObjectKey, mut projection: Option<Projection>) {
        lock(&self.interner).intern(&mut key, projection.as_mut());
        lock(&self.store).apply(key, projection);
    }

    /// A watcher's (re)list: replaces what it watches, and counts its first.
    pub fn relisted(
        &self,
        kind: WorkloadKind,
        namespace: Option<&str>,
        mut listed: Vec<(ObjectKey, Projection)>,
        first: bool,
    ) {
        {
            let mut interner = lock(&self.interner);
            for (key, projection) in &mut listed {
                interner.intern(key, Some(projection));
            }
        }
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

    /// Everything known now, to walk without a lock.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            store: lock(&self.store).clone(),
            findings: lock(&self.findings).clone(),
            cluster: self.cluster.get().cloned(),
        }
    }

    /// Every distinct image in use, sorted.
    pub fn images(&self) -> BTreeSet<Box<str>> {
        self.snapshot().store.images()
    }

    /// The pull secrets of the objects that use any of `images` (a walk: call it on the
    /// walks' thread).
    pub fn pull_secrets_of(&self, images: &[String]) -> PullSecretUses {
        let images: HashSet<&str> = images.iter().map(String::as_str).collect();
        self.snapshot().store.pull_secrets_of(&images)
    }

    /// Every workload container with its image's last verification.
    pub fn rows(&self) -> Vec<Row> {
        self.snapshot().rows()
    }

    /// The `/inventory` document.
    pub fn view(&self) -> InventoryView {
        self.snapshot().view()
    }

    /// The `/inventory` document, serialised: the last one while nothing changed since,
    /// else a new one built from a snapshot on the walks' thread (never on the worker that
    /// answers admission). Requests that arrive while one is built wait for it and share it.
    pub async fn published_view(&self) -> Bytes {
        let mut published = self.published.lock().await;
        let snapshot = self.snapshot();
        let version = snapshot.version();
        if let Some((v, doc)) = published.as_ref().filter(|(v, _)| *v == version) {
            tracing::trace!(?v, "serving the published inventory");
            return doc.clone();
        }
        let built = walks::run(move || serde_json::to_vec(&snapshot.view())).await;
        match built {
            Some(Ok(doc)) => {
                let doc = Bytes::from(doc);
                *published = Some((version, doc.clone()));
                doc
            }
            Some(Err(e)) => {
                tracing::error!(error = %e, "cannot serialise the inventory document");
                Bytes::new()
            }
            None => {
                tracing::error!("building the inventory document failed");
                Bytes::new()
            }
        }
    }

    fn findings(&self) -> MutexGuard<'_, Findings> {
        let mut f = lock(&self.findings);
        f.generation += 1;
        f
    }

    pub fn record(&self, verified: impl IntoIterator<Item = Verified>) {
        let mut f = self.findings();
        for v in verified {
            f.verified.insert_mut(v.report.image.as_str().into(), v);
        }
    }

    /// The forecasts of images whose repositories were read (`None` forgets an earlier
    /// one), and why the others have none: an earlier forecast of theirs is kept.
    pub fn record_expiry(
        &self,
        forecasts: impl IntoIterator<Item = (String, Option<Expiry>)>,
        unread: impl IntoIterator<Item = (String, String)>,
    ) {
        let mut f = self.findings();
        for (image, expiry) in forecasts {
            f.unforecast.remove_mut(image.as_str());
            match expiry {
                Some(e) => f.expiry.insert_mut(image.into(), e),
                None => {
                    f.expiry.remove_mut(image.as_str());
                }
            };
        }
        for (image, why) in unread {
            f.unforecast.insert_mut(image.into(), why.into());
        }
    }

    pub fn is_verified(&self, image: &str) -> bool {
        lock(&self.findings).verified.contains_key(image)
    }

    /// A full pass ended: forgets images no longer in use. The keys to forget are found on
    /// a snapshot; the lock is held only to remove them.
    pub fn full_pass_done(&self, at: SystemTime, in_use: &HashSet<Box<str>>) {
        let seen = lock(&self.findings).clone();
        let verified = out_of_use(&seen.verified, in_use);
        let expiry = out_of_use(&seen.expiry, in_use);
        let unforecast = out_of_use(&seen.unforecast, in_use);
        let mut f = self.findings();
        for image in &verified {
            f.verified.remove_mut(image);
        }
        for image in &expiry {
            f.expiry.remove_mut(image);
        }
        for image in &unforecast {
            f.unforecast.remove_mut(image);
        }
        f.full_pass = Some(at);
    }

    pub fn last_full_pass(&self) -> Option<SystemTime> {
        lock(&self.findings).full_pass
    }

    pub fn record_budget(&self, budget: Option<PassBudget>) {
        self.findings().budget = budget;
    }
}

/// The inventory at one moment: the store, the findings and the cluster's facts.
pub struct Snapshot {
    store: Store,
    findings: Findings,
    cluster: Option<Arc<ClusterFacts>>,
}

impl Snapshot {
    fn version(&self) -> Version {
        (
            self.store.generation(),
            self.findings.generation,
            self.cluster.as_ref().map_or(0, |c| c.generation()),
        )
    }

    /// Every distinct image in use, sorted.
    pub fn images(&self) -> BTreeSet<Box<str>> {
        self.store.images()
    }

    /// Every workload container with its image's last verification.
    pub fn rows(&self) -> Vec<Row> {
        let f = &self.findings;
        let cluster = self.cluster.as_ref();
        self.store
            .workloads()
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
                        verified: for_workload(f.verified.get(&*c.image), landings.as_ref()),
                        expiry: f.expiry.get(&*c.image).cloned(),
                        unforecast: f.unforecast.get(&*c.image).cloned(),
                        landings: landings.clone(),
                    })
                    .collect();
                rows
            })
            .collect()
    }

    /// The `/inventory` document.
    pub fn view(&self) -> InventoryView {
        let mut view = InventoryView::of(self.findings.full_pass, &self.rows());
        view.budget = self.findings.budget.clone();
        view
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::inventory::{key_of, project_workload};

    fn deploy(inventory: &Inventory, name: &str, image: &str) {
        let meta = serde_json::from_value(
            serde_json::json!({"namespace": "ns", "name": name, "uid": name}),
        )
        .expect("meta");
        let spec = serde_json::from_value(
            serde_json::json!({"containers": [{"name": "app", "image": image}]}),
        )
        .expect("spec");
        inventory.apply(
            key_of(WorkloadKind::Deployment, &meta).expect("key"),
            Some(project_workload(
                WorkloadKind::Deployment,
                &meta,
                Some(&spec),
            )),
        );
    }

    #[test]
    fn a_snapshot_keeps_its_moment_while_the_inventory_changes() {
        let inventory = Inventory::new(0);
        deploy(&inventory, "a", "r:1");
        let before = inventory.snapshot();
        deploy(&inventory, "b", "r:2");
        inventory.full_pass_done(SystemTime::UNIX_EPOCH, &HashSet::new());
        assert_eq!(before.rows().len(), 1);
        assert_eq!(before.view().verified_at, None);
        assert_eq!(inventory.rows().len(), 2);
        assert!(inventory.view().verified_at.is_some());
    }

    #[tokio::test]
    async fn the_published_document_is_built_once_per_change() {
        let inventory = Inventory::new(0);
        deploy(&inventory, "a", "r:1");
        let first = inventory.published_view().await;
        let again = inventory.published_view().await;
        assert_eq!(
            first.as_ptr(),
            again.as_ptr(),
            "the same document, not rebuilt"
        );
        deploy(&inventory, "b", "r:2");
        let changed = inventory.published_view().await;
        assert_ne!(first.as_ptr(), changed.as_ptr());
        let view: InventoryView = serde_json::from_slice(&changed).expect("json");
        assert_eq!(view.workloads.len(), 2);
        // A finding is a change too.
        inventory.record_budget(None);
        let recorded = inventory.published_view().await;
        assert_ne!(changed.as_ptr(), recorded.as_ptr());
        assert_eq!(recorded, changed, "same content, built anew");
    }
}
