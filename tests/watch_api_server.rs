//! The controller and the API server, on the paused clock, against the fake API server (in
//! this runtime) with kube's own client, watchers and kube-lease-manager:
//! - leader election with the chart's 15 s Lease: a replica that stops gives the Lease up
//!   and the waiting replica takes over within two seconds, not when the lease would have
//!   run out;
//! - an API server outage is told as one story: one line per watcher when it is lost, one
//!   when it is back, and none of kube's own request errors at the default log level.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::fake_apiserver::FakeApiServer;
use common::memory_registry::MemoryRegistry;
use ecr_preflight::engine::{Engine, EngineSettings};
use ecr_preflight::watch::{
    self, Controller, ExpirySettings, Namespaces, WatchSettings, DEFAULT_EXPIRY_WARNING,
};
use tokio::time::Instant;

/// The chart's `watch.leaseDurationSeconds`.
const CHART_LEASE: Duration = Duration::from_secs(15);

fn replica(api: &FakeApiServer, identity: &str) -> Controller {
    let registry = Arc::new(MemoryRegistry::default());
    let settings = WatchSettings {
        read_pull_secrets: false,
        recheck_interval: Duration::from_secs(900),
        calls_per_second: 10.0,
        registry_requests_per_second: ecr_preflight::watch::DEFAULT_REGISTRY_REQUESTS_PER_SECOND,
        namespaces: Namespaces::default(),
        workload_metrics: false,
        leader_election: true,
        lease_namespace: "ecr-preflight".into(),
        lease_duration: CHART_LEASE,
        identity: identity.into(),
        expiry: ExpirySettings {
            warning: DEFAULT_EXPIRY_WARNING,
            ..ExpirySettings::default()
        },
    };
    let engine_settings = EngineSettings::new(vec!["linux/amd64".parse().expect("platform")]);
    let admission = Engine::new(registry.clone(), engine_settings.clone());
    let background = watch::background_engine(&admission, registry, &engine_settings, &settings);
    Controller::start(api.controller_client(), Arc::new(background), settings)
}

fn holder(api: &FakeApiServer) -> Option<String> {
    api.objects("Lease")
        .first()
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
}

/// Waits (on the paused clock) until `holder` is `want`; how long it took.
async fn until_held_by(api: &FakeApiServer, want: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    while holder(api).as_deref() != Some(want) {
        assert!(
            start.elapsed() < limit,
            "{want} does not hold the Lease after {limit:?}: {:?}",
            holder(api)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    start.elapsed()
}

#[tokio::test(start_paused = true)]
async fn a_stopped_leader_hands_the_chart_lease_over_within_two_seconds() {
    let api = FakeApiServer::start().await;
    let alpha = replica(&api, "alpha");
    until_held_by(&api, "alpha", Duration::from_secs(10)).await;
    let beta = replica(&api, "beta");
    // Several renewals later, alpha still leads and beta waits.
    tokio::time::sleep(CHART_LEASE * 3).await;
    assert_eq!(holder(&api).as_deref(), Some("alpha"));
    assert_eq!(alpha.metrics.leader.get(), 1);
    assert_eq!(beta.metrics.leader.get(), 0);

    // SIGTERM: alpha gives the Lease up; beta takes it at once.
    alpha.stop().await;
    assert_eq!(alpha.metrics.leader.get(), 0);
    let took = until_held_by(&api, "beta", CHART_LEASE).await;
    assert!(took <= Duration::from_secs(2), "beta took {took:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(beta.metrics.leader.get(), 1);

    // And back: beta stops, a third replica waiting takes over as fast.
    let gamma = replica(&api, "gamma");
    tokio::time::sleep(CHART_LEASE * 2).await;
    assert_eq!(holder(&api).as_deref(), Some("beta"));
    beta.stop().await;
    let took = until_held_by(&api, "gamma", CHART_LEASE).await;
    assert!(took <= Duration::from_secs(2), "gamma took {took:?}");
    gamma.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_api_server_outage_is_one_line_per_watcher_lost_and_one_back() {
    let (logs, _guard) = common::logs::capture(ecr_preflight::logging::DEFAULT_FILTER);
    let api = FakeApiServer::start().await;
    let replica = replica(&api, "alpha");
    until_held_by(&api, "alpha", Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(replica.inventory.is_synced());
    let before = logs.lines().len();

    // Ten seconds down, then back; the watchers retry with kube's back-off.
    api.unavailable(true);
    tokio::time::sleep(Duration::from_secs(10)).await;
    api.unavailable(false);
    tokio::time::sleep(Duration::from_secs(90)).await;

    let lines: Vec<String> = logs.lines().split_off(before);
    eprintln!("{}", lines.join("\n"));
    let watched = [
        "Deployment",
        "StatefulSet",
        "DaemonSet",
        "ReplicaSet",
        "Job",
        "CronJob",
        "ReplicationController",
        "Pod",
        "Node",
        "NodePool",
    ];
    for resource in watched {
        let of = |text: &str| {
            lines
                .iter()
                .filter(|l| l.contains(text) && l.contains(&format!("resource=\"{resource}\"")))
                .count()
        };
        assert_eq!(of("lost the API server"), 1, "{resource}: {lines:#?}");
        assert_eq!(
            of("reaches the API server again"),
            1,
            "{resource}: {lines:#?}"
        );
    }
    // The Lease's keeper tells the same story when a renewal fell in the outage.
    let lease = |text: &str| {
        lines
            .iter()
            .filter(|l| l.contains(text) && l.contains("resource=\"Lease\""))
            .count()
    };
    assert!(lease("lost the API server") <= 1, "{lines:#?}");
    assert_eq!(
        lease("lost the API server"),
        lease("reaches the API server again"),
        "{lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("failed with status")),
        "kube's own request errors are left to debug: {lines:#?}"
    );
    let loud = lines
        .iter()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .count();
    assert!(
        loud <= watched.len() + 1,
        "one warning per watcher (and the Lease's keeper): {loud} in {lines:#?}"
    );
}
