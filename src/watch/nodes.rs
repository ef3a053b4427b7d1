//! The cluster's platforms: Nodes and, where the CRD is installed, Karpenter NodePools
//! (`karpenter.sh/v1`), each projected to the labels and taints the placement check reads
//! (src/platforms). Two kube-runtime watchers fill one store; a cluster without Karpenter
//! answers 404 for NodePools, which counts as none (and is asked again with back-off, so a
//! CRD installed later is picked up).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::watcher;
use kube::{Api, Client};
use serde_json::Value;

use super::watchers::{list_pages, run, Fill};
use crate::engine::Engine;
use crate::manifest::Platform;
pub use crate::platforms::ClusterFacts;
use crate::platforms::{NodeFacts, NodePlatform, PoolFacts, Requirement, Taint, TaintEffect};
use crate::supervise::{self, TaskRestarts};

/// The NodePool resource of Karpenter v1.
pub fn node_pool_resource() -> ApiResource {
    ApiResource {
        group: "karpenter.sh".into(),
        version: "v1".into(),
        api_version: "karpenter.sh/v1".into(),
        kind: "NodePool".into(),
        plural: "nodepools".into(),
    }
}

/// Starts the Node and NodePool watchers, supervised: they run until the process ends,
/// each restarted (and counted in `restarts`) should it panic or end.
pub fn spawn(client: &Client, facts: &Arc<ClusterFacts>, restarts: &TaskRestarts) {
    let nodes: Api<Node> = Api::all(client.clone());
    let watched = facts.clone();
    supervise::spawn("Node", restarts.clone(), move || {
        watch_nodes(nodes.clone(), watched.clone())
    });
    let pools: Api<DynamicObject> = Api::all_with(client.clone(), &node_pool_resource());
    let watched = facts.clone();
    supervise::spawn("NodePool", restarts.clone(), move || {
        watch_pools(pools.clone(), watched.clone())
    });
}

async fn watch_nodes(api: Api<Node>, facts: Arc<ClusterFacts>) {
    run(api, "Node", |_| true, Nodes(facts)).await;
}

async fn watch_pools(api: Api<DynamicObject>, facts: Arc<ClusterFacts>) {
    // No Karpenter (404) is an answer, not a lost API server.
    let lost = |e: &watcher::Error| !is_not_found(e);
    run(api, "NodePool", lost, Pools(facts)).await;
}

/// The cluster's facts, filled by the Node watcher.
struct Nodes(Arc<ClusterFacts>);

impl Fill<Node> for Nodes {
    type Item = NodeFacts;

    fn project(&self, node: &Node) -> Option<NodeFacts> {
        Some(project_node(node))
    }

    fn listed(&mut self, nodes: Vec<NodeFacts>) {
        self.0
            .nodes_listed(nodes.into_iter().map(|n| (n.name.clone(), n)).collect());
    }

    fn applied(&self, node: NodeFacts) {
        self.0.node(&node.name.clone(), Some(node));
    }

    fn deleted(&self, node: &Node) {
        self.0
            .node(node.metadata.name.as_deref().unwrap_or_default(), None);
    }
}

/// The cluster's facts, filled by the NodePool watcher.
struct Pools(Arc<ClusterFacts>);

impl Fill<DynamicObject> for Pools {
    type Item = PoolFacts;

    fn project(&self, object: &DynamicObject) -> Option<PoolFacts> {
        project_pool(object)
    }

    fn listed(&mut self, pools: Vec<PoolFacts>) {
        self.0
            .pools_listed(pools.into_iter().map(|p| (p.name.clone(), p)).collect());
    }

    fn applied(&self, pool: PoolFacts) {
        self.0.pool(&pool.name.clone(), Some(pool));
    }

    fn deleted(&self, object: &DynamicObject) {
        self.0
            .pool(object.metadata.name.as_deref().unwrap_or_default(), None);
    }

    fn failed(&self, error: &watcher::Error) {
        if is_not_found(error) {
            // No Karpenter here: no NodePools. Asked again with back-off.
            self.0.pools_listed(BTreeMap::new());
            tracing::debug!("no NodePool resource (Karpenter not installed)");
        }
    }
}

