//! Leader election with the chart's 15 s Lease, on the paused clock, against the fake API
//! server (in this runtime) with kube's own client and kube-lease-manager: a replica that
//! stops gives the Lease up and the waiting replica takes over within two seconds, not when
//! the lease would have run out.

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
        recheck_interval: Duration::from_secs(900),
        calls_per_second: 10.0,
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
    Controller::start(api.client(), Arc::new(background), settings)
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
