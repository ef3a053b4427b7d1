//! The controller end to end: kube's own client, watchers, lease manager and event recorder
//! against the fake API server (tests/common/fake_apiserver.rs), the engine against the ECR
//! emulator, `/inventory` and `/metrics` over HTTP from the admin listener.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_ecr::types::ImageIdentifier;
use common::fake_apiserver::{put_deployment, FakeApiServer};
use common::seed::{Breakage, Pushed, Seeder, DOCKER_MANIFEST};
use ecr_preflight::engine::{Engine, EngineSettings};
use ecr_preflight::lifecycle::expiry;
use ecr_preflight::registry::Registry;
use ecr_preflight::server::{self, tls::CertStore, WebhookConfig};
use ecr_preflight::watch::{
    self, Controller, ExpirySettings, InventoryView, Namespaces, WatchSettings,
};
use serde_json::{json, Value};

struct Running {
    /// The webhook's engine.
    admission: Arc<Engine>,
    admin: String,
    http: reqwest::Client,
    controller: Controller,
    server: server::Running,
    /// The webhook's self-signed certificate.
    cert: String,
}

async fn engines(settings: &WatchSettings) -> (Arc<Engine>, Arc<Engine>) {
    let registry: Arc<dyn Registry> =
        Arc::new(common::server::registry(None, Duration::from_secs(3)).await);
    let engine_settings = EngineSettings::new(vec!["linux/amd64".parse().expect("platform")]);
    let admission = Engine::new(registry.clone(), engine_settings.clone());
    let background = watch::background_engine(&admission, registry, &engine_settings, settings);
    (Arc::new(admission), Arc::new(background))
}

fn settings(identity: &str, leader_election: bool) -> WatchSettings {
    WatchSettings {
        recheck_interval: Duration::from_secs(2),
        calls_per_second: 50.0,
        registry_requests_per_second: ecr_preflight::watch::DEFAULT_REGISTRY_REQUESTS_PER_SECOND,
        namespaces: Namespaces::default(),
        workload_metrics: true,
        leader_election,
        lease_namespace: "ecr-preflight".to_owned(),
        lease_duration: Duration::from_secs(15),
        identity: identity.to_owned(),
        expiry: ExpirySettings::default(),
        read_pull_secrets: false,
    }
}

/// The webhook and the controller in one process, as `serve --watch` runs them, the
/// controller reading the cluster through `client`.
async fn start(client: kube::Client, settings: WatchSettings) -> Running {
    let (admission, background) = engines(&settings).await;
    let controller = Controller::start(client, background, settings);
    let engine = admission.clone();
    let (cert, key) = server::tls::self_signed_pem().expect("cert");
    server::tls::install_crypto_provider();
    let key =
        server::tls::certified_key(cert.as_bytes(), key.as_bytes(), "c".as_ref(), "k".as_ref())
            .expect("key");
    let config = WebhookConfig {
        controller: Some(controller.clone()),
        ..common::server::loopback_config(CertStore::new(key))
    };
    let running = server::start_webhook(engine, config).await.expect("start");
    Running {
        admission,
        admin: format!("http://{}", running.metrics_addr),
        http: reqwest::Client::new(),
        controller,
        server: running,
        cert,
    }
}

impl Running {
    async fn inventory(&self) -> InventoryView {
        let r = self
            .http
            .get(format!("{}/inventory", self.admin))
            .send()
            .await
            .expect("inventory");
        assert_eq!(r.status(), 200);
        r.json().await.expect("inventory json")
    }