fn is_not_found(e: &watcher::Error) -> bool {
    let api = match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s,
        _ => return false,
    };
    api.code == 404
}

/// A Node's labels and taints.
pub fn project_node(node: &Node) -> NodeFacts {
    NodeFacts {
        name: node.metadata.name.clone().unwrap_or_default(),
        labels: node.metadata.labels.clone().unwrap_or_default(),
        taints: node
            .spec
            .iter()
            .flat_map(|s| s.taints.iter().flatten())
            .filter_map(|t| {
                Some(Taint {
                    key: t.key.clone(),
                    value: t.value.clone(),
                    effect: TaintEffect::parse(&t.effect)?,
                })
            })
            .collect(),
    }
}

/// A NodePool's template; `None` without a name.
pub fn project_pool(object: &DynamicObject) -> Option<PoolFacts> {
    let data = &object.data;
    let labels = at(data, "/spec/template/metadata/labels")
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    let requirements = list(at(data, "/spec/template/spec/requirements"))
        .filter_map(|r| {
            let values = list(at(r, "/values"))
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            Requirement::new(text(r, "/key")?, text(r, "/operator")?, values)
        })
        .collect();
    let taints = list(at(data, "/spec/template/spec/taints"))
        .filter_map(|t| {
            Some(Taint {
                key: text(t, "/key")?.to_owned(),
                value: text(t, "/value").map(str::to_owned),
                effect: TaintEffect::parse(text(t, "/effect")?)?,
            })
        })
        .collect();
    Some(PoolFacts {
        name: object.metadata.name.clone()?,
        labels,
        requirements,
        taints,
    })
}

const NULL: Value = Value::Null;

fn at<'a>(v: &'a Value, pointer: &str) -> &'a Value {
    v.pointer(pointer).unwrap_or(&NULL)
}

fn text<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    at(v, pointer).as_str()
}

fn list(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

/// Keeps `engine` checking the index children of every platform the cluster has, as
/// nodes and NodePools come (see [`Engine::widen_platforms`]); supervised.
pub fn widen_with_cluster(
    cluster: &Arc<ClusterFacts>,
    engine: Arc<Engine>,
    restarts: &TaskRestarts,
) {
    let cluster = cluster.clone();
    supervise::spawn("platform-widening", restarts.clone(), move || {
        let mut platforms = cluster.platforms();
        let engine = engine.clone();
        async move {
            loop {
                widen(&engine, &platforms.borrow_and_update());
                if platforms.changed().await.is_err() {
                    // The cluster's facts are gone with the controller: nothing to follow.
                    std::future::pending::<()>().await;
                }
            }
        }
    });
}

/// Makes `engine` check the index children of the platforms `cluster` has now.
pub fn widen_once(cluster: &ClusterFacts, engine: &Engine) {
    widen(engine, &cluster.platforms().borrow());
}

fn widen(engine: &Engine, platforms: &[NodePlatform]) {
    let wanted: Vec<Platform> = platforms.iter().map(NodePlatform::wanted).collect();
    engine.widen_platforms(&wanted);
}

/// The Nodes and NodePools listed once (page by page), for `report`; no NodePools where the
/// resource is not served.
pub async fn list_once(client: &Client) -> Result<Arc<ClusterFacts>, kube::Error> {
    let facts = ClusterFacts::new();
    let mut nodes = BTreeMap::new();
    list_pages(&Api::<Node>::all(client.clone()), |n| {
        let n = project_node(n);
        nodes.insert(n.name.clone(), n);
    })
    .await?;
    facts.nodes_listed(nodes);
    let mut pools = BTreeMap::new();
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &node_pool_resource());
    let listed = list_pages(&api, |o| {
        if let Some(p) = project_pool(o) {
            pools.insert(p.name.clone(), p);
        }
    })
    .await;
    match listed {
        Ok(()) => facts.pools_listed(pools),
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(e),
    }
    Ok(facts)
}
