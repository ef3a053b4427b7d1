//! One kube-runtime watcher per watched kind (and per namespace when the controller watches
//! only some), each feeding the inventory's store. The watcher lists, watches from the
//! list's resourceVersion with bookmarks, resumes a dropped watch, relists on 410 Gone and
//! backs off while the API server cannot be reached; this file only projects what it sees.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Pod, PodSpec, ReplicationController};
use k8s_openapi::NamespaceResourceScope;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use super::inventory::{self, ObjectKey, Projection};
use super::state::Inventory;
use crate::supervise::{self, TaskRestarts};
use crate::workload::WorkloadKind;

/// Which namespaces are watched.
#[derive(Debug, Clone, Default)]
pub struct Namespaces {
    /// Only these (empty: all).
    pub only: Vec<String>,
    pub excluded: BTreeSet<String>,
}

impl Namespaces {
    /// `None` for one cluster-wide watcher, else one per namespace.
    pub fn scopes(&self) -> Vec<Option<String>> {
        if self.only.is_empty() {
            vec![None]
        } else {
            self.only
                .iter()
                .filter(|ns| !self.excluded.contains(*ns))
                .map(|ns| Some(ns.clone()))
                .collect()
        }
    }

    fn admits(&self, namespace: &str) -> bool {
        !self.excluded.contains(namespace)
    }
}

/// A kind the controller watches: its projection.
pub trait Watched:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()>
    + Clone
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
    const KIND: WorkloadKind;
    /// `None` when the object pulls nothing (a finished Pod).
    fn project(&self) -> Option<Projection>;
}

fn template_spec(
    template: Option<&k8s_openapi::api::core::v1::PodTemplateSpec>,
) -> Option<&PodSpec> {
    template.and_then(|t| t.spec.as_ref())
}

macro_rules! watched_with_template {
    ($ty:ty, $kind:expr, |$o:ident| $spec:expr) => {
        impl Watched for $ty {
            const KIND: WorkloadKind = $kind;
            fn project(&self) -> Option<Projection> {
                let $o = self;
                Some(inventory::project_workload(
                    Self::KIND,
                    &self.metadata,
                    $spec,
                ))
            }
        }
    };
}

watched_with_template!(Deployment, WorkloadKind::Deployment, |o| o
    .spec
    .template
    .spec
    .as_ref());
watched_with_template!(StatefulSet, WorkloadKind::StatefulSet, |o| o
    .spec
    .template
    .spec
    .as_ref());
watched_with_template!(DaemonSet, WorkloadKind::DaemonSet, |o| o
    .spec
    .template
    .spec
    .as_ref());
watched_with_template!(ReplicaSet, WorkloadKind::ReplicaSet, |o| template_spec(
    o.spec.template.as_ref()
));
watched_with_template!(Job, WorkloadKind::Job, |o| o
    .spec
    .as_ref()
    .and_then(|s| s.template.spec.as_ref()));
watched_with_template!(CronJob, WorkloadKind::CronJob, |o| o
    .spec
    .job_template
    .spec
    .as_ref()
    .and_then(|j| j.template.spec.as_ref()));
watched_with_template!(
    ReplicationController,
    WorkloadKind::ReplicationController,
    |o| o
        .spec
        .as_ref()
        .and_then(|s| template_spec(s.template.as_ref()))
);

impl Watched for Pod {
    const KIND: WorkloadKind = WorkloadKind::Pod;
    fn project(&self) -> Option<Projection> {
        inventory::project_pod(self)
    }
}

/// How many watchers [`spawn_all`] starts for `namespaces`.
pub fn count(namespaces: &Namespaces) -> usize {
    KINDS * namespaces.scopes().len()
}

const KINDS: usize = 8;

/// Starts every watcher, supervised: they run until the process ends, each restarted
/// (and counted in `restarts`) should it panic or end.
pub fn spawn_all(
    client: &Client,
    namespaces: &Arc<Namespaces>,
    inventory: &Arc<Inventory>,
    restarts: &TaskRestarts,
) {
    let watching = Watching {
        client,
        namespaces,
        inventory,
        restarts,
    };
    for scope in namespaces.scopes() {
        watching.spawn::<Pod>(scope.clone());
        watching.spawn::<Deployment>(scope.clone());
        watching.spawn::<StatefulSet>(scope.clone());
        watching.spawn::<DaemonSet>(scope.clone());
        watching.spawn::<ReplicaSet>(scope.clone());
        watching.spawn::<Job>(scope.clone());
        watching.spawn::<CronJob>(scope.clone());
        watching.spawn::<ReplicationController>(scope);
    }
}