    async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.admin))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    /// Polls /metrics until `ready` holds (bounded); the last answer.
    async fn wait_metrics(&self, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let metrics = self.metrics().await;
            if ready(&metrics) {
                return metrics;
            }
            assert!(Instant::now() < deadline, "never came: {metrics}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits (bounded) until `n` more full passes have ended: "several passes later" as a
    /// condition, not a time.
    async fn wait_passes(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = self.inventory().await.verified_at;
        let mut ended = 0;
        while ended < n {
            assert!(Instant::now() < deadline, "{ended} of {n} passes ended");
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = self.inventory().await.verified_at;
            if now.is_some() && now != seen {
                ended += 1;
                seen = now;
            }
        }
    }

    /// Polls /inventory until `name`'s container shows `outcome` (bounded).
    async fn wait_outcome(&self, name: &str, outcome: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let view = self.inventory().await;
            let found = view
                .workloads
                .iter()
                .find(|w| w.name == name)
                .and_then(|w| w.containers.first().cloned());
            if let Some(c) = &found {
                if c.outcome == outcome {
                    return serde_json::to_value(&view).expect("json");
                }
            }
            assert!(
                Instant::now() < deadline,
                "{name} never became {outcome}: {found:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Waits (bounded) until `name` has `n` Events (they leave through a queue, after the pass
/// that found them); its Events then.
async fn wait_events(api: &FakeApiServer, name: &str, n: usize) -> Vec<(String, String, String)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let posted = events(api, name);
        if posted.len() >= n {
            return posted;
        }
        assert!(Instant::now() < deadline, "{posted:?}: fewer than {n}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The watch requests for `path` so far.
fn watches(api: &FakeApiServer, path: &str) -> usize {
    api.requests()
        .iter()
        .filter(|r| r.starts_with(&format!("GET {path}?")) && r.contains("watch=true"))
        .count()
}

/// Waits (bounded) until `path` has been watched more than `before` times.
async fn wait_watched(api: &FakeApiServer, path: &str, before: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while watches(api, path) <= before {
        assert!(Instant::now() < deadline, "{:?}", api.requests());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn events(api: &FakeApiServer, name: &str) -> Vec<(String, String, String)> {
    api.objects("Event")
        .into_iter()
        .filter(|e| e["regarding"]["name"] == name)
        .map(|e| {
            (
                e["type"].as_str().unwrap_or_default().to_owned(),
                e["reason"].as_str().unwrap_or_default().to_owned(),
                e["note"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

async fn delete_tag(seeder: &Seeder, pushed: &Pushed) {
    seeder
        .client
        .batch_delete_image()
        .repository_name(&pushed.repository)
        .image_ids(ImageIdentifier::builder().image_tag(&pushed.tag).build())
        .send()
        .await
        .expect("delete image");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_image_flips_the_workload_once_and_a_repush_flips_it_back() {
    let seeder = Seeder::new(&common::moto::endpoint());
    let repo = common::unique("watch/deleted");
    let pushed = seeder
        .image(&repo, "v1", &repo, 2, DOCKER_MANIFEST, Breakage::default())
        .await;
    let api = FakeApiServer::start().await;
    put_deployment(&api, "shop", "web", &pushed.reference(), &pushed.digest);
    let ctl = start(api.controller_client(), settings("replica-a", true)).await;

    let view = ctl.wait_outcome("web", "ok").await;
    let w = &view["workloads"][0];
    assert_eq!(
        (w["namespace"].as_str(), w["kind"].as_str()),
        (Some("shop"), Some("Deployment"))
    );
    let c = &w["containers"][0];
    assert_eq!(c["name"], "app");
    assert_eq!(c["image"], pushed.reference());
    assert_eq!(c["running_digests"], json!([pushed.digest]));
    assert_eq!(
        (c["drift"].as_bool(), c["problem"].is_null()),
        (Some(false), true)
    );
    assert!(
        c["verified_at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{c}"
    );
    // The lease is this replica's, and only the leader exports workload series.
    let lease = &api.objects("Lease")[0];
    assert_eq!(lease["metadata"]["name"], "ecr-preflight-watch");
    assert_eq!(lease["metadata"]["namespace"], "ecr-preflight");
    assert_eq!(lease["spec"]["holderIdentity"], "replica-a");
    // Series are published after the inventory records a check (at most a second later
    // within a pass, else at its end): waited for, not read at once.
    let series = r#"ecr_preflight_workload_images{namespace="shop",kind="Deployment",name="web",container="app",outcome="ok"} 1"#;
    let metrics = ctl.wait_metrics(|m| m.contains(series)).await;
    assert!(
        metrics.contains("ecr_preflight_watch_leader 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"source="watch",operation="BatchGetImage",outcome="success""#),
        "{metrics}"
    );
    assert!(
        events(&api, "web").is_empty(),
        "no Event while nothing changed"
    );

    delete_tag(&seeder, &pushed).await;
    let view = ctl.wait_outcome("web", "not_found").await;
    let problem = view["workloads"][0]["containers"][0]["problem"]
        .as_str()
        .expect("problem")
        .to_owned();
    assert!(problem.contains("tag not found in ECR"), "{problem}");
    // Several more passes: still one Event.
    wait_events(&api, "web", 1).await;
    ctl.wait_passes(2).await;
    let posted = events(&api, "web");
    assert_eq!(posted.len(), 1, "{posted:?}");
    assert_eq!(
        (posted[0].0.as_str(), posted[0].1.as_str()),
        ("Warning", "ImageUnavailable")
    );
    assert_eq!(posted[0].2, problem);
    let metrics = ctl.metrics().await;
    assert!(metrics.contains(r#"ecr_preflight_workload_images{namespace="shop",kind="Deployment",name="web",container="app",outcome="not_found"} 1"#), "{metrics}");
    assert!(
        !metrics.contains(r#"name="web",container="app",outcome="ok""#),
        "the old series is gone: {metrics}"
    );
    assert!(
        metrics.contains(r#"ecr_preflight_images_in_use{outcome="not_found"} 1"#),
        "{metrics}"
    );

    // The same image pushed again: one Normal Event.
    seeder
        .image(&repo, "v1", &repo, 2, DOCKER_MANIFEST, Breakage::default())
        .await;
    ctl.wait_outcome("web", "ok").await;
    wait_events(&api, "web", 2).await;
    ctl.wait_passes(1).await;
    let posted = events(&api, "web");
    assert_eq!(posted.len(), 2, "{posted:?}");
    assert_eq!(
        (posted[1].0.as_str(), posted[1].1.as_str()),
        ("Normal", "ImageAvailable")
    );
    let view = ctl.inventory().await;
    assert!(view.verified_at.is_some());
    assert_eq!(ctl.controller.inventory.objects(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_repushed_onto_a_broken_manifest_is_missing_and_drifted() {
    let seeder = Seeder::new(&common::moto::endpoint());
    let repo = common::unique("watch/repushed");
    let good = seeder
        .image(
            &repo,
            "stable",
            &repo,
            2,
            DOCKER_MANIFEST,
            Breakage::default(),
        )
        .await;
    let api = FakeApiServer::start().await;
    put_deployment(&api, "shop", "api", &good.reference(), &good.digest);
    let ctl = start(api.controller_client(), settings("replica-b", false)).await;
    ctl.wait_outcome("api", "ok").await;

    let seed = format!("{repo}-2");
    let broken = seeder
        .image(
            &repo,
            "stable",
            &seed,
            3,
            DOCKER_MANIFEST,
            Breakage {
                missing_layers: &[1],
                missing_config: false,
            },
        )
        .await;
    let view = ctl.wait_outcome("api", "missing").await;
    let c = &view["workloads"][0]["containers"][0];
    assert_eq!(c["drift"], true, "the tag names a digest no pod runs: {c}");
    let problem = c["problem"].as_str().expect("problem");
    assert!(problem.contains(&broken.layers[1]), "{problem}");
    assert!(problem.contains("1 of 4 blobs missing"), "{problem}");
    wait_events(&api, "api", 1).await;
    ctl.wait_passes(1).await;
    let posted = events(&api, "api");
    assert_eq!(posted.len(), 1, "{posted:?}");
    assert_eq!(posted[0].1, "ImageUnavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_watch_resumes_and_an_expired_one_relists() {
    let api = FakeApiServer::start().await;
    put_deployment(&api, "a", "one", "nginx:1", "sha256:11");
    let ctl = start(api.controller_client(), settings("replica-c", false)).await;
    ctl.wait_outcome("one", "skipped").await;
    let lists = |api: &FakeApiServer| {
        api.requests()
            .iter()
            .filter(|r| {
                r.starts_with("GET /apis/apps/v1/deployments?") && !r.contains("watch=true")
            })
            .count()
    };
    assert_eq!(lists(&api), 1);

    // Dropped: resumed from where it was, without a list.
    let deployments = "/apis/apps/v1/deployments";
    let watched = watches(&api, deployments);
    api.drop_watches();
    wait_watched(&api, deployments, watched).await;
    put_deployment(&api, "a", "two", "nginx:2", "sha256:22");
    ctl.wait_outcome("two", "skipped").await;
    assert_eq!(lists(&api), 1, "{:?}", api.requests());

    // Expired: 410 Gone, then a fresh list that drops what was deleted meanwhile.
    // Changes made while no watch is open, then the history they are in compacted away.
    api.refuse_watches(true);
    let watched = watches(&api, deployments);
    api.drop_watches();
    // Its watch tried again, and refused: no watch is open.
    wait_watched(&api, deployments, watched).await;
    // The garbage collector's work too: the Deployment's ReplicaSet and Pod go with it.
    api.delete("Deployment", "a", "one");
    api.delete("ReplicaSet", "a", "one-5d8f");
    api.delete("Pod", "a", "one-5d8f-x1");
    put_deployment(&api, "b", "three", "nginx:3", "sha256:33");
    api.compact();
    api.refuse_watches(false);
    ctl.wait_outcome("three", "skipped").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while lists(&api) < 2 {
        assert!(Instant::now() < deadline, "{:?}", api.requests());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let view = ctl.inventory().await;
    let names: Vec<&str> = view.workloads.iter().map(|w| w.name.as_str()).collect();
    assert!(names.contains(&"three"), "{names:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let view = ctl.inventory().await;
        if !view
            .workloads
            .iter()
            .any(|w| w.name == "one" && w.kind == "Deployment")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the deleted Deployment stays: {view:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_that_comes_up_late_is_waited_for_while_the_webhook_serves() {
    let reserved = common::Reserved::new();
    let addr = reserved.addr();
    let client = kube::Client::try_from(kube::Config::new(
        format!("http://{addr}").parse().expect("url"),
    ))
    .expect("client");
    let ctl = start(client, settings("replica-d", true)).await;
    let http = &ctl.http;
    let admin = &ctl.admin;
    let ready = http
        .get(format!("{admin}/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(
        ready.status(),
        200,
        "the webhook is ready without the API server"
    );
    let https = common::server::client(&ctl.cert, false);
    let url = format!(
        "https://localhost:{}/validate",
        ctl.server.webhook_addr.expect("webhook").port()
    );
    let review = common::pod_review(&[("app", "nginx:1")]);
    let answer: Value = https
        .post(&url)
        .body(review)
        .send()
        .await
        .expect("review")
        .json()
        .await
        .expect("json");
    assert_eq!(answer["response"]["allowed"], true);
    assert!(!ctl.controller.inventory.is_synced());

    tokio::time::sleep(Duration::from_secs(2)).await;
    let api = FakeApiServer::start_on(reserved.listen()).await;
    put_deployment(&api, "late", "web", "nginx:1", "sha256:11");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let view = ctl.inventory().await;
        if view.workloads.iter().any(|w| w.name == "web") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the controller never caught up: {view:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.objects("Lease").is_empty() {
        assert!(Instant::now() < deadline, "no Lease");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn inventory_without_the_controller_says_how_to_start_it() {
    let srv = common::server::start(common::server::Options::default()).await;
    let r = reqwest::get(format!("{}/inventory", srv.admin_url))
        .await
        .expect("get");
    assert_eq!(r.status(), 404);
    assert!(r.text().await.expect("text").contains("--watch"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_watched_namespaces_and_no_workload_series_when_asked() {
    let api = FakeApiServer::start().await;
    for ns in ["a", "b", "c"] {
        put_deployment(&api, ns, &format!("web-{ns}"), "nginx:1", "sha256:11");
    }
    // Only a and b, minus b: namespaced watches of a alone.
    let only = WatchSettings {
        namespaces: Namespaces {
            only: vec!["a".into(), "b".into()],
            excluded: ["b".to_owned()].into_iter().collect(),
        },
        workload_metrics: false,
        ..settings("replica-e", false)
    };
    let ctl = start(api.controller_client(), only).await;
    ctl.wait_outcome("web-a", "skipped").await;
    let view = ctl.inventory().await;
    let names: Vec<&str> = view.workloads.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["web-a"], "{view:?}");
    let requests = api.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("GET /api/v1/namespaces/a/pods?")),
        "{requests:?}"
    );
    assert!(
        !requests
            .iter()
            .any(|r| r.contains("/namespaces/b/") || r.starts_with("GET /api/v1/pods?")),
        "{requests:?}"
    );
    let in_use = r#"ecr_preflight_images_in_use{outcome="skipped"} 1"#;
    let metrics = ctl.wait_metrics(|m| m.contains(in_use)).await;
    assert!(
        !metrics.contains("ecr_preflight_workload_images{"),
        "{metrics}"
    );

    // Every namespace but c.
    let api = FakeApiServer::start().await;
    for ns in ["a", "c"] {
        put_deployment(&api, ns, &format!("web-{ns}"), "nginx:1", "sha256:11");
    }
    let all_but = WatchSettings {
        namespaces: Namespaces {
            only: Vec::new(),
            excluded: ["c".to_owned()].into_iter().collect(),
        },
        ..settings("replica-f", false)
    };
    let ctl = start(api.controller_client(), all_but).await;
    ctl.wait_outcome("web-a", "skipped").await;
    ctl.wait_passes(1).await;
    let view = ctl.inventory().await;
    assert!(
        view.workloads.iter().all(|w| w.namespace != "c"),
        "{view:?}"
    );
    assert!(api
        .requests()
        .iter()
        .any(|r| r.starts_with("GET /api/v1/pods?")));
}

/// Puts `rules` as `repository`'s lifecycle policy in the emulator.
async fn put_policy(seeder: &Seeder, repository: &str, rules: Value) {
    seeder
        .client
        .put_lifecycle_policy()
        .repository_name(repository)
        .lifecycle_policy_text(json!({ "rules": rules }).to_string())
        .send()
        .await
        .expect("put lifecycle policy");
}

/// When the emulator says `pushed` was pushed (Unix seconds).
async fn pushed_at(seeder: &Seeder, pushed: &Pushed) -> i64 {
    let out = seeder
        .client
        .describe_images()
        .repository_name(&pushed.repository)
        .image_ids(ImageIdentifier::builder().image_tag(&pushed.tag).build())
        .send()
        .await
        .expect("describe images");
    out.image_details()[0]
        .image_pushed_at()
        .expect("push time")
        .secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lifecycle_rule_due_within_the_warning_is_told_once_with_its_rule_and_time() {
    let seeder = Seeder::new(&common::moto::endpoint());
    let repo = common::unique("watch/expiring");
    let pushed = seeder
        .image(&repo, "v1", &repo, 2, DOCKER_MANIFEST, Breakage::default())
        .await;
    put_policy(
        &seeder,
        &repo,
        json!([
            {"rulePriority": 1, "description": "keep releases", "selection": {"tagStatus": "tagged", "tagPrefixList": ["release-"], "countType": "imageCountMoreThan", "countNumber": 10}, "action": {"type": "expire"}},
            {"rulePriority": 2, "description": "three days for the rest", "selection": {"tagStatus": "any", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 3}, "action": {"type": "expire"}}
        ]),
    )
    .await;
    let due = pushed_at(&seeder, &pushed).await + 3 * 86_400;
    // A repository without a policy: nothing will act on its image.
    let kept_repo = common::unique("watch/kept");
    let kept = seeder
        .image(
            &kept_repo,
            "v1",
            &kept_repo,
            1,
            DOCKER_MANIFEST,
            Breakage::default(),
        )
        .await;
    let api = FakeApiServer::start().await;
    put_deployment(&api, "shop", "web", &pushed.reference(), &pushed.digest);
    put_deployment(&api, "shop", "kept", &kept.reference(), &kept.digest);
    let ctl = start(api.controller_client(), settings("replica-x", false)).await;

    ctl.wait_outcome("web", "ok").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let view = loop {
        let view = serde_json::to_value(ctl.inventory().await).expect("json");
        if !view["workloads"][1]["containers"][0]["expires_at"].is_null() {
            break view;
        }
        assert!(Instant::now() < deadline, "no forecast: {view}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let web = &view["workloads"][1];
    assert_eq!(web["name"], "web", "{view}");
    let c = &web["containers"][0];
    assert_eq!(c["expires_at"], expiry::rfc3339(due), "{c}");
    assert_eq!(c["expiry_action"], "expire");
    assert_eq!(c["expiry_rule"]["priority"], 2);
    assert_eq!(c["expiry_rule"]["description"], "three days for the rest");
    assert_eq!(c["expiry_rule"]["digest"], pushed.digest);
    let other = &view["workloads"][0];
    assert_eq!(other["name"], "kept");
    assert!(other["containers"][0]["expires_at"].is_null(), "{other}");
    assert!(other["containers"][0]["expiry_rule"].is_null(), "{other}");

    let series = format!(
        r#"ecr_preflight_workload_image_expiry_timestamp_seconds{{namespace="shop",kind="Deployment",name="web",container="app",action="expire"}} {due}"#
    );
    let metrics = ctl.wait_metrics(|m| m.contains(&series)).await;
    assert!(
        !metrics
            .contains(r#"expiry_timestamp_seconds{namespace="shop",kind="Deployment",name="kept""#),
        "{metrics}"
    );

    // Several passes later: one Warning, naming the image, the rule, the time and the way out.
    wait_events(&api, "web", 1).await;
    ctl.wait_passes(2).await;
    let posted = events(&api, "web");
    assert_eq!(posted.len(), 1, "{posted:?}");
    let (kind, reason, note) = &posted[0];
    assert_eq!(
        (kind.as_str(), reason.as_str()),
        ("Warning", "ImageExpiring")
    );
    for part in [
        pushed.reference(),
        "lifecycle rule 2 (three days for the rest)".to_owned(),
        expiry::rfc3339(due),
        "expired".to_owned(),
        "pin the workload by digest".to_owned(),
        "re-tag".to_owned(),
    ] {
        assert!(note.contains(&part), "{part} not in {note}");
    }
    assert!(events(&api, "kept").is_empty());

    // The rule changed to spare the image: the series goes, and nothing more is posted.
    put_policy(
        &seeder,
        &repo,
        json!([{"rulePriority": 1, "description": "untagged only", "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 3}, "action": {"type": "expire"}}]),
    )
    .await;
    ctl.wait_metrics(|m| !m.contains("ecr_preflight_workload_image_expiry_timestamp_seconds{"))
        .await;
    let view = ctl.inventory().await;
    assert!(
        view.workloads
            .iter()
            .all(|w| w.containers[0].expires_at.is_none()),
        "{view:?}"
    );
    assert_eq!(events(&api, "web").len(), 1);
}

fn node(name: &str, os: &str, arch: &str, taints: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/os": os, "kubernetes.io/arch": arch}},
        "spec": {"taints": taints}})
}

/// A pod review of `image`, with `spec` merged into the pod's spec.
fn placed_review(image: &str, spec: Value) -> String {
    let mut review: Value =
        serde_json::from_str(&common::pod_review(&[("app", image)])).expect("review");
    if let (Some(pod), Some(extra)) = (
        review["request"]["object"]["spec"].as_object_mut(),
        spec.as_object(),
    ) {
        pod.extend(extra.clone());
    }
    review.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_without_a_manifest_for_a_platform_the_pod_can_land_on_is_denied() {
    let seeder = Seeder::new(&common::moto::endpoint());
    let repo = common::unique("platforms/app");
    let (amd64_only, _) = seeder
        .index(&repo, "amd64-only", "p1", &[("amd64", Breakage::default())])
        .await;
    let (both, _) = seeder
        .index(
            &repo,
            "multi",
            "p2",
            &[
                ("amd64", Breakage::default()),
                ("arm64", Breakage::default()),
            ],
        )
        .await;
    // Intact for amd64; the arm64 child lacks a layer. `--platforms` is linux/amd64 here:
    // the arm64 child's blobs are checked because the cluster has arm64 nodes.
    let (arm_broken, children) = seeder
        .index(
            &repo,
            "arm-broken",
            "p3",
            &[
                ("amd64", Breakage::default()),
                (
                    "arm64",
                    Breakage {
                        missing_layers: &[1],
                        ..Breakage::default()
                    },
                ),
            ],
        )
        .await;
    let api = FakeApiServer::start().await;
    api.put(node("a1", "linux", "amd64", json!([])));
    api.put(node("a2", "linux", "amd64", json!([])));
    for i in 0..3 {
        api.put(node(&format!("g{i}"), "linux", "arm64", json!([])));
    }
    api.put(node(
        "win",
        "windows",
        "amd64",
        json!([{"key": "os", "value": "windows", "effect": "NoSchedule"}]),
    ));
    api.put(json!({"apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": {"name": "general"},
        "spec": {"template": {"spec": {"requirements": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["arm64"]}]}}}}));
    put_deployment(
        &api,
        "shop",
        "arm-blind",
        &amd64_only.reference(),
        &amd64_only.digest,
    );
    for (name, selector) in [
        ("arm-any", json!({})),
        ("arm-kept", json!({"kubernetes.io/arch": "amd64"})),
    ] {
        api.put(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"namespace": "shop", "name": name},
            "spec": {"selector": {}, "template": {"spec": {"nodeSelector": selector,
                "containers": [{"name": "app", "image": arm_broken.reference()}]}}}}));
    }
    let ctl = start(api.controller_client(), settings("replica-p", false)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while ctl
        .controller
        .cluster
        .cluster()
        .is_none_or(|c| c.pools.is_empty())
        || !ctl
            .admission
            .checked_platforms()
            .contains(&"linux/arm64".parse().expect("platform"))
    {
        assert!(
            Instant::now() < deadline,
            "nodes and NodePools never listed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let https = common::server::client(&ctl.cert, false);
    let url = format!(
        "https://localhost:{}/validate",
        ctl.server.webhook_addr.expect("webhook").port()
    );
    let ask = |review: String| {
        let (https, url) = (https.clone(), url.clone());
        async move {
            let answer: Value = https
                .post(&url)
                .body(review)
                .send()
                .await
                .expect("review")
                .json()
                .await
                .expect("json");
            answer["response"].clone()
        }
    };

    // Lands on arm64 too, which the index lacks: denied, saying what to do.
    let r = ask(placed_review(&amd64_only.reference(), json!({}))).await;
    assert_eq!(r["allowed"], false, "{r}");
    let message = r["status"]["message"].as_str().expect("message");
    let want = format!(
        "container app: {}: could be scheduled on linux/arm64 nodes (3 nodes, NodePool general), image has only linux/amd64: publish linux/arm64 or add nodeSelector kubernetes.io/arch: amd64",
        amd64_only.reference()
    );
    assert!(message.contains(&want), "{message}");
    // Kept to amd64: allowed.
    let amd64 = json!({"nodeSelector": {"kubernetes.io/arch": "amd64"}});
    let r = ask(placed_review(&amd64_only.reference(), amd64.clone())).await;
    assert_eq!(r["allowed"], true, "{r}");
    // With both children: allowed; a Linux pod never needs a windows child (the windows
    // nodes are tainted and it does not tolerate them).
    let r = ask(placed_review(&both.reference(), json!({}))).await;
    assert_eq!(r["allowed"], true, "{r}");
    // A pod tolerating the windows taint could land there: the index lacks windows/amd64.
    let tolerates = json!({"tolerations": [{"key": "os", "operator": "Equal", "value": "windows", "effect": "NoSchedule"}]});
    let r = ask(placed_review(&both.reference(), tolerates)).await;
    assert_eq!(r["allowed"], false, "{r}");
    let message = r["status"]["message"].as_str().expect("message");
    assert!(
        message.contains("could be scheduled on windows/amd64 nodes (1 node)"),
        "{message}"
    );
    assert!(message.contains("kubernetes.io/os: linux"), "{message}");

    // A child for a platform the pod can land on has its blobs checked, though
    // `--platforms` names only linux/amd64: the arm64 child's missing layer denies.
    let r = ask(placed_review(&arm_broken.reference(), json!({}))).await;
    assert_eq!(r["allowed"], false, "{r}");
    let message = r["status"]["message"].as_str().expect("message");
    assert!(message.contains("linux/arm64"), "{message}");
    assert!(message.contains(&children[1].layers[1]), "{message}");
    // Kept to amd64, the pod never pulls the arm64 child: allowed.
    let r = ask(placed_review(&arm_broken.reference(), amd64.clone())).await;
    assert_eq!(r["allowed"], true, "{r}");
    // The controller judges each workload by where its pods can land, as admission does.
    ctl.wait_outcome("arm-any", "missing").await;
    ctl.wait_outcome("arm-kept", "ok").await;

    // The controller says so of the workload that runs it: where it can land, what its
    // image lacks, no_platform, one Warning with the same words.
    let view = ctl.wait_outcome("arm-blind", "no_platform").await;
    let w = view["workloads"]
        .as_array()
        .and_then(|all| all.iter().find(|w| w["name"] == "arm-blind"))
        .expect("arm-blind in the inventory");
    assert_eq!(
        w["platforms"],
        json!([
            "linux/amd64 (2 nodes)",
            "linux/arm64 (3 nodes, NodePool general)"
        ]),
        "{w}"
    );
    assert_eq!(
        w["containers"][0]["missing_platforms"],
        json!(["linux/arm64"]),
        "{w}"
    );
    wait_events(&api, "arm-blind", 1).await;
    ctl.wait_passes(1).await;
    let posted = events(&api, "arm-blind");
    assert_eq!(posted.len(), 1, "{posted:?}");
    assert_eq!(posted[0].1, "ImageUnavailable");
    assert!(
        posted[0]
            .2
            .contains("could be scheduled on linux/arm64 nodes"),
        "{posted:?}"
    );
}
