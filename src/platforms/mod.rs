//! Where a pod can land: the platforms (os/architecture) of the cluster's nodes and of the
//! nodes its Karpenter NodePools may start, narrowed to those the pod's `nodeSelector`,
//! required node affinity and tolerations allow. Pure: the pod's placement and the
//! cluster's compact facts in, the platforms with the nodes and NodePools behind each out.
//!
//! The rules are the scheduler's (and Karpenter's for NodePools):
//! - `nodeSelector`: every pair must be a label of the node;
//! - required node affinity: the terms are ORed, the expressions of a term ANDed; an empty
//!   term matches nothing; `In`, `NotIn`, `Exists`, `DoesNotExist`, `Gt`, `Lt`;
//! - a node's `NoSchedule` and `NoExecute` taints must each be tolerated
//!   (`PreferNoSchedule` does not keep a pod away);
//! - the deprecated `beta.kubernetes.io/os` and `beta.kubernetes.io/arch` keys read the same
//!   as `kubernetes.io/os` and `kubernetes.io/arch`.
//!
//! Not considered: preferred affinity, pod (anti-)affinity, topology spread, resources,
//! scheduling gates. They narrow where a pod lands but never to a platform the rules above
//! exclude, so the set is never too small.

mod cluster;
mod configs;
mod placement;

use crate::manifest::Platform;
use std::collections::BTreeMap;
use std::fmt;

pub use cluster::ClusterFacts;
pub use configs::ConfigCache;
pub use placement::{Operator, Placement, Requirement, Taint, TaintEffect, Term, Toleration};

pub const OS: &str = "kubernetes.io/os";
pub const ARCH: &str = "kubernetes.io/arch";
const BETA_OS: &str = "beta.kubernetes.io/os";
const BETA_ARCH: &str = "beta.kubernetes.io/arch";

/// What the webhook knows of where pods land and what images run on: the cluster's nodes
/// and NodePools, and the config blobs of single-arch images (when the registry API is
/// reachable).
pub struct PlatformSources {
    pub cluster: std::sync::Arc<ClusterFacts>,
    pub configs: Option<std::sync::Arc<ConfigCache>>,
}

/// An `os/architecture` a node runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodePlatform {
    pub os: String,
    pub architecture: String,
}

impl NodePlatform {
    /// Whether an image built for `image` runs here: the same os and architecture, any
    /// variant (nodes do not tell theirs).
    pub fn runs(&self, image: &Platform) -> bool {
        self.os == image.os && self.architecture == image.architecture
    }

    /// The same os and architecture as an index child to look for (any variant).
    pub fn wanted(&self) -> Platform {
        Platform {
            os: self.os.clone(),
            architecture: self.architecture.clone(),
            variant: None,
        }
    }
}

impl fmt::Display for NodePlatform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)
    }
}

/// A node as the check needs it: its labels and taints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
}

impl NodeFacts {
    /// Its platform, from its os and arch labels (the GA ones, else the beta ones).
    pub fn platform(&self) -> Option<NodePlatform> {
        let label = |ga: &str, beta: &str| {
            self.labels
                .get(ga)
                .or_else(|| self.labels.get(beta))
                .filter(|v| !v.is_empty())
                .cloned()
        };
        Some(NodePlatform {
            os: label(OS, BETA_OS)?,
            architecture: label(ARCH, BETA_ARCH)?,
        })
    }
}

/// A Karpenter NodePool's template: the nodes it may start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolFacts {
    pub name: String,
    /// `spec.template.metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `spec.template.spec.requirements`.
    pub requirements: Vec<Requirement>,
    /// `spec.template.spec.taints` (startup taints are removed once a node is ready).
    pub taints: Vec<Taint>,
}

/// Operating systems and architectures a NodePool without a requirement on them may start:
/// Karpenter on AWS starts Linux nodes of either architecture (Graviton or x86) unless told.
const POOL_OSES: [&str; 1] = ["linux"];
const POOL_ARCHES: [&str; 2] = ["amd64", "arm64"];
/// Labels Karpenter sets on the nodes it starts from what it chose, though the template
/// does not name them: a selector on them can be met.
const POOL_SET_PREFIXES: [&str; 6] = [
    "topology.kubernetes.io/",
    "node.kubernetes.io/instance-type",
    "karpenter.sh/",
    "karpenter.k8s.aws/",
    "kubernetes.io/hostname",
    "topology.k8s.aws/",
];

impl PoolFacts {
    /// The platforms it may start: its template's os and arch labels, else its
    /// requirements on them, else Linux on either architecture.
    pub fn platforms(&self) -> Vec<NodePlatform> {
        let oses = self.allowed(OS, &POOL_OSES, &["linux", "windows"]);
        let arches = self.allowed(ARCH, &POOL_ARCHES, &POOL_ARCHES);
        oses.iter()
            .flat_map(|os| {
                arches.iter().map(move |arch| NodePlatform {
                    os: os.clone(),
                    architecture: arch.clone(),
                })
            })
            .collect()
    }

