//! A stand-in Kubernetes API server for the quick start (the tests' fake API server, which
//! speaks LIST, WATCH, Leases and Events as the real one does): one Deployment running the
//! intact demo image, one suspended CronJob on the broken one. Writes `OUT_DIR/kubeconfig`
//! naming it, then serves until killed.
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
    api.put(json!({"apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"namespace": "shop", "name": "nightly"},
        "spec": {"schedule": "0 3 * * *", "suspend": true, "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "task", "image": images["broken"]["reference"]}]}}}}}}));
    api.kubeconfig(out);
    println!("{}", api.url);
    std::future::pending::<()>().await;
}