/// What every watcher is started with.
struct Watching<'a> {
    client: &'a Client,
    namespaces: &'a Arc<Namespaces>,
    inventory: &'a Arc<Inventory>,
    restarts: &'a TaskRestarts,
}

impl Watching<'_> {
    fn spawn<K: Watched>(&self, scope: Option<String>) {
        let api: Api<K> = match &scope {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        let (namespaces, inventory) = (self.namespaces.clone(), self.inventory.clone());
        supervise::spawn(K::KIND.as_str(), self.restarts.clone(), move || {
            watch_kind(
                api.clone(),
                scope.clone(),
                namespaces.clone(),
                inventory.clone(),
            )
        });
    }
}

/// The key and projection of `object`, or `None` when its namespace is excluded.
pub fn keyed<K: Watched>(
    object: &K,
    namespaces: &Namespaces,
) -> Option<(ObjectKey, Option<Projection>)> {
    let key = inventory::key_of(K::KIND, object.meta())?;
    namespaces
        .admits(&key.namespace)
        .then(|| (key, object.project()))
}

async fn watch_kind<K: Watched>(
    api: Api<K>,
    scope: Option<String>,
    namespaces: Arc<Namespaces>,
    inventory: Arc<Inventory>,
) {
    let fill = Workloads {
        scope,
        namespaces,
        inventory,
        first: true,
    };
    run(api, K::KIND.as_str(), |_| true, fill).await;
}

/// Where one watcher's objects go: what each becomes, and what a list, a change and a
/// deletion do with it.
pub(super) trait Fill<K> {
    type Item;
    /// `None`: the object is not kept (an excluded namespace, say).
    fn project(&self, object: &K) -> Option<Self::Item>;
    /// A (re)list: everything there is now.
    fn listed(&mut self, items: Vec<Self::Item>);
    fn applied(&self, item: Self::Item);
    fn deleted(&self, object: &K);
    /// An error the watcher retries by itself, with back-off: nothing more to do unless the
    /// error is an answer.
    fn failed(&self, _error: &watcher::Error) {}
}

