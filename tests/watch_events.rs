//! Events leave through a paced queue: a repository deleted under 500 workloads neither
//! stalls the pass (which ends while its Warnings are still being posted) nor floods the
//! API server (never more than `in_flight` POSTs at once, never faster than the bucket).
//! Kube's own client and recorder post to the fake API server over HTTP.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::fake_apiserver::FakeApiServer;
use common::memory_registry::MemoryRegistry;
use common::seed::REGISTRY;
use ecr_preflight::engine::{Engine, EngineSettings};
use ecr_preflight::registry::BlobState;
use ecr_preflight::watch::inventory::{key_of, project_workload};
use ecr_preflight::watch::{
    self, EventPace, EventSink, ExpirySettings, Inventory, Signals, Verifier, WatchMetrics,
    WatchSettings, DEFAULT_EXPIRY_WARNING,
};
use ecr_preflight::workload::WorkloadKind;
use kube::runtime::events::Reporter;

const WORKLOADS: usize = 500;

fn settings(interval: Duration) -> WatchSettings {
    WatchSettings {
        expiry: ExpirySettings {
            forecast: false,
            ..ExpirySettings::default()
        },
        ..common::watch_settings(1000.0, interval)
    }
}

/// Waits (bounded) until `done` holds.
async fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_deleted_under_500_workloads_neither_stalls_the_pass_nor_floods_the_api_server(
) {
    let api = FakeApiServer::start().await;
    // Each Event takes the API server 20 ms: posted one after another inside the pass, 500
    // would hold it for 10 s.
    api.slow_events(Duration::from_millis(20));
    let registry = Arc::new(MemoryRegistry::default());
    registry.push_image("kept/app", "v1", 3, BlobState::Available);
    let interval = Duration::from_secs(3600);
    let watch_settings = settings(interval);
    let engine_settings = EngineSettings::new(vec!["linux/amd64".parse().expect("platform")]);
    let admission = Engine::new(registry.clone(), engine_settings.clone());
    let background = Arc::new(watch::background_engine(
        &admission,
        registry.clone(),
        &engine_settings,
        &watch_settings,
    ));
    let inventory = Inventory::new(0);
    for i in 0..WORKLOADS {
        // The repository `deleted/app` is gone: every image of it is not found.
        let image = format!("{REGISTRY}/deleted/app:v{}", i % 10);
        let meta = serde_json::from_value(
            serde_json::json!({"namespace": "ns", "name": format!("w{i:03}"), "uid": format!("u{i}")}),
        )
        .expect("meta");
        let spec = serde_json::from_value(
            serde_json::json!({"containers": [{"name": "app", "image": image}]}),
        )
        .expect("spec");
        inventory.apply(
            key_of(WorkloadKind::Deployment, &meta).expect("key"),
            Some(project_workload(
                WorkloadKind::Deployment,
                &meta,
                Some(&spec),
            )),
        );
    }
    let pace = EventPace {
        per_second: 200.0,
        burst: 20,
        in_flight: 4,
        queue: 1000,
    };
    let metrics: Arc<WatchMetrics> = Arc::new(Default::default());
    let signals = Arc::new(Signals::new(
        metrics.clone(),
        false,
        DEFAULT_EXPIRY_WARNING,
        Some(EventSink {
            client: api.controller_client(),
            reporter: Reporter {
                controller: "ecr-preflight".into(),
                instance: Some("test".into()),
            },
            pace,
        }),
    ));
    let verifier = Verifier::new(
        background,
        inventory.clone(),
        interval,
        signals,
        metrics.clone(),
        &watch_settings.expiry,
    );
    let started = std::time::Instant::now();
    let run = tokio::spawn(async move { verifier.run().await });

    // The pass, its Events told included, ends (its duration is set) long before the
    // API server has answered them all.
    wait_for("the pass to end", || metrics.cycle_duration.get() > 0.0).await;
    let (at_pass_end, _) = api.event_posts();
    assert!(
        at_pass_end.len() < WORKLOADS / 2,
        "the pass waited for {} Events",
        at_pass_end.len()
    );
    assert_eq!(
        metrics.events_of("ImageUnavailable"),
        WORKLOADS as u64,
        "every workload is told"
    );

    wait_for("every Event posted", || {
        api.event_posts().0.len() >= WORKLOADS
    })
    .await;
    let (posts, most_at_once) = api.event_posts();
    assert_eq!(posts.len(), WORKLOADS, "each Event posted once");
    assert!(
        (1..=pace.in_flight).contains(&most_at_once),
        "{most_at_once} Event POSTs at once"
    );
    // Never faster than the bucket: by any moment, at most the burst and what refilled since.
    for (i, at) in posts.iter().enumerate() {
        let allowed = f64::from(pace.burst) + (*at - started).as_secs_f64() * pace.per_second;
        assert!(
            (i + 1) as f64 <= allowed + 1.0,
            "Event {} arrived {:?} in: faster than {} a second after a burst of {}",
            i + 1,
            *at - started,
            pace.per_second,
            pace.burst
        );
    }
    assert_eq!(metrics.events_dropped(), 0);
    run.abort();
}
