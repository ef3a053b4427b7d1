//! The webhook over HTTPS with `--registries all`: images of a registry other than ECR's
//! (Debian's `docker-registry` on loopback, TLS) checked as deeply as ECR's, beside ECR's
//! own (the emulator), each answer naming the image and what is wrong.

mod common;

use std::sync::Arc;

use base64::Engine as _;
use common::fake_apiserver::FakeApiServer;
use common::oci_registry::OciRegistry;
use ecr_preflight::engine::{Engine, EngineSettings};
use ecr_preflight::image::Registries;
use ecr_preflight::pull_secrets::SecretReader;
use ecr_preflight::registry::Routes;
use serde_json::{json, Value};

/// The webhook with ECR (the emulator) and every other registry checked, trusting
/// `registries`' certificates.
async fn webhook(registries: &[&OciRegistry]) -> common::server::TestServer {
    webhook_with(registries, common::server::Options::default()).await
}

async fn webhook_with(
    registries: &[&OciRegistry],
    options: common::server::Options,
) -> common::server::TestServer {
    let ecr = common::server::registry(None, options.timeout).await;
    let other = common::oci_registry::trusting(registries, options.timeout);
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
    review_pulling(server, image, &[]).await
}

/// The review of a Pod in namespace `shop` running `image`, pulled with `secrets`.
async fn review_pulling(
    server: &common::server::TestServer,
    image: &str,
    secrets: &[&str],
) -> Value {
    let mut review: Value =
        serde_json::from_str(&common::pod_review(&[("app", image)])).expect("review");
    review["request"]["object"]["spec"]["imagePullSecrets"] =
        secrets.iter().map(|name| json!({ "name": name })).collect();
    server
        .client
        .post(format!("{}/validate", server.url))
        .body(review.to_string())
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

/// A dockerconfigjson pull secret in namespace `shop` with `user:password` for `host`.
fn pull_secret(api: &FakeApiServer, name: &str, host: &str, user: &str, password: &str) {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let config = json!({"auths": {host: {"auth": auth}}}).to_string();
    api.put(
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"namespace": "shop", "name": name},
        "data": {".dockerconfigjson": base64::engine::general_purpose::STANDARD.encode(config)}}),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pods_pull_secrets_open_a_private_registry_as_its_kubelet_would() {
    let registry = OciRegistry::start("puller", "s3cret-pass");
    registry.push_image("private/app", "v1").await;
    let (_, broken) = registry.push_image("private/app", "v2").await;
    registry.lose_blob(&broken[1]);
    let host = registry.url.trim_start_matches("https://").to_owned();
    let api = FakeApiServer::start().await;
    pull_secret(
        &api,
        "regcred",
        &format!("https://{host}/v1/"),
        "puller",
        "s3cret-pass",
    );
    pull_secret(&api, "stale", &host, "puller", "old-pass");
    let options = common::server::Options {
        pull_secrets: Some(SecretReader::new(api.client())),
        ..common::server::Options::default()
    };
    let server = webhook_with(&[&registry], options).await;
    let (good, bad) = (
        image(&registry, "private/app:v1"),
        image(&registry, "private/app:v2"),
    );

    // With the pod's secret: checked in depth, intact admitted and broken denied.
    let answer = review_pulling(&server, &good, &["regcred"]).await;
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    assert!(answer["response"]["warnings"].is_null(), "{answer}");
    let answer = review_pulling(&server, &bad, &["regcred"]).await;
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    let message = answer["response"]["status"]["message"].to_string();
    assert!(
        message.contains(&format!(
            "1 of 3 blobs missing in registry {host}: {}",
            broken[1]
        )),
        "{message}"
    );

    // Without it, a Secret that does not exist, or one whose password the registry refuses:
    // unknown, never a denial (--on-error allow), and no password in what is said.
    for (secrets, why) in [
        (&[][..], "needs credentials"),
        (&["absent"][..], "needs credentials"),
        (&["stale"][..], "refused the credentials"),
    ] {
        let answer = review_pulling(&server, &bad, secrets).await;
        assert_eq!(answer["response"]["allowed"], true, "{secrets:?}: {answer}");
        let warnings = answer["response"]["warnings"].to_string();
        assert!(warnings.contains(why), "{secrets:?}: {warnings}");
        assert!(!warnings.contains("pass"), "{warnings}");
    }
    // Each Secret was read once, however many reviews named it.
    let reads = |name: &str| {
        api.requests()
            .iter()
            .filter(|r| r.contains(&format!("/secrets/{name}")))
            .count()
    };
    assert_eq!(
        (reads("regcred"), reads("stale")),
        (1, 1),
        "{:?}",
        api.requests()
    );
}

