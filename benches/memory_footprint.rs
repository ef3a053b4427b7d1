//! Memory of the caches: resident set of an engine idle, then holding 100,000 cached
//! AVAILABLE blob entries (100 images × 1,000 layers), read from /proc/self/status.
//! The registry behind the seam makes its answers up on the fly and stores nothing, so
//! what grows is the engine's caches.
//!
//! Usage: memory_footprint [IMAGES] [LAYERS]

use std::sync::Arc;
use std::time::Duration;

use ecr_preflight::check::{Engine, EngineSettings, Outcome};
use ecr_preflight::image::{ImageId, RepositoryKey};
use ecr_preflight::registry::{
    BatchGetImageOutput, BlobState, FetchedManifest, LayerAvailabilityOutput, Registry,
    RegistryError,
};
use futures::future::BoxFuture;
use futures::FutureExt;
use serde_json::json;

const REGISTRY: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Answers every tag with a manifest of `layers` made-up blobs, and every blob AVAILABLE.
struct Synthetic {
    layers: usize,
}

fn digest(seed: &str, n: usize) -> String {
    // Distinct, well-formed sha256 digests without hashing.
    let mut hex = format!(
        "{:x}",
        fxhash(seed) ^ (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    );
    while hex.len() < 64 {
        hex.push_str(&format!("{:016x}", fxhash(&hex)));
    }
    hex.truncate(64);
    format!("sha256:{hex}")
}

fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Registry for Synthetic {
    fn batch_get_image<'a>(
        &'a self,
        repo: &'a RepositoryKey,
        ids: &'a [ImageId],
    ) -> BoxFuture<'a, Result<BatchGetImageOutput, RegistryError>> {
        async move {
            let images = ids
                .iter()
                .filter_map(|id| match id {
                    ImageId::Tag(tag) => Some(tag),
                    ImageId::Digest(_) => None,
                })
                .map(|tag| {
                    let seed = format!("{}:{tag}", repo.repository);
                    let blobs: Vec<String> = (0..self.layers).map(|n| digest(&seed, n)).collect();
                    let manifest = json!({
                        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blobs[0], "size": 1},
                        "layers": blobs[1..].iter().map(|d| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": 1})).collect::<Vec<_>>(),
                    });
                    FetchedManifest {
                        tag: Some(tag.clone()),
                        digest: Some(digest(&seed, usize::MAX)),
                        media_type: Some(OCI_MANIFEST.into()),
                        manifest: manifest.to_string(),
                    }
                })
                .collect();
            Ok(BatchGetImageOutput { images, failures: vec![] })
        }
        .boxed()
    }

    fn batch_check_layer_availability<'a>(
        &'a self,
        _: &'a RepositoryKey,
        digests: &'a [String],
    ) -> BoxFuture<'a, Result<LayerAvailabilityOutput, RegistryError>> {
        async move {
            Ok(LayerAvailabilityOutput {
                blobs: digests
                    .iter()
                    .map(|d| (d.clone(), BlobState::Available))
                    .collect(),
            })
        }
        .boxed()
    }
}

/// (VmRSS, VmHWM) in KiB.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let images: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let layers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let engine = Engine::new(
        Arc::new(Synthetic { layers }),
        EngineSettings::new(vec!["linux/amd64".parse().expect("platform")]),
    );
    let (idle, idle_peak) = rss();
    println!("engine idle: VmRSS {idle} KiB, VmHWM {idle_peak} KiB");
    let refs: Vec<String> = (0..images)
        .map(|i| format!("{REGISTRY}/team/r{}:v{}", i % 10, i / 10))
        .collect();
    for chunk in refs.chunks(10) {
        let reports = engine
            .check(chunk, tokio::time::Instant::now() + Duration::from_secs(30))
            .await;
        assert!(
            reports.iter().all(|r| r.outcome() == Outcome::Ok),
            "{reports:?}"
        );
    }
    let (tags, manifests, blobs) = engine.caches().sizes();
    let (now, peak) = rss();
    println!("cached: {blobs} blob entries, {manifests} manifests, {tags} tags");
    println!(
        "engine with caches: VmRSS {now} KiB ({:.1} MiB), VmHWM {peak} KiB ({:.1} MiB)",
        now as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    println!(
        "growth over idle: {:.1} MiB",
        now.saturating_sub(idle) as f64 / 1024.0
    );
}
