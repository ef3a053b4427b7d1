//! Single-arch images against the platforms a pod can land on, end to end: the webhook over
//! HTTPS with the controller's Node and NodePool watchers on the fake API server, the ECR
//! emulator answering BatchGetImage and GetAuthorizationToken, and a real OCI registry
//! (docker-registry with TLS and htpasswd accepting the emulator's token credentials)
//! serving the config blobs at `--ecr-registry-url`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fake_apiserver::FakeApiServer;
use common::oci_registry::OciRegistry;
use common::seed::{Seeder, OCI_MANIFEST, REGISTRY};
use ecr_preflight::engine::{Engine, EngineSettings};
use ecr_preflight::platforms::ConfigCache;
use ecr_preflight::registry::oci::{OciBlobs, RegistryEndpoint};
use ecr_preflight::registry::Registry;
use ecr_preflight::server::{self, tls::CertStore, WebhookConfig};
use ecr_preflight::watch::{self, Controller, ExpirySettings, Namespaces, WatchSettings};
use serde_json::{json, Value};

/// What the emulator's GetAuthorizationToken hands out (`AWS:<account>-auth-token`).
const USER: &str = "AWS";
const PASSWORD: &str = "123456789012-auth-token";

struct Setup {
    https: reqwest::Client,
    url: String,
    /// The admin listener (`/inventory`).
    admin: String,
    configs: Arc<ConfigCache>,
    registry: OciRegistry,
    seeder: Seeder,
    api: FakeApiServer,
    _controller: Controller,
    _server: server::Running,
}

fn node(name: &str, arch: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/os": "linux", "kubernetes.io/arch": arch}}})
}

