//! The cluster's platforms through kube's own watchers against the fake API server: Nodes
//! (amd64, arm64, a tainted Windows group) and a Karpenter NodePool, added and removed; a
//! cluster without the NodePool CRD (404) counts as having none until it is installed.

mod common;

use std::time::{Duration, Instant};

use common::fake_apiserver::FakeApiServer;
use ecr_preflight::platforms::{landable, Placement};
use ecr_preflight::watch::nodes::{self, ClusterFacts};
use k8s_openapi::api::core::v1::PodSpec;
use serde_json::{json, Value};

fn node(name: &str, os: &str, arch: &str, taints: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/os": os, "kubernetes.io/arch": arch, "beta.kubernetes.io/arch": arch}},
        "spec": {"taints": taints}})
}

fn pool(name: &str, arches: &[&str]) -> Value {
    json!({"apiVersion": "karpenter.sh/v1", "kind": "NodePool",
        "metadata": {"name": name},
        "spec": {"template": {"metadata": {"labels": {"team": "platform"}},
            "spec": {"requirements": [{"key": "kubernetes.io/arch", "operator": "In", "values": arches}],
                "taints": [], "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"}}}}})
}

fn any_pod() -> Placement {
    let spec: PodSpec =
        serde_json::from_value(json!({"containers": [{"name": "app", "image": "x"}]}))
            .expect("spec");
    ecr_preflight::workload::spec::placement(&&spec)
}

/// "linux/arm64: 1 node, NodePool general" for each platform a plain pod can land on.
fn platforms(facts: &ClusterFacts) -> Vec<String> {
    let cluster = facts.cluster().expect("listed");
    landable(&any_pod(), &cluster)
        .iter()
        .map(|l| format!("{}: {}", l.platform, l.behind()))
        .collect()
}

/// Polls until `platforms` is `want` (bounded).
async fn wait_for(facts: &ClusterFacts, want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = platforms(facts);
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "got {got:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_and_node_pools_make_the_platforms_a_pod_can_land_on() {
    let api = FakeApiServer::start().await;
    api.put(node("ip-10-0-0-1", "linux", "amd64", json!([])));
    api.put(node("ip-10-0-0-2", "linux", "amd64", json!([])));
    api.put(node("ip-10-0-1-1", "linux", "arm64", json!([])));
    api.put(node(
        "win-1",
        "windows",
        "amd64",
        json!([{"key": "os", "value": "windows", "effect": "NoSchedule"}]),
    ));
    api.put(pool("general", &["amd64", "arm64"]));
    let facts = ClusterFacts::new();
    assert!(facts.cluster().is_none(), "unknown before the first list");
    nodes::spawn(&api.client(), &facts, &Default::default());
    tokio::time::timeout(Duration::from_secs(20), facts.wait_listed())
        .await
        .expect("listed");
    wait_for(
        &facts,
        &[
            "linux/amd64: 2 nodes, NodePool general",
            "linux/arm64: 1 node, NodePool general",
        ],
    )
    .await;
    let cluster = facts.cluster().expect("listed");
    let windows = cluster
        .nodes
        .iter()
        .find(|n| n.name == "win-1")
        .expect("windows node");
    assert_eq!(windows.taints.len(), 1, "{windows:?}");
    assert_eq!(
        cluster.pools[0].labels.get("team").map(String::as_str),
        Some("platform")
    );

    // A node goes, a pool changes, a node comes: the watchers follow.
    api.delete("Node", "", "ip-10-0-1-1");
    api.put(pool("general", &["amd64"]));
    wait_for(&facts, &["linux/amd64: 2 nodes, NodePool general"]).await;
    api.put(node("ip-10-0-2-1", "linux", "arm64", json!([])));
    wait_for(
        &facts,
        &[
            "linux/amd64: 2 nodes, NodePool general",
            "linux/arm64: 1 node",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_karpenter_there_are_no_node_pools_until_the_crd_appears() {
    let api = FakeApiServer::start().await;
    api.serve_resource("nodepools", false);
    api.put(node("ip-10-0-0-1", "linux", "amd64", json!([])));
    let facts = ClusterFacts::new();
    nodes::spawn(&api.client(), &facts, &Default::default());
    tokio::time::timeout(Duration::from_secs(20), facts.wait_listed())
        .await
        .expect("the Nodes are listed though NodePools are not served");
    wait_for(&facts, &["linux/amd64: 1 node"]).await;
    assert!(facts.cluster().expect("listed").pools.is_empty());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !api
        .requests()
        .iter()
        .any(|r| r.contains("/apis/karpenter.sh/v1/nodepools"))
    {
        assert!(Instant::now() < deadline, "NodePools were never asked for");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        facts.cluster().expect("listed").pools.is_empty(),
        "a 404 is no NodePools"
    );

    // Karpenter installed: its NodePool shows up (the watcher asks again with back-off).
    api.serve_resource("nodepools", true);
    api.put(pool("graviton", &["arm64"]));
    wait_for(
        &facts,
        &["linux/amd64: 1 node", "linux/arm64: NodePool graviton"],
    )
    .await;
}
