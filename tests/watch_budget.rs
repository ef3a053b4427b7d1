//! The controller's background work on the paused clock, against an in-memory registry
//! that logs every call with its virtual time: the call budget, the pause under
//! throttling, admission answered while the budget is exhausted, and a pass spread over
//! the interval with every answer asked afresh the next pass.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::memory_registry::MemoryRegistry;
use common::seed::REGISTRY;
use ecr_preflight::engine::{Engine, EngineSettings};
use ecr_preflight::findings::Outcome;
use ecr_preflight::image::Registries;
use ecr_preflight::pull_secrets::Keyring;
use ecr_preflight::registry::BlobState;
use ecr_preflight::watch::inventory::{key_of, project_workload};
use ecr_preflight::watch::{
    self, ExpirySettings, Inventory, Signals, Verifier, WatchMetrics, WatchSettings,
    BACKGROUND_BLOBS, BACKGROUND_FACTS, DEFAULT_EXPIRY_WARNING,
};
use ecr_preflight::workload::WorkloadKind;
use k8s_openapi::api::core::v1::PodSpec;
use tokio::time::Instant;

fn settings(rate: f64, interval: Duration) -> WatchSettings {
    common::watch_settings(rate, interval)
}

/// The admission engine and the controller's beside it, on one registry.
fn engines(registry: &Arc<MemoryRegistry>, watch: &WatchSettings) -> (Arc<Engine>, Arc<Engine>) {
    let engine_settings = EngineSettings::new(vec!["linux/amd64".parse().expect("platform")]);
    let admission = Engine::new(registry.clone(), engine_settings.clone());
    let background =
        watch::background_engine(&admission, registry.clone(), &engine_settings, watch);
    (Arc::new(admission), Arc::new(background))
}

/// `n` repositories of one 3-blob image each; their references.
fn images(registry: &MemoryRegistry, prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let repo = format!("{prefix}/r{i:02}");
            registry.push_image(&repo, "v1", 3, BlobState::Available);
            format!("{REGISTRY}/{repo}:v1")
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn background_calls_keep_to_the_budget() {
    let registry = Arc::new(MemoryRegistry::default());
    let refs = images(&registry, "budget", 15);
    let (_, background) = engines(&registry, &settings(5.0, Duration::from_secs(900)));
    let start = Instant::now();
    let reports = background
        .check(&refs, start + Duration::from_secs(60))
        .await;
    assert!(
        reports.iter().all(|r| r.outcome() == Outcome::Ok),
        "{reports:?}"
    );
    let log = registry.log.lock().expect("lock");
    assert_eq!(
        log.len(),
        30,
        "one BatchGetImage and one check per repository"
    );
    let mut at: Vec<Duration> = log.iter().map(|c| c.at - start).collect();
    at.sort();
    for pair in at.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(200),
            "5 a second: {at:?}"
        );
    }
    assert!(at[29] >= Duration::from_millis(5800), "{at:?}");
}