/// A Deployment in `namespace` running `image`, pulled with `secrets`.
fn deployment(api: &FakeApiServer, namespace: &str, name: &str, image: &str, secrets: &[&str]) {
    let pulled: Vec<Value> = secrets.iter().map(|s| json!({ "name": s })).collect();
    api.put(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"namespace": namespace, "name": name},
        "spec": {"selector": {}, "template": {"spec": {"imagePullSecrets": pulled,
            "containers": [{"name": "app", "image": image}]}}}}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_verifies_each_image_with_the_pull_secrets_of_the_workloads_that_run_it() {
    let registry = OciRegistry::start("puller", "s3cret-pass");
    let (_, broken) = registry.push_image("private/app", "v2").await;
    registry.lose_blob(&broken[1]);
    registry.push_image("private/tool", "v1").await;
    let host = registry.url.trim_start_matches("https://").to_owned();
    let api = FakeApiServer::start().await;
    pull_secret(&api, "regcred", &host, "puller", "s3cret-pass");
    // shop's Deployment pulls with the Secret; other's, in a namespace without it, pulls
    // anonymously.
    deployment(
        &api,
        "shop",
        "web",
        &image(&registry, "private/app:v2"),
        &["regcred"],
    );
    deployment(
        &api,
        "other",
        "tools",
        &image(&registry, "private/tool:v1"),
        &[],
    );

    let timeout = std::time::Duration::from_secs(3);
    let other = common::oci_registry::trusting(&[&registry], timeout);
    let routes = Arc::new(Routes {
        ecr: Arc::new(common::server::registry(None, timeout).await),
        other: Arc::new(other),
    });
    let engine_settings = EngineSettings {
        registries: Registries::All,
        ..EngineSettings::new(vec!["linux/amd64".parse().expect("platform")])
    };
    let admission = Engine::new(routes.clone(), engine_settings.clone());
    let settings = ecr_preflight::watch::WatchSettings {
        read_pull_secrets: true,
        ..common::watch_settings(50.0, std::time::Duration::from_secs(2))
    };
    let background =
        ecr_preflight::watch::background_engine(&admission, routes, &engine_settings, &settings);
    let controller =
        ecr_preflight::watch::Controller::start(api.client(), Arc::new(background), settings);

    let outcome = |name: &str| {
        controller
            .inventory
            .view()
            .workloads
            .iter()
            .find(|w| w.name == name)
            .and_then(|w| w.containers.first().cloned())
            .map(|c| (c.outcome, c.problem.unwrap_or_default()))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let (web, tools) = loop {
        let (web, tools) = (outcome("web"), outcome("tools"));
        let verified = |o: &Option<(String, String)>| {
            o.as_ref().is_some_and(|(outcome, problem)| {
                !(outcome == "unknown" && problem.contains("not verified yet"))
            })
        };
        if verified(&web) && verified(&tools) {
            break (web.expect("web"), tools.expect("tools"));
        }
        assert!(std::time::Instant::now() < deadline, "{web:?} {tools:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(web.0, "missing", "{web:?}");
    assert!(web.1.contains(&broken[1]), "{web:?}");
    assert_eq!(tools.0, "unknown", "{tools:?}");
    assert!(tools.1.contains("needs credentials"), "{tools:?}");
    controller.stop().await;
}

/// An OCI index of `children` (manifest digest, platform).
fn index(children: &[(&str, &str)]) -> String {
    let manifests: Vec<Value> = children
        .iter()
        .map(|(digest, platform)| {
            let (os, arch) = platform.split_once('/').expect("os/arch");
            json!({"mediaType": common::oci_registry::OCI_MANIFEST, "digest": digest, "size": 1,
                "platform": {"os": os, "architecture": arch}})
        })
        .collect();
    json!({"schemaVersion": 2, "mediaType": common::seed::OCI_INDEX, "manifests": manifests})
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_is_followed_to_its_children_as_ecrs_are() {
    let registry = OciRegistry::start_open();
    let (amd64, _) = registry.push_image("team/multi", "amd64").await;
    let (arm64, arm64_blobs) = registry.push_image("team/multi", "arm64").await;
    let index_type = common::seed::OCI_INDEX;
    registry
        .push_manifest(
            "team/multi",
            "v1",
            index_type,
            &index(&[(&amd64, "linux/amd64"), (&arm64, "linux/arm64")]),
        )
        .await;
    registry
        .push_manifest(
            "team/multi",
            "arm-only",
            index_type,
            &index(&[(&arm64, "linux/arm64")]),
        )
        .await;
    // The webhook checks linux/amd64 children only (`--platforms`).
    let server = webhook(&[&registry]).await;

    // A lost layer of the arm64 child does not matter where only amd64 is pulled.
    registry.lose_blob(&arm64_blobs[1]);
    let ok = review(&server, &image(&registry, "team/multi:v1")).await;
    assert_eq!(ok["response"]["allowed"], true, "{ok}");

    // An index without a linux/amd64 child: no_platform, denied.
    let arm_only = image(&registry, "team/multi:arm-only");
    let denied = review(&server, &arm_only).await;
    assert_eq!(denied["response"]["allowed"], false, "{denied}");
    assert_eq!(
        denied["response"]["status"]["message"],
        format!("container app: {arm_only}: no manifest for linux/amd64")
    );
    // The amd64 child was read by its digest.
    let requests = registry.requests();
    assert!(
        requests.contains(&(
            "GET".to_owned(),
            format!("/v2/team/multi/manifests/{amd64}")
        )),
        "{requests:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_name_is_docker_hubs_library_image_as_the_runtimes_normalise_it() {
    // A stand-in for Docker Hub: `docker.io` (what `nginx` normalises to) reached at a
    // docker-registry on loopback instead of registry-1.docker.io.
    let hub = OciRegistry::start_open();
    let (_, blobs) = hub.push_image("library/nginx", "1.27").await;
    ecr_preflight::server::tls::install_crypto_provider();
    let options = common::server::Options::default();
    let other = ecr_preflight::registry::distribution::Distribution::new(
        ecr_preflight::registry::distribution::DistributionSettings {
            timeout: options.timeout,
            extra_roots: vec![std::fs::read(&hub.ca).expect("ca")],
            endpoints: [("docker.io".to_owned(), hub.url.clone())].into(),
            ..Default::default()
        },
    )
    .expect("client");
    let engine = Engine::new(
        Arc::new(Routes {
            ecr: Arc::new(common::server::registry(None, options.timeout).await),
            other: Arc::new(other),
        }),
        EngineSettings {
            registries: Registries::All,
            ..EngineSettings::new(vec!["linux/amd64".parse().expect("platform")])
        },
    );
    let server = common::server::start_with(Arc::new(engine), &options, None).await;
    for name in [
        "nginx:1.27",
        "docker.io/library/nginx:1.27",
        "library/nginx:1.27",
    ] {
        let answer = review(&server, name).await;
        assert_eq!(answer["response"]["allowed"], true, "{name}: {answer}");
    }
    assert!(
        hub.requests().contains(&(
            "HEAD".to_owned(),
            "/v2/library/nginx/manifests/1.27".to_owned()
        )),
        "{:?}",
        hub.requests()
    );
    // `nginx` (latest) is not there: not found in Docker Hub's terms.
    let latest = review(&server, "nginx").await;
    assert_eq!(
        latest["response"]["status"]["message"],
        "container app: nginx: tag not found in registry docker.io"
    );
    assert_eq!(blobs.len(), 3);
}
