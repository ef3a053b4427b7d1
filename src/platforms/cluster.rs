//! The cluster's nodes and NodePools as the watchers last saw them (src/watch/nodes.rs
//! fills this), and the platforms a placement can land on among them, remembered per
//! placement until the nodes or NodePools change: the pods of one workload share their
//! placement, so admission computes it once per workload and change.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use super::{landable, Cluster, Landing, NodeFacts, NodePlatform, Placement, PoolFacts};

/// Placements remembered at most; beyond it the memory starts afresh.
const REMEMBERED: usize = 4096;

#[derive(Default)]
struct Facts {
    nodes: BTreeMap<String, NodeFacts>,
    pools: BTreeMap<String, PoolFacts>,
    /// Placements answered since the last change (foldhash: looked up on the warm path).
    answers: foldhash::HashMap<Placement, Arc<Vec<Landing>>>,
    /// The nodes and NodePools as one value, made on first need after a change: a new
    /// placement is answered from it without holding the lock (the controller's walks ask
    /// from a low-priority thread; admission must never wait for one that holds it).
    snapshot: Option<Arc<Cluster>>,
}

impl Facts {
    /// The nodes and NodePools as one value, made once after each change.
    fn snapshot(&mut self) -> Arc<Cluster> {
        let Facts {
            nodes,
            pools,
            snapshot,
            ..
        } = self;
        snapshot
            .get_or_insert_with(|| {
                Arc::new(Cluster {
                    nodes: nodes.values().cloned().collect(),
                    pools: pools.values().cloned().collect(),
                })
            })
            .clone()
    }

    /// Every platform a node runs or a NodePool may start, in order, once each.
    fn platforms(&self) -> Vec<NodePlatform> {
        let nodes = self.nodes.values().filter_map(NodeFacts::platform);
        let pools = self.pools.values().flat_map(PoolFacts::platforms);
        let all: std::collections::BTreeSet<NodePlatform> = nodes.chain(pools).collect();
        all.into_iter().collect()
    }
}

pub struct ClusterFacts {
    facts: Mutex<Facts>,
    /// The Nodes have been listed once: before, the cluster's platforms are unknown.
    listed: watch::Sender<bool>,
    /// Every platform of the cluster (see [`ClusterFacts::platforms`]).
    platforms: watch::Sender<Vec<NodePlatform>>,
    /// Bumped on every change of the nodes or NodePools.
    generation: AtomicU64,
}

impl ClusterFacts {
    pub fn new() -> Arc<Self> {
        Arc::new(ClusterFacts {
            facts: Mutex::default(),
            listed: watch::Sender::new(false),
            platforms: watch::Sender::new(Vec::new()),
            generation: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Facts> {
        self.facts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The nodes and NodePools; `None` until the Nodes have been listed once.
    pub fn cluster(&self) -> Option<Cluster> {
        if !*self.listed.borrow() {
            return None;
        }
        Some((*self.lock().snapshot()).clone())
    }

    /// The platforms `placement` can land on; `None` until the Nodes have been listed.
    pub fn landable(&self, placement: &Placement) -> Option<Arc<Vec<Landing>>> {
        if !*self.listed.borrow() {
            return None;
        }
        let mut facts = self.lock();
        // A pod bound to a known node: that node, looked up by name and not remembered (one
        // answer a node would crowd out the placements shared by many pods).
        if let Some(name) = placement.node_name.as_deref() {
            if let Some(node) = facts.nodes.get(name) {
                return Some(Arc::new(super::bound_landing(node)));
            }
            let unbound = Placement {
                node_name: None,
                ..placement.clone()
            };
            drop(facts);
            return self.landable(&unbound);
        }
        if let Some(found) = facts.answers.get(placement) {
            return Some(found.clone());
        }
        let cluster = facts.snapshot();
        drop(facts);
        let found = Arc::new(landable(placement, &cluster));
        let mut facts = self.lock();
        // Remembered only if nothing changed meanwhile (a change drops the snapshot).
        if facts
            .snapshot
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, &cluster))
        {
            if facts.answers.len() >= REMEMBERED {
                facts.answers.clear();
            }
            facts.answers.insert(placement.clone(), found.clone());
        }
        Some(found)
    }

    /// Where the platforms come from, for the decision log: `nodes`, or
    /// `nodes+nodepools` when NodePools exist.
    pub fn source(&self) -> &'static str {
        if self.lock().pools.is_empty() {
            "nodes"
        } else {
            "nodes+nodepools"
        }
    }

    /// Every platform a node runs or a NodePool may start, updated as they change: the
    /// index children a pod in this cluster may need.
    pub fn platforms(&self) -> watch::Receiver<Vec<NodePlatform>> {
        self.platforms.subscribe()
    }

    /// Counts the changes of the nodes and NodePools (and the first list), so that readers
    /// can tell whether anything moved.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Drops the answers and publishes the platforms, after a change.
    fn changed(&self, mut facts: MutexGuard<'_, Facts>) {
        facts.answers.clear();
        facts.snapshot = None;
        self.generation.fetch_add(1, Ordering::SeqCst);
        let now = facts.platforms();
        drop(facts);
        self.platforms.send_if_modified(|p| {
            let modified = *p != now;
            *p = now;
            modified
        });
    }

    /// Returns once the Nodes have been listed.
    pub async fn wait_listed(&self) {
        let mut rx = self.listed.subscribe();
        let _ = rx.wait_for(|l| *l).await;
    }

    /// A (re)list of the Nodes.
    pub fn nodes_listed(&self, nodes: BTreeMap<String, NodeFacts>) {
        let mut facts = self.lock();
        facts.nodes = nodes;
        self.changed(facts);
        self.listed.send_replace(true);
    }

    /// A Node added, changed (`Some`) or deleted. Nodes change often (their status); the
    /// answers are dropped only when their labels or taints did.
    pub fn node(&self, name: &str, node: Option<NodeFacts>) {
        let mut facts = self.lock();
        match node {
            Some(n) if facts.nodes.get(name) == Some(&n) => return,
            Some(n) => facts.nodes.insert(name.to_owned(), n),
            None => facts.nodes.remove(name),
        };
        self.changed(facts);
    }

    /// A (re)list of the NodePools (none where Karpenter is not installed).
    pub fn pools_listed(&self, pools: BTreeMap<String, PoolFacts>) {
        let mut facts = self.lock();
        facts.pools = pools;
        self.changed(facts);
    }

    /// A NodePool added, changed (`Some`) or deleted.
    pub fn pool(&self, name: &str, pool: Option<PoolFacts>) {
        let mut facts = self.lock();
        match pool {
            Some(p) if facts.pools.get(name) == Some(&p) => return,
            Some(p) => facts.pools.insert(name.to_owned(), p),
            None => facts.pools.remove(name),
        };
        self.changed(facts);
    }
}
