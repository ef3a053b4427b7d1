//! The images in use: a compact projection of every watched object (identity, controller
//! owner, containers and the digests its pods run), and the workloads a user edits, derived
//! from it by following controller owners (Pod -> ReplicaSet -> Deployment, Pod -> Job ->
//! CronJob). Pure: the watchers and `report` feed it, the verifier reads it.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::platforms::Placement;
use crate::workload::{spec, ContainerKind, WorkloadKind};

/// Names one object: kind, namespace, name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub namespace: Arc<str>,
    pub kind: Arc<str>,
    pub name: Arc<str>,
}

/// What an Event needs to name an object besides its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub api_version: Arc<str>,
    pub uid: Arc<str>,
}

/// An object's controller: where its images are attributed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub key: ObjectKey,
    pub identity: Identity,
}

/// One container of an object and, for a Pod, the digest it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerUse {
    pub name: Arc<str>,
    pub kind: ContainerKind,
    pub image: Arc<str>,
    /// From the Pod's status `imageID`, when it names a digest.
    pub running: Option<Arc<str>>,
}

/// What is kept of one watched object: never the object itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Projection {
    pub identity: Identity,
    pub owner: Option<Owner>,
    /// The template's containers for an object nobody controls, the containers of a Pod;
    /// empty for a controlled ReplicaSet or Job, whose owner's template is what pulls next.
    pub containers: Vec<ContainerUse>,
    /// Where its pods can land (node selector, required affinity, tolerations), with the
    /// containers.
    pub placement: Option<Arc<Placement>>,
    /// The names of the Secrets its containers are pulled with (`imagePullSecrets`), with
    /// the containers.
    pub pull_secrets: Arc<[Arc<str>]>,
}

/// A workload a user edits and the images it uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub key: ObjectKey,
    pub identity: Identity,
    pub containers: Vec<WorkloadContainer>,
    /// Its template's placement, else its pods'.
    pub placement: Option<Arc<Placement>>,
}

/// One (container, image) of a workload: a rollout in progress has two images under one
/// container name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadContainer {
    pub name: Box<str>,
    pub kind: ContainerKind,
    pub image: Box<str>,
    pub running_digests: BTreeSet<Box<str>>,
}

/// The key of an object of `kind`, when it has a namespace and a name.
pub fn key_of(kind: WorkloadKind, meta: &ObjectMeta) -> Option<ObjectKey> {
    Some(ObjectKey {
        namespace: meta.namespace.as_deref()?.into(),
        kind: kind.as_str().into(),
        name: meta.name.as_deref()?.into(),
    })
}

/// The projection of a workload object (not a Pod) with its pod template's spec.
pub fn project_workload(
    kind: WorkloadKind,
    meta: &ObjectMeta,
    spec: Option<&PodSpec>,
) -> Projection {
    let owner = controller_of(meta);
    let (containers, placement, pull_secrets) = match (&owner, spec) {
        (None, Some(spec)) => (
            spec_containers(spec, &[]),
            Some(Arc::new(spec::placement(&spec))),
            pull_secrets(spec),
        ),
        _ => (Vec::new(), None, Arc::default()),
    };
    Projection {
        identity: identity_of(kind, meta),
        owner,
        containers,
        placement,
        pull_secrets,
    }
}

/// The projection of a Pod, or `None` once it has finished (Succeeded or Failed: it pulls
/// nothing again; its owner's template stays in the inventory).
pub fn project_pod(pod: &Pod) -> Option<Projection> {
    let status = pod.status.as_ref();
    if matches!(
        status.and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    ) {
        return None;
    }
    let statuses: Vec<&ContainerStatus> = status
        .into_iter()
        .flat_map(|s| {
            [
                &s.container_statuses,
                &s.init_container_statuses,
                &s.ephemeral_container_statuses,
            ]
        })
        .flat_map(|list| list.iter().flatten())
        .collect();
    let containers = pod
        .spec
        .as_ref()
        .map(|spec| spec_containers(spec, &statuses))
        .unwrap_or_default();
    Some(Projection {
        identity: identity_of(WorkloadKind::Pod, &pod.metadata),
        owner: controller_of(&pod.metadata),
        containers,
        placement: pod.spec.as_ref().map(|s| Arc::new(spec::placement(&s))),
        pull_secrets: pod.spec.as_ref().map(pull_secrets).unwrap_or_default(),
    })
}

fn pull_secrets(spec: &PodSpec) -> Arc<[Arc<str>]> {
    spec::PodSpecSource::pull_secrets(&spec)
        .iter()
        .map(|name| Arc::from(&**name))
        .collect()
}

