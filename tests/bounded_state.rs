//! State keyed by what users send stays bounded: an image names its region, and each region
//! costs an SDK client. Made-up regions are refused before any client is made; real ones
//! share a small set of clients, the least recently used evicted.

mod common;

use std::sync::Arc;
use std::time::Duration;

use ecr_preflight::engine::{Engine, EngineSettings};
use ecr_preflight::findings::Outcome;
use ecr_preflight::registry::ecr::MAX_CLIENTS;
use ecr_preflight::registry::Registry;
use tokio::time::Instant;

#[tokio::test]
async fn ten_thousand_made_up_regions_make_no_sdk_client() {
    let registry = Arc::new(common::server::registry(None, Duration::from_secs(5)).await);
    let (before, _) = registry.clients();
    let engine = Engine::new(
        registry.clone(),
        EngineSettings::new(vec!["linux/amd64".parse().expect("platform")]),
    );
    let images: Vec<String> = (0..10_000)
        .map(|i| format!("123456789012.dkr.ecr.us-fake-{i}.amazonaws.com/team/app:1.0"))
        .collect();
    let reports = engine
        .check(&images, Instant::now() + Duration::from_secs(30))
        .await;
    assert_eq!(reports.len(), 10_000);
    assert!(reports
        .iter()
        .all(|r| r.outcome() == Outcome::InvalidReference));
    let why = format!("{:?}", reports[0]);
    assert!(
        why.contains("us-fake-0") && why.contains("not an AWS region this build knows"),
        "{why}"
    );
    assert_eq!(
        registry.clients().0,
        before,
        "no client for a made-up region"
    );
}

#[tokio::test]
async fn real_regions_share_a_bounded_set_of_clients() {
    let registry = Arc::new(common::server::registry(None, Duration::from_secs(5)).await);
    // The counter an engine hands its registry (ecr_preflight_ecr_clients_evicted_total).
    let evictions = prometheus_client::metrics::counter::Counter::default();
    registry.count_client_evictions(evictions.clone());
    let engine = Engine::new(
        registry.clone(),
        EngineSettings::new(vec!["linux/amd64".parse().expect("platform")]),
    );
    let regions = [
        "af-south-1",
        "ap-east-1",
        "ap-northeast-1",
        "ap-northeast-2",
        "ap-northeast-3",
        "ap-south-1",
        "ap-south-2",
        "ap-southeast-1",
        "ap-southeast-2",
        "ap-southeast-3",
        "ca-central-1",
        "eu-central-1",
        "eu-central-2",
        "eu-north-1",
        "eu-south-1",
        "eu-west-1",
        "eu-west-2",
        "eu-west-3",
        "me-central-1",
        "sa-east-1",
    ];
    let images: Vec<String> = regions
        .iter()
        .map(|r| format!("123456789012.dkr.ecr.{r}.amazonaws.com/bounded/app:1.0"))
        .collect();
    // Each answers (the emulator has no such repository): a client was made for each.
    let reports = engine
        .check(&images, Instant::now() + Duration::from_secs(30))
        .await;
    assert!(
        reports.iter().all(|r| r.outcome() == Outcome::NotFound),
        "{reports:?}"
    );
    let (kept, evicted) = registry.clients();
    assert_eq!(kept, MAX_CLIENTS);
    assert!(
        evicted >= (regions.len() + 1 - MAX_CLIENTS) as u64,
        "{evicted} evicted of {} regions (and the configured one)",
        regions.len()
    );
    assert_eq!(
        evictions.get(),
        evicted,
        "counted in ecr_preflight_ecr_clients_evicted_total"
    );
}
