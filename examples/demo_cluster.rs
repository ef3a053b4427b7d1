//! A stand-in Kubernetes API server for the quick start (the tests' fake API server, which
//! speaks LIST, WATCH, Leases and Events as the real one does): one Deployment running the
//! intact demo image (and one, `shop/tools`, on the intact image of another registry when
//! there is one), one suspended CronJob on the broken one, two amd64 Nodes and a
//! Karpenter NodePool of Graviton (arm64) nodes tainted `arch=arm64:NoSchedule`. Writes
//! `OUT_DIR/kubeconfig` naming it, then serves until killed.
//!
//! Usage: demo_cluster OUT_DIR   (after seed_demo has written OUT_DIR/images.json)

#[allow(dead_code)]
#[path = "../tests/common/fake_apiserver.rs"]
mod fake_apiserver;

use fake_apiserver::{put_deployment, FakeApiServer};
use serde_json::{json, Value};

#[tokio::main]
async fn main() {
    let Some(out) = std::env::args().nth(1) else {
        eprintln!("usage: demo_cluster OUT_DIR");
        std::process::exit(2);
    };
    let out = std::path::Path::new(&out);
    let images: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("images.json")).expect("images.json from seed_demo"),
    )
    .expect("images.json");
    let api = FakeApiServer::start().await;
    let intact = &images["intact"];
    put_deployment(
        &api,
        "shop",
        "web",
        intact["reference"].as_str().unwrap_or_default(),
        intact["digest"].as_str().unwrap_or_default(),
    );
    let other = &images["other_intact"];
    if let (Some(reference), Some(digest)) = (other["reference"].as_str(), other["digest"].as_str())
    {
        put_deployment(&api, "shop", "tools", reference, digest);
    }
    api.put(json!({"apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"namespace": "shop", "name": "nightly"},
        "spec": {"schedule": "0 3 * * *", "suspend": true, "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "task", "image": images["broken"]["reference"]}]}}}}}}));
    for name in ["ip-10-0-1-10", "ip-10-0-2-11"] {
        api.put(json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}},
            "spec": {}}));
    }
    api.put(json!({"apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": {"name": "graviton"},
        "spec": {"template": {"spec": {
            "requirements": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["arm64"]}],
            "taints": [{"key": "arch", "value": "arm64", "effect": "NoSchedule"}]}}}}));
    api.kubeconfig(out);
    println!("{}", api.url);
    std::future::pending::<()>().await;
}