fn identity_of(kind: WorkloadKind, meta: &ObjectMeta) -> Identity {
    let api_version = match kind {
        WorkloadKind::Pod | WorkloadKind::ReplicationController => "v1",
        WorkloadKind::Job | WorkloadKind::CronJob => "batch/v1",
        _ => "apps/v1",
    };
    Identity {
        api_version: api_version.into(),
        uid: meta.uid.as_deref().unwrap_or_default().into(),
    }
}

/// The controller owner; a mirror Pod's Node is not a workload, so it stays a bare Pod.
fn controller_of(meta: &ObjectMeta) -> Option<Owner> {
    let namespace = meta.namespace.as_deref()?;
    let owner: &OwnerReference = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true) && o.kind != "Node")?;
    Some(Owner {
        key: ObjectKey {
            namespace: namespace.into(),
            kind: owner.kind.as_str().into(),
            name: owner.name.as_str().into(),
        },
        identity: Identity {
            api_version: owner.api_version.as_str().into(),
            uid: owner.uid.as_str().into(),
        },
    })
}

/// Every container with an image (as the webhook reads them), with the digest its status
/// reports when given.
fn spec_containers(spec: &PodSpec, statuses: &[&ContainerStatus]) -> Vec<ContainerUse> {
    let running = |name: &str| {
        statuses
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| running_digest(&s.image_id))
    };
    spec::images(&spec)
        .into_iter()
        .map(|c| ContainerUse {
            running: running(&c.name).map(Into::into),
            name: c.name.as_ref().into(),
            kind: c.kind,
            image: c.image.as_ref().into(),
        })
        .collect()
}

/// The digest in a status `imageID`: `repo@sha256:…`, `docker-pullable://repo@sha256:…`.
/// A bare `sha256:…` (Docker's image ID) is the config's digest, not the manifest's: ignored.
pub fn running_digest(image_id: &str) -> Option<&str> {
    let (_, digest) = image_id.rsplit_once('@')?;
    digest.contains(':').then_some(digest)
}

/// Which pull secrets some images are pulled with: (namespace, Secret names) of each user.
pub type PullSecretUses = BTreeSet<(Arc<str>, Arc<[Arc<str>]>)>;

/// A persistent map: a clone is a snapshot, taken in constant time and shared until
/// either side changes, so readers walk it without holding the writers' lock.
pub type Map<K, V> = rpds::HashTrieMapSync<K, V>;

/// Every watched object's projection, by key. Cloning it is a snapshot (constant time).
#[derive(Default, Clone)]
pub struct Store {
    objects: Map<ObjectKey, Projection>,
    /// How many containers of the objects use each image: the images in use without a walk.
    image_uses: Map<Arc<str>, usize>,
    /// Bumped on every change, so readers can tell whether anything moved.
    generation: u64,
}

/// How many owners deep attribution follows (Pod -> ReplicaSet -> Deployment is two); a
/// cycle of owner references ends there too.
const MAX_OWNER_DEPTH: usize = 8;

