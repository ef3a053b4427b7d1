//! Seeds the ECR emulator with the images of `tests/fixtures/deployment-10k-create.json`
//! (repositories `sample/app` and `sample/worker`), for the warm-path benchmark.
//!
//! Usage: bench_seed ENDPOINT

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
    s.image(
        "sample/app",
        "1.4",
        "bench-app",
        8,
        OCI_MANIFEST,
        Breakage::default(),
    )
    .await;
    s.image(
        "sample/app",
        "1.4-metrics",
        "bench-metrics",
        3,
        OCI_MANIFEST,
        Breakage::default(),
    )
    .await;
    s.image(
        "sample/worker",
        "2.0",
        "bench-worker",
        6,
        DOCKER_MANIFEST,
        Breakage::default(),
    )
    .await;
}
