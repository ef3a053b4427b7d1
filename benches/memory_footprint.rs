//! Memory of the caches: resident set of the webhook (TLS listener, router, engine) idle,
//! then after admissions that leave 100,000 AVAILABLE blob entries cached (100 images ×
//! 1,000 layers), read from /proc/self/status. The registry behind the seam makes its
//! answers up on the fly and stores nothing, so what grows is the engine's caches.
//!
//! Usage: memory_footprint [IMAGES] [LAYERS]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Duration;

use ecr_preflight::engine::{Engine, EngineSettings};
use ecr_preflight::findings::Outcome;
use ecr_preflight::image::{ImageId, RepositoryKey};
use ecr_preflight::registry::{
    BatchGetImageOutput, BlobState, FetchedManifest, LayerAvailabilityOutput, Registry,
    RegistryError,
};
use ecr_preflight::server::tls::{self, CertStore};
use ecr_preflight::server::{self, WebhookConfig};
use futures::future::BoxFuture;
use futures::FutureExt;
use serde_json::json;

/// The allocator the product binary uses (src/main.rs), so the numbers are its numbers.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
                ..Default::default()
            })
        }
        .boxed()
    }
}

/// A Pod CREATE review naming `images`.
fn review(images: &[String]) -> String {
    let containers: Vec<serde_json::Value> = images
        .iter()
        .enumerate()
        .map(|(i, image)| json!({"name": format!("c{i}"), "image": image}))
        .collect();
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "mem", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE",
        "namespace": "default", "object": {"metadata": {"name": "p"}, "spec": {"containers": containers}}}})
    .to_string()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let images: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let layers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    tls::install_crypto_provider();
    let engine = Arc::new(Engine::new(
        Arc::new(Synthetic { layers }),
        EngineSettings::new(vec!["linux/amd64".parse().expect("platform")]),
    ));
    let (cert, key) = tls::self_signed_pem().expect("cert");
    let certified = tls::certified_key(
        cert.as_bytes(),
        key.as_bytes(),
        "cert".as_ref(),
        "key".as_ref(),
    )
    .expect("key");
    let config = WebhookConfig {
        timeout: Duration::from_secs(30),
        ..common::server::loopback_config(CertStore::new(certified))
    };
    let running = server::start_webhook(engine.clone(), config)
        .await
        .expect("start");
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert.as_bytes()).expect("pem")])
        .build()
        .expect("client");
    let url = format!(
        "https://localhost:{}/validate",
        running.webhook_addr.expect("webhook listener").port()
    );
    let (idle, idle_peak) = common::rss();
    println!(
        "webhook idle (in-process, with its HTTPS client): VmRSS {idle} KiB, VmHWM {idle_peak} KiB"
    );
    let refs: Vec<String> = (0..images)
        .map(|i| format!("{REGISTRY}/team/r{}:v{}", i % 10, i / 10))
        .collect();
    for chunk in refs.chunks(10) {
        let response: serde_json::Value = client
            .post(&url)
            .body(review(chunk))
            .send()
            .await
            .expect("post")
            .json()
            .await
            .expect("json");
        assert_eq!(response["response"]["allowed"], true, "{response}");
    }
    let reports = engine
        .check(&refs, tokio::time::Instant::now() + Duration::from_secs(30))
        .await;
    assert!(reports.iter().all(|r| r.outcome() == Outcome::Ok));
    let (tags, manifests, blobs) = engine.cache_sizes();
    let (now, peak) = common::rss();
    println!("cached: {blobs} blob entries, {manifests} manifests, {tags} tags");
    println!(
        "webhook with caches: VmRSS {now} KiB ({:.1} MiB), VmHWM {peak} KiB ({:.1} MiB)",
        now as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    println!(
        "growth over idle: {:.1} MiB",
        now.saturating_sub(idle) as f64 / 1024.0
    );
}