/// amd64 and arm64 nodes and a NodePool, the webhook with its controller, config blobs
/// read from a registry on loopback.
async fn setup() -> Setup {
    let api = FakeApiServer::start().await;
    api.put(node("a1", "amd64"));
    api.put(node("g1", "arm64"));
    api.put(node("g2", "arm64"));
    api.put(json!({"apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": {"name": "general"},
        "spec": {"template": {"spec": {"requirements": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64", "arm64"]}]}}}}));
    let registry = OciRegistry::start(USER, PASSWORD);
    let ecr = Arc::new(common::server::registry(None, Duration::from_secs(5)).await);
    let engine_settings = EngineSettings::new(vec!["linux/amd64".parse().expect("platform")]);
    let dynamic: Arc<dyn Registry> = ecr.clone();
    let admission = Arc::new(Engine::new(dynamic.clone(), engine_settings.clone()));
    let settings = WatchSettings {
        read_pull_secrets: false,
        recheck_interval: Duration::from_secs(60),
        calls_per_second: 50.0,
        registry_requests_per_second: ecr_preflight::watch::DEFAULT_REGISTRY_REQUESTS_PER_SECOND,
        namespaces: Namespaces::default(),
        workload_metrics: false,
        leader_election: false,
        lease_namespace: "default".into(),
        lease_duration: Duration::from_secs(15),
        identity: "platforms".into(),
        expiry: ExpirySettings::default(),
    };
    let background = watch::background_engine(&admission, dynamic, &engine_settings, &settings);
    let controller = Controller::start(api.controller_client(), Arc::new(background), settings);
    let endpoint = RegistryEndpoint {
        url: Some(registry.url.clone()),
        extra_roots: vec![std::fs::read(&registry.ca).expect("ca")],
        timeout: Duration::from_secs(3),
    };
    let configs = Arc::new(ConfigCache::new(Arc::new(OciBlobs::new(ecr, endpoint))));
    controller.inventory.attach_configs(configs.clone());
    let (cert, key) = server::tls::self_signed_pem().expect("cert");
    server::tls::install_crypto_provider();
    let key =
        server::tls::certified_key(cert.as_bytes(), key.as_bytes(), "c".as_ref(), "k".as_ref())
            .expect("key");
    let config = WebhookConfig {
        controller: Some(controller.clone()),
        config_platforms: Some(configs.clone()),
        ..common::server::loopback_config(CertStore::new(key))
    };
    let running = server::start_webhook(admission, config)
        .await
        .expect("start");
    let deadline = Instant::now() + Duration::from_secs(20);
    while controller
        .cluster
        .cluster()
        .is_none_or(|c| c.pools.is_empty() || c.nodes.len() < 3)
    {
        assert!(Instant::now() < deadline, "nodes never listed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Setup {
        https: common::server::client(&cert, false),
        url: format!(
            "https://localhost:{}/validate",
            running.webhook_addr.expect("webhook").port()
        ),
        admin: format!("http://{}/inventory", running.metrics_addr),
        configs,
        registry,
        seeder: Seeder::new(&common::moto::endpoint()),
        api,
        _controller: controller,
        _server: running,
    }
}

impl Setup {
    /// A single-arch image for `arch` in the emulator, its config blob also in the registry;
    /// its reference and config digest.
    async fn image(&self, repo: &str, tag: &str, arch: &str) -> (String, String) {
        self.seeder.repository(repo).await;
        let config = json!({"architecture": arch, "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []}, "config": {}, "created": tag})
        .to_string();
        let config_digest = self.seeder.blob(repo, config.as_bytes()).await;
        assert_eq!(
            self.registry.push_blob(repo, config.as_bytes()).await,
            config_digest
        );
        let layer = self
            .seeder
            .blob(repo, format!("layer of {repo}:{tag}").as_bytes())
            .await;
        let manifest = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": 10}]})
        .to_string();
        self.seeder
            .put_manifest(repo, Some(tag), &manifest, OCI_MANIFEST)
            .await;
        (format!("{REGISTRY}/{repo}:{tag}"), config_digest)
    }

    async fn review(&self, image: &str, spec: Value) -> Value {
        let mut review: Value =
            serde_json::from_str(&common::pod_review(&[("app", image)])).expect("review");
        if let (Some(pod), Some(extra)) = (
            review["request"]["object"]["spec"].as_object_mut(),
            spec.as_object(),
        ) {
            pod.extend(extra.clone());
        }
        self.post(review.to_string()).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_arch_image_is_held_to_the_platforms_its_pod_can_land_on() {
    let s = setup().await;
    let repo = common::unique("platforms/single");
    let (amd64, _) = s.image(&repo, "amd64", "amd64").await;

    // Lands on arm64 too (two nodes, and the NodePool): denied, saying what to do.
    let r = s.review(&amd64, json!({})).await;
    assert_eq!(r["allowed"], false, "{r}");
    let message = r["status"]["message"].as_str().expect("message");
    let want = format!("container app: {amd64}: could be scheduled on linux/arm64 nodes (2 nodes, NodePool general), image has only linux/amd64: publish linux/arm64 or add nodeSelector kubernetes.io/arch: amd64");
    assert!(message.contains(&want), "{message}");
    // Kept to amd64: allowed.
    let r = s
        .review(
            &amd64,
            json!({"nodeSelector": {"kubernetes.io/arch": "amd64"}}),
        )
        .await;
    assert_eq!(r["allowed"], true, "{r}");
    assert_eq!(s.configs.reads(), 1, "one read of the config blob so far");

    // Many admissions of a new image at once: its config blob is read once.
    let (arm64, _) = s.image(&repo, "arm64", "arm64").await;
    let keep = json!({"nodeSelector": {"kubernetes.io/arch": "arm64"}});
    let answers = futures::future::join_all((0..20).map(|_| s.review(&arm64, keep.clone()))).await;
    assert!(answers.iter().all(|r| r["allowed"] == true), "{answers:?}");
    assert_eq!(
        s.configs.reads(),
        2,
        "the second image's blob, read once for 20 admissions"
    );

    // A Deployment running the amd64 image: the controller reads the same blob (no new
    // read) and says the workload's image lacks linux/arm64.
    common::fake_apiserver::put_deployment(&s.api, "shop", "web", &amd64, "sha256:00");
    let deadline = Instant::now() + Duration::from_secs(30);
    let container = loop {
        let view: Value = reqwest::get(&s.admin)
            .await
            .expect("inventory")
            .json()
            .await
            .expect("json");
        let c = view["workloads"][0]["containers"][0].clone();
        if c["outcome"] == "no_platform" {
            break c;
        }
        assert!(Instant::now() < deadline, "{view}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        container["missing_platforms"],
        json!(["linux/arm64"]),
        "{container}"
    );
    assert_eq!(
        s.configs.reads(),
        2,
        "the controller shares the webhook's reads"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_body_or_a_registry_down_is_unknown_for_the_platform_only() {
    let mut s = setup().await;
    let repo = common::unique("platforms/faults");

    // The registry answers with content that is not the blob: rejected, unknown, allowed
    // (on-error allow) with the reason as a warning.
    let (forged, config) = s.image(&repo, "forged", "amd64").await;
    s.registry
        .corrupt(&config, br#"{"architecture":"arm64","os":"linux"}"#);
    let r = s.review(&forged, json!({})).await;
    assert_eq!(r["allowed"], true, "{r}");
    let warnings = r["warnings"].to_string();
    assert!(warnings.contains("could not be read"), "{warnings}");
    assert!(warnings.contains("DigestMismatch"), "{warnings}");
    assert!(
        !warnings.contains("could be scheduled"),
        "the forged content is never read as a platform: {warnings}"
    );

    // The registry down: unknown for the platform part, never a denial by default.
    let (down, _) = s.image(&repo, "down", "amd64").await;
    s.registry.stop();
    let r = s.review(&down, json!({})).await;
    assert_eq!(r["allowed"], true, "{r}");
    let warnings = r["warnings"].to_string();
    assert!(warnings.contains("could not be read"), "{warnings}");
    assert!(!warnings.contains("could be scheduled"), "{warnings}");
    eprintln!("registry down: {warnings}");
    // An index needs no config blob: its children say its platforms, registry or not.
    let (index, _) = s
        .seeder
        .index(
            &repo,
            "multi",
            "m",
            &[
                ("amd64", common::seed::Breakage::default()),
                ("arm64", common::seed::Breakage::default()),
            ],
        )
        .await;
    let r = s.review(&index.reference(), json!({})).await;
    assert_eq!(r["allowed"], true, "{r}");
    assert!(r["warnings"].is_null(), "{r}");
}

impl Setup {
    /// `body` posted as it is; the response.
    async fn post(&self, body: String) -> Value {
        let answer: Value = self
            .https
            .post(&self.url)
            .body(body)
            .send()
            .await
            .expect("review")
            .json()
            .await
            .expect("json");
        answer["response"].clone()
    }
}

/// `kubectl debug` on a running pod bound to `node`: the pods/ephemeralcontainers UPDATE
/// the API server sends, its new ephemeral container running `image`.
fn debug_review(node: &str, image: &str) -> String {
    let mut review: Value = serde_json::from_str(&common::fixture(
        "pod-ephemeralcontainers-update.json",
        "sample",
    ))
    .expect("fixture");
    for side in ["object", "oldObject"] {
        review["request"][side]["spec"]["nodeName"] = json!(node);
    }
    review["request"]["object"]["spec"]["ephemeralContainers"][0]["image"] = json!(image);
    review.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_on_a_node_is_judged_by_that_node_and_kubectl_debug_is_never_refused_wrongly() {
    let s = setup().await;
    let repo = common::unique("platforms/bound");
    let (amd64, _) = s.image(&repo, "amd64", "amd64").await;

    // Unbound, it could land on arm64: denied (the control).
    let r = s.review(&amd64, json!({})).await;
    assert_eq!(r["allowed"], false, "{r}");
    // Bound to the amd64 node: it runs there and nowhere else.
    let r = s.review(&amd64, json!({"nodeName": "a1"})).await;
    assert_eq!(r["allowed"], true, "{r}");
    // Bound to an arm64 node: denied, naming the node, without a node selector to add.
    let r = s.review(&amd64, json!({"nodeName": "g1"})).await;
    assert_eq!(r["allowed"], false, "{r}");
    let message = r["status"]["message"].as_str().expect("message");
    let want = format!("container app: {amd64}: runs on node g1 (linux/arm64), image has only linux/amd64: publish linux/arm64 or use an image that has it");
    assert!(message.contains(&want), "{message}");
    // Bound to a node not known (yet): judged by the cluster's set.
    let r = s.review(&amd64, json!({"nodeName": "ghost"})).await;
    assert_eq!(r["allowed"], false, "{r}");
    assert!(
        r["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("could be scheduled on linux/arm64 nodes")),
        "{r}"
    );

    // kubectl debug with the amd64-only image on a pod running on the amd64 node: allowed.
    let r = s.post(debug_review("a1", &amd64)).await;
    assert_eq!(r["allowed"], true, "{r}");
    // On the arm64 node it could not start: denied, naming the node.
    let r = s.post(debug_review("g2", &amd64)).await;
    assert_eq!(r["allowed"], false, "{r}");
    assert!(
        r["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("container debugger") && m.contains("runs on node g2")),
        "{r}"
    );
    // On a node the controller has not seen yet: not judged on a guess.
    let r = s.post(debug_review("ghost", &amd64)).await;
    assert_eq!(r["allowed"], true, "{r}");
}