impl Store {
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn len(&self) -> usize {
        self.objects.size()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    pub fn apply(&mut self, key: ObjectKey, projection: Option<Projection>) {
        let changed = match projection {
            Some(p) if self.objects.get(&key) == Some(&p) => false,
            Some(p) => {
                self.forget(&key);
                self.insert(key, p);
                true
            }
            None => self.forget(&key),
        };
        if changed {
            self.generation += 1;
        }
    }

    /// Replaces every object of `kind` (in `namespace`, or everywhere) with a fresh list, as
    /// a watcher's relist delivers it.
    pub fn replace(
        &mut self,
        kind: WorkloadKind,
        namespace: Option<&str>,
        listed: Vec<(ObjectKey, Projection)>,
    ) {
        let kind_name = kind.as_str();
        let gone: Vec<ObjectKey> = self
            .objects
            .keys()
            .filter(|k| &*k.kind == kind_name && namespace.is_none_or(|ns| &*k.namespace == ns))
            .cloned()
            .collect();
        for key in &gone {
            self.forget(key);
        }
        for (key, projection) in listed {
            self.forget(&key);
            self.insert(key, projection);
        }
        self.generation += 1;
    }

    /// The workloads a user edits, each with its containers, sorted by key.
    pub fn workloads(&self) -> Vec<Workload> {
        // Grouped by hash and sorted once at the end: a sorted map compared three strings per
        // step for each of 100,000 objects (the larger part of the walk, measured).
        let mut by_key: foldhash::HashMap<ObjectKey, Workload> = foldhash::HashMap::default();
        for (key, projection) in &self.objects {
            if projection.containers.is_empty() {
                continue;
            }
            let (key, identity) = match &projection.owner {
                None => (key.clone(), projection.identity.clone()),
                Some(owner) => self.top_level(owner),
            };
            let workload = by_key.entry(key.clone()).or_insert_with(|| {
                // The template's placement (what the next pod gets), else this object's.
                let own = self.objects.get(&key).and_then(|p| p.placement.clone());
                Workload {
                    placement: own.or_else(|| projection.placement.clone()),
                    key,
                    identity,
                    containers: Vec::new(),
                }
            });
            for c in &projection.containers {
                add_container(&mut workload.containers, c);
            }
        }
        let mut workloads: Vec<Workload> = by_key.into_values().collect();
        workloads.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        for w in &mut workloads {
            w.containers
                .sort_by(|a, b| (&a.name, &a.image).cmp(&(&b.name, &b.image)));
        }
        workloads
    }

    /// Every distinct image in use: the images of the workloads (every container of the
    /// store belongs to some workload), from the counts kept as objects change.
    pub fn images(&self) -> BTreeSet<Box<str>> {
        self.image_uses.keys().map(|i| i.as_ref().into()).collect()
    }

    /// The pull secrets (namespace, names) of the objects whose containers use any of
    /// `images`: a walk over every object.
    pub fn pull_secrets_of(&self, images: &HashSet<&str>) -> PullSecretUses {
        let mut uses = PullSecretUses::new();
        for (key, projection) in self.objects.iter() {
            if projection.pull_secrets.is_empty()
                || !projection
                    .containers
                    .iter()
                    .any(|c| images.contains(&*c.image))
            {
                continue;
            }
            uses.insert((key.namespace.clone(), projection.pull_secrets.clone()));
        }
        uses
    }

    fn insert(&mut self, key: ObjectKey, projection: Projection) {
        for c in &projection.containers {
            let uses = self.image_uses.get(&*c.image).copied().unwrap_or(0);
            self.image_uses.insert_mut(c.image.clone(), uses + 1);
        }
        self.objects.insert_mut(key, projection);
    }

    /// Removes the object at `key`; whether there was one.
    fn forget(&mut self, key: &ObjectKey) -> bool {
        let Some(old) = self.objects.get(key) else {
            return false;
        };
        let images: Vec<Arc<str>> = old.containers.iter().map(|c| c.image.clone()).collect();
        for image in images {
            match self.image_uses.get(&image).copied() {
                Some(uses) if uses > 1 => self.image_uses.insert_mut(image, uses - 1),
                _ => {
                    self.image_uses.remove_mut(&image);
                }
            }
        }
        self.objects.remove_mut(key)
    }

    /// The object at the top of `owner`'s chain of controllers, as far as the store knows
    /// it (an owner not watched, or not yet seen, is where the chain stops).
    fn top_level(&self, owner: &Owner) -> (ObjectKey, Identity) {
        let mut at = owner;
        for _ in 0..MAX_OWNER_DEPTH {
            match self.objects.get(&at.key).and_then(|p| p.owner.as_ref()) {
                Some(next) => at = next,
                None => break,
            }
        }
        (at.key.clone(), at.identity.clone())
    }
}

fn add_container(into: &mut Vec<WorkloadContainer>, c: &ContainerUse) {
    let at = into
        .iter()
        .position(|w| *w.name == *c.name && *w.image == *c.image);
    let entry = match at {
        Some(i) => into.get_mut(i),
        None => {
            into.push(WorkloadContainer {
                name: c.name.as_ref().into(),
                kind: c.kind,
                image: c.image.as_ref().into(),
                running_digests: BTreeSet::new(),
            });
            into.last_mut()
        }
    };
    if let (Some(entry), Some(d)) = (entry, &c.running) {
        entry.running_digests.insert(d.as_ref().into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(ns: &str, name: &str, owner: Option<(&str, &str)>) -> ObjectMeta {
        serde_json::from_value(json!({
            "namespace": ns, "name": name, "uid": format!("uid-{name}"),
            "ownerReferences": owner.map(|(kind, n)| vec![json!({
                "apiVersion": "apps/v1", "kind": kind, "name": n,
                "uid": format!("uid-{n}"), "controller": true})]),
        }))
        .expect("meta")
    }

    fn spec(image: &str) -> PodSpec {
        serde_json::from_value(json!({"containers": [{"name": "app", "image": image}],
            "initContainers": [{"name": "init", "image": "init:1"}]}))
        .expect("spec")
    }

    fn pod(
        name: &str,
        owner: Option<(&str, &str)>,
        image: &str,
        image_id: &str,
        phase: &str,
    ) -> Pod {
        Pod {
            metadata: meta("ns", name, owner),
            spec: Some(spec(image)),
            status: Some(
                serde_json::from_value(json!({"phase": phase, "containerStatuses": [{
                    "name": "app", "image": image, "imageID": image_id, "ready": true,
                    "restartCount": 0}]}))
                .expect("status"),
            ),
        }
    }

    fn put(store: &mut Store, kind: WorkloadKind, m: &ObjectMeta, p: Projection) {
        store.apply(key_of(kind, m).expect("key"), Some(p));
    }

    fn put_pod(store: &mut Store, p: &Pod) {
        if let Some(projection) = project_pod(p) {
            put(store, WorkloadKind::Pod, &p.metadata, projection);
        }
    }

    #[test]
    fn pods_are_attributed_to_the_workload_a_user_edits() {
        let mut store = Store::default();
        let d = meta("ns", "web", None);
        put(
            &mut store,
            WorkloadKind::Deployment,
            &d,
            project_workload(WorkloadKind::Deployment, &d, Some(&spec("repo:v2"))),
        );
        let rs = meta("ns", "web-1", Some(("Deployment", "web")));
        // A controlled ReplicaSet's template is not what pulls next: its owner's is.
        put(
            &mut store,
            WorkloadKind::ReplicaSet,
            &rs,
            project_workload(WorkloadKind::ReplicaSet, &rs, Some(&spec("repo:old"))),
        );
        put_pod(
            &mut store,
            &pod(
                "web-1-a",
                Some(("ReplicaSet", "web-1")),
                "repo:v2",
                "repo@sha256:aa",
                "Running",
            ),
        );
        put_pod(
            &mut store,
            &pod(
                "web-1-b",
                Some(("ReplicaSet", "web-1")),
                "repo:v2",
                "docker-pullable://repo@sha256:bb",
                "Running",
            ),
        );
        let cj = meta("ns", "nightly", None);
        put(
            &mut store,
            WorkloadKind::CronJob,
            &cj,
            project_workload(WorkloadKind::CronJob, &cj, Some(&spec("job:1"))),
        );
        let job = meta("ns", "nightly-1", Some(("CronJob", "nightly")));
        put(
            &mut store,
            WorkloadKind::Job,
            &job,
            project_workload(WorkloadKind::Job, &job, Some(&spec("job:1"))),
        );
        put_pod(
            &mut store,
            &pod(
                "nightly-1-x",
                Some(("Job", "nightly-1")),
                "job:1",
                "job@sha256:cc",
                "Running",
            ),
        );
        put_pod(
            &mut store,
            &pod("bare", None, "bare:1", "sha256:configdigest", "Running"),
        );
        // Finished pods pull nothing again.
        put_pod(
            &mut store,
            &pod("done", None, "done:1", "done@sha256:dd", "Succeeded"),
        );

        let workloads = store.workloads();
        let names: Vec<(&str, &str)> = workloads
            .iter()
            .map(|w| (&*w.key.kind, &*w.key.name))
            .collect();
        assert_eq!(
            names,
            [
                ("CronJob", "nightly"),
                ("Deployment", "web"),
                ("Pod", "bare")
            ]
        );
        let web = &workloads[1];
        assert_eq!(web.identity.uid.as_ref(), "uid-web");
        let app: Vec<_> = web
            .containers
            .iter()
            .map(|c| {
                (
                    &*c.name,
                    &*c.image,
                    c.running_digests.iter().map(|d| &**d).collect::<Vec<_>>(),
                )
            })
            .collect();
        assert_eq!(
            app,
            [
                ("app", "repo:v2", vec!["sha256:aa", "sha256:bb"]),
                ("init", "init:1", vec![])
            ]
        );
        let bare = &workloads[2].containers;
        // Docker's bare image ID is the config's digest, not a manifest's.
        assert!(
            bare.iter().all(|c| c.running_digests.is_empty()),
            "{bare:?}"
        );
    }

    #[test]
    fn an_owner_not_watched_is_the_workload_and_scaled_to_zero_stays() {
        let mut store = Store::default();
        let rs = meta("ns", "canary-7", Some(("Rollout", "canary")));
        put(
            &mut store,
            WorkloadKind::ReplicaSet,
            &rs,
            project_workload(WorkloadKind::ReplicaSet, &rs, Some(&spec("x:1"))),
        );
        put_pod(
            &mut store,
            &pod(
                "canary-7-a",
                Some(("ReplicaSet", "canary-7")),
                "x:1",
                "x@sha256:11",
                "Running",
            ),
        );
        // No pods at all: the template is what the next scale-up pulls.
        let idle = meta("ns", "idle", None);
        put(
            &mut store,
            WorkloadKind::StatefulSet,
            &idle,
            project_workload(WorkloadKind::StatefulSet, &idle, Some(&spec("idle:3"))),
        );
        let w = store.workloads();
        let keys: Vec<(&str, &str)> = w.iter().map(|w| (&*w.key.kind, &*w.key.name)).collect();
        assert_eq!(keys, [("Rollout", "canary"), ("StatefulSet", "idle")]);
        assert_eq!(w[0].identity.uid.as_ref(), "uid-canary");
        assert_eq!(&*w[1].containers[0].image, "idle:3");
        assert_eq!(&*w[1].containers[1].image, "init:1");
    }

    #[test]
    fn relisting_a_kind_replaces_only_that_kind_in_that_namespace() {
        let mut store = Store::default();
        for ns in ["a", "b"] {
            let d = meta(ns, "d", None);
            put(
                &mut store,
                WorkloadKind::Deployment,
                &d,
                project_workload(WorkloadKind::Deployment, &d, Some(&spec("d:1"))),
            );
            put_pod(
                &mut store,
                &Pod {
                    metadata: meta(ns, "p", None),
                    ..pod("p", None, "p:1", "", "Running")
                },
            );
        }
        let before = store.generation();
        store.replace(WorkloadKind::Deployment, Some("a"), Vec::new());
        assert!(store.generation() > before);
        let keys: Vec<String> = store
            .workloads()
            .iter()
            .map(|w| format!("{}/{}/{}", w.key.namespace, w.key.kind, w.key.name))
            .collect();
        assert_eq!(keys, ["a/Pod/p", "b/Deployment/d", "b/Pod/p"]);
    }

    #[test]
    fn running_digests_come_from_repo_digests_only() {
        assert_eq!(
            running_digest("123.dkr.ecr.us-east-1.amazonaws.com/r@sha256:ab"),
            Some("sha256:ab")
        );
        assert_eq!(
            running_digest("docker-pullable://r@sha256:ab"),
            Some("sha256:ab")
        );
        assert_eq!(running_digest("docker://sha256:ab"), None);
        assert_eq!(running_digest(""), None);
        assert_eq!(running_digest("r@"), None);
    }

    #[test]
    fn the_images_in_use_follow_every_change_without_a_walk() {
        let mut store = Store::default();
        let images =
            |s: &Store| -> Vec<String> { s.images().iter().map(|i| i.to_string()).collect() };
        put_pod(&mut store, &pod("a", None, "shared:1", "", "Running"));
        put_pod(&mut store, &pod("b", None, "shared:1", "", "Running"));
        assert_eq!(images(&store), ["init:1", "shared:1"]);
        // A changed pod moves its count; a deleted one drops its own.
        put_pod(&mut store, &pod("a", None, "moved:2", "", "Running"));
        assert_eq!(images(&store), ["init:1", "moved:2", "shared:1"]);
        store.apply(
            key_of(WorkloadKind::Pod, &meta("ns", "b", None)).expect("key"),
            None,
        );
        assert_eq!(images(&store), ["init:1", "moved:2"]);
        // A relist replaces what the kind held.
        let c = pod("c", None, "listed:3", "", "Running");
        let listed = vec![(
            key_of(WorkloadKind::Pod, &c.metadata).expect("key"),
            project_pod(&c).expect("projection"),
        )];
        store.replace(WorkloadKind::Pod, None, listed);
        assert_eq!(images(&store), ["init:1", "listed:3"]);
        store.replace(WorkloadKind::Pod, None, Vec::new());
        assert!(store.images().is_empty());
    }

    #[test]
    fn an_owner_cycle_ends() {
        let mut store = Store::default();
        let a = meta("ns", "a", Some(("ReplicaSet", "b")));
        let b = meta("ns", "b", Some(("ReplicaSet", "a")));
        put(
            &mut store,
            WorkloadKind::ReplicaSet,
            &a,
            project_workload(WorkloadKind::ReplicaSet, &a, None),
        );
        put(
            &mut store,
            WorkloadKind::ReplicaSet,
            &b,
            project_workload(WorkloadKind::ReplicaSet, &b, None),
        );
        put_pod(
            &mut store,
            &pod("p", Some(("ReplicaSet", "a")), "p:1", "", "Running"),
        );
        assert_eq!(store.workloads().len(), 1);
    }
}
