//! Seeds the ECR emulator with the images of `tests/fixtures/deployment-10k-create.json`
//! (repositories `sample/app` and `sample/worker`), for the warm-path benchmark. With
//! OUT_DIR (the platform check on), also writes their config blobs under `OUT_DIR/configs/`
//! (`REPOSITORY@DIGEST` per file name, `/` as `~`) for the OCI registry, and
//! `OUT_DIR/images.json` for the demo's stand-in cluster (`examples/demo_cluster.rs`).
//!
//! Usage: bench_seed ENDPOINT [OUT_DIR]

#[allow(dead_code)]
#[path = "../tests/common/seed.rs"]
mod seed;

use seed::{Breakage, Seeder, DOCKER_MANIFEST, OCI_MANIFEST};

#[tokio::main]
async fn main() {
    let Some(endpoint) = std::env::args().nth(1) else {
        eprintln!("usage: bench_seed ENDPOINT");
        std::process::exit(2);
    };
    let s = Seeder::new(&endpoint);
    let app = s
        .image(
            "sample/app",
            "1.4",
            "bench-app",
            8,
            OCI_MANIFEST,
            Breakage::default(),
        )
        .await;
    let metrics = s
        .image(
            "sample/app",
            "1.4-metrics",
            "bench-metrics",
            3,
            OCI_MANIFEST,
            Breakage::default(),
        )
        .await;
    let worker = s
        .image(
            "sample/worker",
            "2.0",
            "bench-worker",
            6,
            DOCKER_MANIFEST,
            Breakage::default(),
        )
        .await;
    let Some(out) = std::env::args().nth(2).map(std::path::PathBuf::from) else {
        return;
    };
    seed::write_configs(
        &out,
        &[
            (&app, "bench-app"),
            (&metrics, "bench-metrics"),
            (&worker, "bench-worker"),
        ],
    );
    let images = serde_json::json!({
        "intact": {"reference": app.reference(), "digest": app.digest},
        "broken": {"reference": worker.reference(), "digest": worker.digest},
    });
    std::fs::write(out.join("images.json"), images.to_string()).expect("write images");
}
