//! The webhook over HTTPS with `--registries all`: images of a registry other than ECR's
//! (Debian's `docker-registry` on loopback, TLS) checked as deeply as ECR's, beside ECR's
//! own (the emulator), each answer naming the image and what is wrong.

mod common;

use std::sync::Arc;

use common::oci_registry::OciRegistry;
use ecr_preflight::engine::{Engine, EngineSettings};
use ecr_preflight::image::Registries;
use ecr_preflight::registry::distribution::{Distribution, DistributionSettings};
use ecr_preflight::registry::Routes;
use serde_json::Value;

/// The webhook with ECR (the emulator) and every other registry checked, trusting
/// `registries`' certificates.
async fn webhook(registries: &[&OciRegistry]) -> common::server::TestServer {
    let options = common::server::Options::default();
    let ecr = common::server::registry(None, options.timeout).await;
    ecr_preflight::server::tls::install_crypto_provider();
    let other = Distribution::new(DistributionSettings {
        timeout: options.timeout,
        extra_roots: registries
            .iter()
            .map(|r| std::fs::read(&r.ca).expect("ca"))
            .collect(),
        ..DistributionSettings::default()
    })
    .expect("client");
    let engine = Engine::new(
        Arc::new(Routes {
            ecr: Arc::new(ecr),
            other: Arc::new(other),
        }),
        EngineSettings {
            registries: Registries::All,
            ..EngineSettings::new(vec!["linux/amd64".parse().expect("platform")])
        },
    );
    common::server::start_with(Arc::new(engine), &options, None).await
}

async fn review(server: &common::server::TestServer, image: &str) -> Value {
    server
        .client
        .post(format!("{}/validate", server.url))
        .body(common::pod_review(&[("app", image)]))
        .send()
        .await
        .expect("review")
        .json()
        .await
        .expect("json")
}

/// The image's reference on `registry` (its host is 127.0.0.1:PORT).
fn image(registry: &OciRegistry, path: &str) -> String {
    format!("{}/{path}", registry.url.trim_start_matches("https://"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_of_another_registry_are_checked_like_ecrs() {
    let registry = OciRegistry::start_open();
    let (_, blobs) = registry.push_image("team/app", "v1").await;
    registry.push_image("team/broken", "v1").await;
    let (_, broken_blobs) = registry.push_image("team/broken", "v2").await;
    let server = webhook(&[&registry]).await;

    let good = review(&server, &image(&registry, "team/app:v1")).await;
    assert_eq!(good["response"]["allowed"], true, "{good}");
    assert!(good["response"]["warnings"].is_null(), "{good}");
    assert_eq!(blobs.len(), 3);

    // A blob the registry lost: denied, naming the image and the digest.
    registry.lose_blob(&broken_blobs[2]);
    let broken_ref = image(&registry, "team/broken:v2");
    let broken = review(&server, &broken_ref).await;
    assert_eq!(broken["response"]["allowed"], false, "{broken}");
    let message = broken["response"]["status"]["message"]
        .as_str()
        .expect("message");
    let host = registry.url.trim_start_matches("https://");
    assert_eq!(
        message,
        format!(
            "container app: {broken_ref}: 1 of 3 blobs missing in registry {host}: {}",
            broken_blobs[2]
        )
    );

    // A tag the registry does not have: denied as not found.
    let missing_ref = image(&registry, "team/app:v9");
    let missing = review(&server, &missing_ref).await;
    assert_eq!(missing["response"]["allowed"], false, "{missing}");
    let message = missing["response"]["status"]["message"]
        .as_str()
        .expect("message");
    assert_eq!(
        message,
        format!("container app: {missing_ref}: tag not found in registry {host}")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_needs_credentials_is_never_a_denial() {
    let registry = OciRegistry::start("puller", "s3cret-pass");
    registry.push_image("private/app", "v1").await;
    let server = webhook(&[&registry]).await;
    let answer = review(&server, &image(&registry, "private/app:v1")).await;
    // --on-error allow (the default): admitted, with a warning that says why it was not
    // checked.
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    let warnings = answer["response"]["warnings"].to_string();
    assert!(warnings.contains("needs credentials"), "{warnings}");
    assert!(!warnings.contains("s3cret"), "{warnings}");
}