#[tokio::test(start_paused = true)]
async fn admission_is_answered_while_the_background_budget_is_exhausted() {
    let registry = Arc::new(MemoryRegistry::default());
    let queued = images(&registry, "busy", 10);
    let fresh = images(&registry, "admit", 1);
    let (admission, background) = engines(&registry, &settings(0.5, Duration::from_secs(900)));
    let start = Instant::now();
    // Twenty calls at one every two seconds: the budget is spent for 40 s.
    let behind = tokio::spawn({
        let background = background.clone();
        async move {
            background
                .check(&queued, start + Duration::from_secs(120))
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let reports = admission
        .check(&fresh, Instant::now() + Duration::from_secs(3))
        .await;
    assert_eq!(reports[0].outcome(), Outcome::Ok);
    assert_eq!(
        Instant::now() - start,
        Duration::from_millis(10),
        "admission waited for nothing"
    );
    assert!(
        !behind.is_finished(),
        "the background check is still waiting for its budget"
    );
    let done = behind.await.expect("background");
    assert!(done.iter().all(|r| r.outcome() == Outcome::Ok));
    assert!(Instant::now() - start >= Duration::from_secs(38));
}

#[tokio::test(start_paused = true)]
async fn throttling_pauses_the_background_longer_each_time() {
    let registry = Arc::new(MemoryRegistry::default());
    let refs = images(&registry, "throttled", 1);
    registry
        .throttle_next
        .store(2, std::sync::atomic::Ordering::SeqCst);
    let (_, background) = engines(&registry, &settings(100.0, Duration::from_secs(900)));
    let start = Instant::now();
    let reports = background
        .check(&refs, start + Duration::from_secs(60))
        .await;
    assert_eq!(reports[0].outcome(), Outcome::Ok);
    let at: Vec<Duration> = registry
        .log
        .lock()
        .expect("lock")
        .iter()
        .map(|c| c.at - start)
        .collect();
    // Throttled, paused 1 s; throttled again, paused 2 s; then the two calls.
    assert_eq!(at.len(), 4, "{at:?}");
    assert!(at[1] - at[0] >= Duration::from_secs(1), "{at:?}");
    assert!(at[2] - at[1] >= Duration::from_secs(2), "{at:?}");
}

fn template(image: &str) -> PodSpec {
    serde_json::from_value(serde_json::json!({"containers": [{"name": "app", "image": image}]}))
        .expect("spec")
}

/// A Deployment `name` in namespace `ns` running `image`, in `inventory`.
fn deploy(inventory: &Inventory, name: &str, image: &str) {
    let meta =
        serde_json::from_value(serde_json::json!({"namespace": "ns", "name": name, "uid": name}))
            .expect("meta");
    let p = project_workload(WorkloadKind::Deployment, &meta, Some(&template(image)));
    inventory.apply(
        key_of(WorkloadKind::Deployment, &meta).expect("key"),
        Some(p),
    );
}

/// A verifier of `inventory` with `background`, a pass an `interval`, posting no Events;
/// and its metrics.
fn quiet_verifier(
    background: Arc<Engine>,
    inventory: &Arc<Inventory>,
    interval: Duration,
) -> (Verifier, Arc<WatchMetrics>) {
    let metrics: Arc<WatchMetrics> = Arc::new(Default::default());
    let verifier = Verifier::new(
        background,
        inventory.clone(),
        interval,
        Arc::new(Signals::new(
            Arc::clone(&metrics),
            false,
            DEFAULT_EXPIRY_WARNING,
            None,
        )),
        metrics.clone(),
        &ExpirySettings::default(),
    );
    (verifier, metrics)
}

#[tokio::test(start_paused = true)]
async fn a_pass_is_spread_over_the_interval_and_the_next_asks_afresh() {
    let registry = Arc::new(MemoryRegistry::default());
    let refs = images(&registry, "spread", 10);
    let interval = Duration::from_secs(100);
    let watch = settings(1000.0, interval);
    let (_, background) = engines(&registry, &watch);
    let inventory = Inventory::new(0);
    for (i, image) in refs.iter().enumerate() {
        deploy(&inventory, &format!("d{i}"), image);
    }
    let (verifier, _) = quiet_verifier(background, &inventory, interval);
    let start = Instant::now();
    let run = tokio::spawn(async move { verifier.run().await });
    tokio::time::sleep(interval + interval / 2).await;
    run.abort();

    let log = registry.log.lock().expect("lock");
    let mut firsts: Vec<(String, Duration)> = Vec::new();
    for call in log.iter().filter(|c| c.operation == "BatchGetImage") {
        if !firsts.iter().any(|(r, _)| *r == call.repository) {
            firsts.push((call.repository.clone(), call.at - start));
        }
    }
    assert_eq!(firsts.len(), 10);
    for (i, (_, at)) in firsts.iter().enumerate() {
        // Turn i of 10 at i * 9 s (90 % of the interval, spread evenly).
        let due = Duration::from_secs(9 * i as u64);
        assert!(
            *at >= due && *at < due + Duration::from_millis(50),
            "turn {i} at {at:?}"
        );
    }
    // The second pass, from 100 s on, asked ECR again for every repository, both calls.
    let second = |op: &str| {
        log.iter()
            .filter(|c| c.operation == op && c.at - start >= interval)
            .count()
    };
    assert_eq!(second("BatchGetImage"), 6, "turns at 100, 109, ..., 145 s");
    assert_eq!(second("BatchCheckLayerAvailability"), 6);
    drop(log);
    let view = inventory.view();
    assert!(view.verified_at.is_some(), "the first pass ended");
    assert!(
        view.workloads
            .iter()
            .all(|w| w.containers[0].outcome == "ok"),
        "{view:?}"
    );
}

/// One workload of `kind` using `image`, verified for 90 s (a pass a minute) with
/// `background`; the inventory and the controller's metrics.
async fn verify_one(
    background: Arc<Engine>,
    kind: WorkloadKind,
    namespace: &str,
    name: &str,
    image: &str,
) -> (Arc<Inventory>, Arc<ecr_preflight::watch::WatchMetrics>) {
    let inventory = Inventory::new(0);
    let meta = serde_json::from_value(
        serde_json::json!({"namespace": namespace, "name": name, "uid": "u"}),
    )
    .expect("meta");
    let p = project_workload(kind, &meta, Some(&template(image)));
    inventory.apply(key_of(kind, &meta).expect("key"), Some(p));
    let metrics: Arc<ecr_preflight::watch::WatchMetrics> = Arc::new(Default::default());
    let signals = Arc::new(Signals::new(
        Arc::clone(&metrics),
        true,
        DEFAULT_EXPIRY_WARNING,
        None,
    ));
    let verifier = Verifier::new(
        background,
        inventory.clone(),
        Duration::from_secs(60),
        signals,
        metrics.clone(),
        &ExpirySettings::default(),
    );
    let run = tokio::spawn(async move { verifier.run().await });
    tokio::time::sleep(Duration::from_secs(90)).await;
    run.abort();
    (inventory, metrics)
}

#[tokio::test(start_paused = true)]
async fn access_denied_is_unknown_with_its_reason_and_no_alarm() {
    let registry = Arc::new(MemoryRegistry::default());
    let refs = images(&registry, "aws-owned", 1);
    registry.fail(
        "aws-owned/r00",
        ecr_preflight::registry::RegistryError::AccessDenied {
            operation: "ecr:BatchGetImage",
        },
    );
    let (_, background) = engines(&registry, &settings(100.0, Duration::from_secs(60)));
    let (inventory, metrics) = verify_one(
        background,
        WorkloadKind::DaemonSet,
        "kube-system",
        "aws-node",
        &refs[0],
    )
    .await;
    let view = inventory.view();
    let c = &view.workloads[0].containers[0];
    assert_eq!(c.outcome, "unknown");
    let problem = c.problem.as_deref().unwrap_or_default();
    assert!(
        problem.contains("AccessDeniedException (ecr:BatchGetImage)"),
        "{problem}"
    );
    assert_eq!(metrics.events_posted(), 0, "unknown is not an alarm");
}

#[tokio::test(start_paused = true)]
async fn a_pull_through_repository_not_filled_yet_is_no_alarm() {
    let registry = Arc::new(MemoryRegistry::default());
    let image = format!("{REGISTRY}/docker-hub/library/nginx:1.27");
    let watch = settings(100.0, Duration::from_secs(60));
    let mut engine_settings = EngineSettings::new(vec!["linux/amd64".parse().expect("platform")]);
    engine_settings.pull_through_prefixes = vec!["docker-hub/".to_owned()];
    let admission = Engine::new(registry.clone(), engine_settings.clone());
    let background = Arc::new(watch::background_engine(
        &admission,
        registry.clone(),
        &engine_settings,
        &watch,
    ));
    let (inventory, metrics) =
        verify_one(background, WorkloadKind::Deployment, "web", "proxy", &image).await;
    let view = inventory.view();
    let c = &view.workloads[0].containers[0];
    assert_eq!(c.outcome, "not_found", "{c:?}");
    assert!(
        c.problem
            .as_deref()
            .unwrap_or_default()
            .contains("pull-through"),
        "{c:?}"
    );
    assert_eq!(
        metrics.events_posted(),
        0,
        "the first pull fills it: advisory, as the webhook says"
    );
}

#[tokio::test(start_paused = true)]
async fn a_workload_created_while_a_check_is_in_flight_is_verified_at_once() {
    // docs/watch.md: "new workloads are verified at once". Every call takes 5 s; a
    // Deployment on another repository arrives 1 s into the first repository's check. It
    // must be verified within seconds, not at the next pass a whole interval later.
    let registry = Arc::new(MemoryRegistry::default());
    *registry.latency.lock().expect("lock") = Duration::from_secs(5);
    let refs = images(&registry, "in-flight", 2);
    let interval = Duration::from_secs(900);
    let (_, background) = engines(&registry, &settings(1000.0, interval));
    let inventory = Inventory::new(0);
    deploy(&inventory, "old", &refs[0]);
    let (verifier, _) = quiet_verifier(background, &inventory, interval);
    let start = Instant::now();
    let run = tokio::spawn(async move { verifier.run().await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !inventory.is_verified(&refs[0]),
        "the first check is still in flight"
    );
    deploy(&inventory, "new", &refs[1]);
    tokio::time::sleep(Duration::from_secs(30)).await;
    run.abort();

    let view = inventory.view();
    let new = view
        .workloads
        .iter()
        .find(|w| w.name == "new")
        .expect("new");
    assert_eq!(new.containers[0].outcome, "ok", "{new:?}");
    let first = registry
        .log
        .lock()
        .expect("lock")
        .iter()
        .find(|c| c.repository == "in-flight/r01")
        .map(|c| c.at - start)
        .expect("the new repository was asked");
    assert!(
        first <= Duration::from_secs(12),
        "asked {first:?} after start: right after the check in flight (10 s), not at the next pass"
    );
}

#[tokio::test(start_paused = true)]
async fn a_budget_that_cannot_cover_a_pass_is_said_once_measured_and_shown() {
    let (logs, _guard) = common::logs::capture("ecr_preflight=info");
    let registry = Arc::new(MemoryRegistry::default());
    let refs = images(&registry, "short", 10);
    let interval = Duration::from_secs(60);
    // 0.1 calls a second over 90 % of a minute: 5 calls a pass, for 10 repositories.
    let (_, background) = engines(&registry, &settings(0.1, interval));
    let inventory = Inventory::new(0);
    for (i, image) in refs.iter().enumerate() {
        deploy(&inventory, &format!("d{i}"), image);
    }
    let (verifier, metrics) = quiet_verifier(background, &inventory, interval);
    let verifier = verifier.with_budget(watch::Rates {
        ecr_calls: 0.1,
        registry_requests: 0.1,
    });
    let run = tokio::spawn(async move { verifier.run().await });
    // A pass takes about 200 s at this rate: two passes and the start of a third.
    tokio::time::sleep(interval * 8).await;
    run.abort();
    let asked = registry.calls_per_repository("BatchGetImage");
    assert!(
        asked.values().all(|n| *n >= 2),
        "every repository verified twice: {asked:?}"
    );

    let budget = inventory.view().budget.expect("the pass's budget");
    assert_eq!(
        (
            budget.repositories,
            budget.calls_needed,
            budget.calls_available,
            budget.fits
        ),
        (10, 20, 5, false),
        "{budget:?}"
    );
    assert_eq!(metrics.pass_budget_ratio.get(), 4.0);
    assert_eq!(
        logs.count("the background budget cannot verify every repository"),
        1,
        "told once, not every pass: {:?}",
        logs.lines()
    );
}

/// A pass over more repositories than the controller's caches hold: they keep what one
/// repository's verification needs, not the whole pass, and the calls stay at the minimum
/// (a manifest read again by the platform check would be a third call).
#[tokio::test(start_paused = true)]
async fn the_controllers_caches_hold_a_repository_at_a_time_and_the_calls_stay_minimal() {
    let registry = Arc::new(MemoryRegistry::default());
    let repositories = 1_500;
    let refs: Vec<String> = (0..repositories)
        .map(|i| {
            let repo = format!("many/r{i:04}");
            registry.push_image(&repo, "v1", 15, BlobState::Available);
            format!("{REGISTRY}/{repo}:v1")
        })
        .collect();
    let (_, background) = engines(&registry, &settings(10_000.0, Duration::from_secs(900)));
    let inventory = Inventory::new(0);
    for image in &refs {
        watch::verify::record(
            &background,
            &inventory,
            (vec![image.clone()], &Keyring::default()),
            Duration::from_secs(60),
            false,
        )
        .await;
    }
    let (tags, manifests, blobs) = background.cache_sizes();
    assert!(
        tags <= BACKGROUND_FACTS && manifests <= BACKGROUND_FACTS && blobs <= BACKGROUND_BLOBS,
        "{tags} tags, {manifests} manifests, {blobs} blobs kept"
    );
    assert!(tags > 0 && blobs > 0, "the caches are in use");
    assert_eq!(registry.log.lock().expect("lock").len(), 2 * repositories);
    assert!(refs.iter().all(|image| inventory.is_verified(image)));
}

#[tokio::test(start_paused = true)]
async fn another_registrys_pass_is_assessed_in_requests_from_the_blobs_counted() {
    let (logs, _guard) = common::logs::capture("ecr_preflight=info");
    let registry = Arc::new(MemoryRegistry::default());
    // 10 repositories of ghcr.io, 3 tags each, every image of 4 blobs of its own: a pass
    // needs 3 manifest HEADs and 12 blob HEADs a repository, 150 in all.
    let mut refs = Vec::new();
    for r in 0..10 {
        for t in 0..3 {
            registry.push_image(
                &format!("org/r{r}"),
                &format!("v{t}"),
                4,
                BlobState::Available,
            );
            refs.push(format!("ghcr.io/org/r{r}:v{t}"));
        }
    }
    let interval = Duration::from_secs(60);
    let engine_settings = EngineSettings {
        registries: Registries::All,
        ..EngineSettings::new(vec!["linux/amd64".parse().expect("platform")])
    };
    let admission = Engine::new(registry.clone(), engine_settings.clone());
    let background = Arc::new(watch::background_engine(
        &admission,
        registry.clone(),
        &engine_settings,
        &settings(100.0, interval),
    ));
    let inventory = Inventory::new(0);
    for (i, image) in refs.iter().enumerate() {
        deploy(&inventory, &format!("d{i}"), image);
    }
    let (verifier, _) = quiet_verifier(background, &inventory, interval);
    // 2 requests a second over 90 % of a minute: 108 a pass.
    let verifier = verifier.with_budget(watch::Rates {
        ecr_calls: 100.0,
        registry_requests: 2.0,
    });
    let run = tokio::spawn(async move { verifier.run().await });
    // Before the first pass nothing was counted: 3 HEADs and 2 blobs a repository, 50.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let first = inventory.view().budget.expect("assessed");
    assert_eq!(
        (
            first.registry.as_str(),
            first.unit.as_str(),
            first.calls_needed,
            first.calls_available,
            first.fits
        ),
        ("ghcr.io", "requests", 50, 108, true)
    );
    // Before the second: the distinct blobs the first counted.
    tokio::time::sleep(interval * 2).await;
    run.abort();
    let second = inventory.view().budget.expect("assessed");
    assert_eq!(
        (second.repositories, second.calls_needed, second.fits),
        (10, 150, false),
        "{second:?}"
    );
    let told = logs.lines();
    let line = told
        .iter()
        .find(|l| l.contains("the background budget cannot verify every repository"))
        .expect("told");
    assert!(line.contains("--registry-requests-per-second"), "{line}");
}