/// One watcher, whatever it fills: kube-runtime lists, watches from the list's
/// resourceVersion, resumes a dropped watch, relists on 410 Gone and backs off while the
/// API server cannot be reached; whether it is reached is told once each way (`Reach`;
/// errors `lost` says so of count as a lost API server).
pub(super) async fn run<K, F>(
    api: Api<K>,
    resource: &'static str,
    lost: fn(&watcher::Error) -> bool,
    mut fill: F,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
    F: Fill<K>,
{
    let mut events = watcher::watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut listed: Vec<F::Item> = Vec::new();
    let mut reach = Reach::new(resource);
    while let Some(event) = next_event(&mut events, &mut reach, &api, lost).await {
        match event {
            Ok(Event::Init) => listed.clear(),
            Ok(Event::InitApply(o)) => listed.extend(fill.project(&o)),
            Ok(Event::InitDone) => {
                tracing::debug!(resource, objects = listed.len(), "listed");
                fill.listed(std::mem::take(&mut listed));
            }
            Ok(Event::Apply(o)) => {
                if let Some(item) = fill.project(&o) {
                    fill.applied(item);
                }
            }
            Ok(Event::Delete(o)) => fill.deleted(&o),
            Err(e) => fill.failed(&e),
        }
    }
}

/// The inventory, filled by the watcher of one kind in one scope.
struct Workloads {
    scope: Option<String>,
    namespaces: Arc<Namespaces>,
    inventory: Arc<Inventory>,
    /// No list has ended yet: the first counts towards the inventory's sync.
    first: bool,
}

impl<K: Watched> Fill<K> for Workloads {
    type Item = (ObjectKey, Option<Projection>);

    fn project(&self, object: &K) -> Option<Self::Item> {
        keyed(object, &self.namespaces)
    }

    fn listed(&mut self, items: Vec<Self::Item>) {
        let fresh = items
            .into_iter()
            .filter_map(|(key, p)| Some((key, p?)))
            .collect();
        self.inventory
            .relisted(K::KIND, self.scope.as_deref(), fresh, self.first);
        self.first = false;
    }

    fn applied(&self, (key, projection): Self::Item) {
        self.inventory.apply(key, projection);
    }

    fn deleted(&self, object: &K) {
        if let Some((key, _)) = keyed(object, &self.namespaces) {
            self.inventory.apply(key, None);
        }
    }
}

/// How often a watcher that lost the API server asks for one object, to tell its return
/// even when nothing changes (a resumed watch yields nothing until something does).
pub(super) const PROBE_EVERY: Duration = Duration::from_secs(5);

/// A watcher's next event, told to `reach` (errors for which `lost` says so count as a lost
/// API server); while it is lost, one object is listed every [`PROBE_EVERY`] to see it back.
pub(super) async fn next_event<K, S>(
    events: &mut S,
    reach: &mut Reach,
    api: &Api<K>,
    lost: fn(&watcher::Error) -> bool,
) -> Option<Result<Event<K>, watcher::Error>>
where
    K: Resource + Clone + DeserializeOwned + Debug,
    S: futures::Stream<Item = Result<Event<K>, watcher::Error>> + Unpin,
{
    loop {
        let event = if reach.is_lost() {
            tokio::select! {
                event = events.next() => event,
                () = tokio::time::sleep(PROBE_EVERY) => {
                    let one = kube::api::ListParams::default().limit(1);
                    if api.list_metadata(&one).await.is_ok() {
                        reach.saw(None::<&watcher::Error>);
                    }
                    continue;
                }
            }
        } else {
            events.next().await
        };
        let error = event
            .as_ref()
            .and_then(|e| e.as_ref().err())
            .filter(|e| lost(e));
        reach.saw(error);
        return event;
    }
}

/// Whether a watcher (or the Lease's keeper) reaches the API server, told as one story:
/// one line when it loses it (which resource, the error, that it retries), one when it is
/// back (after how long); the failed retries in between at debug only.
pub(super) struct Reach {
    resource: &'static str,
    lost: Option<(tokio::time::Instant, usize)>,
}

impl Reach {
    pub(super) fn new(resource: &'static str) -> Self {
        Reach {
            resource,
            lost: None,
        }
    }

    pub(super) fn is_lost(&self) -> bool {
        self.lost.is_some()
    }

    /// What the watcher's last event was: an error, or not.
    pub(super) fn saw(&mut self, error: Option<&impl std::fmt::Display>) {
        let resource = self.resource;
        match (error, &mut self.lost) {
            (Some(e), None) => {
                tracing::warn!(resource, error = %e, "lost the API server; retrying with back-off (told again when it is back)");
                self.lost = Some((tokio::time::Instant::now(), 1));
            }
            (Some(e), Some((_, failures))) => {
                *failures += 1;
                tracing::debug!(resource, error = %e, "the API server is still unreachable; retrying");
            }
            (None, Some((since, failures))) => {
                tracing::info!(resource, after = ?since.elapsed(), failed_attempts = *failures, "reaches the API server again");
                self.lost = None;
            }
            (None, None) => {}
        }
    }
}

/// Every object of every watched kind, listed once (page by page): what `report` reads.
pub async fn list_once(
    client: &Client,
    namespaces: &Namespaces,
) -> Result<Arc<Inventory>, kube::Error> {
    let inventory = Inventory::new(0);
    for scope in namespaces.scopes() {
        let ns = scope.as_deref();
        list::<Pod>(client, ns, namespaces, &inventory).await?;
        list::<Deployment>(client, ns, namespaces, &inventory).await?;
        list::<StatefulSet>(client, ns, namespaces, &inventory).await?;
        list::<DaemonSet>(client, ns, namespaces, &inventory).await?;
        list::<ReplicaSet>(client, ns, namespaces, &inventory).await?;
        list::<Job>(client, ns, namespaces, &inventory).await?;
        list::<CronJob>(client, ns, namespaces, &inventory).await?;
        list::<ReplicationController>(client, ns, namespaces, &inventory).await?;
    }
    Ok(inventory)
}

/// Objects a page holds at most when listing.
const PAGE: u32 = 500;

async fn list<K: Watched>(
    client: &Client,
    scope: Option<&str>,
    namespaces: &Namespaces,
    inventory: &Inventory,
) -> Result<(), kube::Error> {
    let api: Api<K> = match scope {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    list_pages(&api, |o| {
        if let Some((key, Some(p))) = keyed(o, namespaces) {
            inventory.apply(key, Some(p));
        }
    })
    .await
}

/// Lists every object of `api`, [`PAGE`] at a time, handing each to `each`.
pub(super) async fn list_pages<K>(api: &Api<K>, mut each: impl FnMut(&K)) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut params = kube::api::ListParams::default().limit(PAGE);
    loop {
        let page = api.list(&params).await?;
        page.items.iter().for_each(&mut each);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(()),
        }
    }
}