    fn allowed(&self, key: &str, default: &[&str], known: &[&str]) -> Vec<String> {
        if let Some(v) = self.labels.get(key) {
            return vec![v.clone()];
        }
        let mut values: Vec<String> = default.iter().map(|s| (*s).to_owned()).collect();
        for r in self.requirements.iter().filter(|r| r.key == key) {
            match r.operator {
                Operator::In => values = r.values.clone(),
                Operator::NotIn => {
                    values = known
                        .iter()
                        .map(|s| (*s).to_owned())
                        .filter(|v| !r.values.contains(v))
                        .collect()
                }
                _ => {}
            }
        }
        values
    }

    /// A node of this pool on `platform`, as far as its labels are known: the template's
    /// labels and the platform's.
    fn node_on(&self, platform: &NodePlatform) -> BTreeMap<String, String> {
        let mut labels = self.labels.clone();
        labels.insert(OS.to_owned(), platform.os.clone());
        labels.insert(ARCH.to_owned(), platform.architecture.clone());
        labels
    }

    /// Whether a node of this pool can carry a label `key` that satisfies `wanted`, when
    /// the template does not set `key` itself.
    fn can_satisfy(&self, key: &str, wanted: &Requirement) -> bool {
        let own: Vec<&Requirement> = self.requirements.iter().filter(|r| r.key == key).collect();
        if own.is_empty() {
            let settable = POOL_SET_PREFIXES.iter().any(|p| key.starts_with(p));
            return settable || matches!(wanted.operator, Operator::NotIn | Operator::DoesNotExist);
        }
        own.iter().all(|r| r.compatible(wanted))
    }
}

/// What the cluster has and may start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cluster {
    pub nodes: Vec<NodeFacts>,
    pub pools: Vec<PoolFacts>,
}

/// One platform a pod can land on, and what is behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Landing {
    pub platform: NodePlatform,
    /// Existing nodes of that platform the pod can land on.
    pub nodes: usize,
    /// NodePools that may start such a node for it.
    pub pools: Vec<String>,
    /// The node the pod is bound to (`spec.nodeName`), when it is: its only landing.
    pub bound: Option<String>,
}

impl Landing {
    /// The one landing of a pod bound to `node`.
    fn bound_to(node: &NodeFacts, platform: NodePlatform) -> Self {
        Landing {
            platform,
            nodes: 1,
            pools: Vec::new(),
            bound: Some(node.name.clone()),
        }
    }

    /// "3 nodes, NodePool general", or "node ip-10-0-1-5" for a pod bound to it.
    pub fn behind(&self) -> String {
        if let Some(node) = &self.bound {
            return format!("node {node}");
        }
        let mut parts = Vec::new();
        if self.nodes > 0 {
            let s = if self.nodes == 1 { "" } else { "s" };
            parts.push(format!("{} node{s}", self.nodes));
        }
        if !self.pools.is_empty() {
            let s = if self.pools.len() == 1 { "" } else { "s" };
            parts.push(format!("NodePool{s} {}", self.pools.join(", ")));
        }
        parts.join(", ")
    }
}

/// The platforms `placement` can land on in `cluster`, in platform order. A pod bound to a
/// node (`spec.nodeName`) runs there and nowhere else: that node's platform, when the node
/// is known; the cluster's otherwise.
pub fn landable(placement: &Placement, cluster: &Cluster) -> Vec<Landing> {
    if let Some(bound) = placement.node_name.as_deref() {
        if let Some(node) = cluster.nodes.iter().find(|n| n.name == bound) {
            return bound_landing(node);
        }
    }
    let mut found: BTreeMap<NodePlatform, Landing> = BTreeMap::new();
    fn entry(found: &mut BTreeMap<NodePlatform, Landing>, platform: NodePlatform) -> &mut Landing {
        found.entry(platform.clone()).or_insert(Landing {
            platform,
            nodes: 0,
            pools: Vec::new(),
            bound: None,
        })
    }
    for node in &cluster.nodes {
        let Some(platform) = node.platform() else {
            continue;
        };
        if placement.tolerates(&node.taints) && placement.selects(&node.name, &node.labels, None) {
            entry(&mut found, platform).nodes += 1;
        }
    }
    for pool in &cluster.pools {
        if !placement.tolerates(&pool.taints) {
            continue;
        }
        for platform in pool.platforms() {
            let labels = pool.node_on(&platform);
            if placement.selects("", &labels, Some(pool)) {
                let landing = entry(&mut found, platform);
                if !landing.pools.contains(&pool.name) {
                    landing.pools.push(pool.name.clone());
                }
            }
        }
    }
    found.into_values().collect()
}

/// The landing of a pod bound to `node`: its platform (none when its labels do not say).
fn bound_landing(node: &NodeFacts) -> Vec<Landing> {
    node.platform()
        .map(|p| Landing::bound_to(node, p))
        .into_iter()
        .collect()
}

/// A label key as the scheduler reads it: the deprecated os and arch keys as the GA ones.
fn canonical(key: &str) -> &str {
    match key {
        BETA_OS => OS,
        BETA_ARCH => ARCH,
        other => other,
    }
}
