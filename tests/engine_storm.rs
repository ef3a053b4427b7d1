//! Call counts under concurrency: single-flight, coalescing, and what the caches save.
//! Counts, not times: the engine with a counting registry behind the seam, requests released
//! together by a barrier, tokio time paused so the batching window is deterministic.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::memory_registry::{oci_manifest, MemoryRegistry};
use common::seed::{sha256, OCI_INDEX, OCI_MANIFEST, REGISTRY};
use ecr_preflight::engine::{Engine, EngineSettings};
use ecr_preflight::registry::BlobState;
use ecr_preflight::report::Outcome;
use serde_json::json;
use tokio::sync::Barrier;
use tokio::time::Instant;

fn engine(registry: Arc<MemoryRegistry>) -> Arc<Engine> {
    Arc::new(Engine::new(
        registry,
        EngineSettings::new(vec![
            "linux/amd64".parse().expect("p"),
            "linux/arm64".parse().expect("p"),
        ]),
    ))
}

/// Runs `admissions` concurrent checks, each of its own list of images, released together.
async fn storm(engine: &Arc<Engine>, admissions: Vec<Vec<String>>) -> Vec<Vec<Outcome>> {
    let barrier = Arc::new(Barrier::new(admissions.len()));
    let tasks: Vec<_> = admissions
        .into_iter()
        .map(|images| {
            let (engine, barrier) = (engine.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let reports = engine
                    .check(&images, Instant::now() + Duration::from_secs(3))
                    .await;
                reports.iter().map(|r| r.outcome()).collect::<Vec<_>>()
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("join"));
    }
    out
}

#[tokio::test(start_paused = true)]
async fn a_thousand_admissions_of_one_new_image_make_one_lookup_and_ceil_blobs_over_100_checks() {
    let reg = Arc::new(MemoryRegistry::default());
    reg.push_image("team/app", "1.0", 250, BlobState::Available);
    let engine = engine(reg.clone());
    let image = format!("{REGISTRY}/team/app:1.0");
    let outcomes = storm(&engine, vec![vec![image]; 1000]).await;
    assert!(outcomes.iter().all(|o| o == &[Outcome::Ok]));
    assert_eq!(
        reg.calls(),
        (1, 3),
        "1 tag resolution, ceil(250/100) = 3 blob checks"
    );
}

#[tokio::test(start_paused = true)]
async fn a_thousand_admissions_of_one_new_index_add_one_child_fetch() {
    let reg = Arc::new(MemoryRegistry::default());
    let mut entries = Vec::new();
    for arch in ["amd64", "arm64"] {
        let blobs: Vec<String> = (0..60)
            .map(|i| sha256(format!("{arch}-{i}").as_bytes()))
            .collect();
        for b in &blobs {
            reg.blob("team/multi", b, BlobState::Available);
        }
        let digest = reg.put("team/multi", None, &oci_manifest(&blobs), OCI_MANIFEST);
        entries.push(json!({"mediaType": OCI_MANIFEST, "digest": digest, "size": 1, "platform": {"os": "linux", "architecture": arch}}));
    }
    reg.put(
        "team/multi",
        Some("1"),
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).to_string(),
        OCI_INDEX,
    );
    let engine = engine(reg.clone());
    let outcomes = storm(
        &engine,
        vec![vec![format!("{REGISTRY}/team/multi:1")]; 1000],
    )
    .await;
    assert!(outcomes.iter().all(|o| o == &[Outcome::Ok]));
    assert_eq!(
        reg.calls(),
        (2, 2),
        "tag + children lookups; 120 blobs = 2 checks"
    );
}

#[tokio::test(start_paused = true)]
async fn a_thousand_admissions_over_a_hundred_images_in_ten_repositories_coalesce_per_repository() {
    let reg = Arc::new(MemoryRegistry::default());
    let mut images = Vec::new();
    for r in 0..10 {
        for i in 0..10 {
            // 10 images × 8 blobs = 80 blobs per repository: one check each.
            reg.push_image(
                &format!("team/r{r}"),
                &format!("v{i}"),
                8,
                BlobState::Available,
            );
            images.push(format!("{REGISTRY}/team/r{r}:v{i}"));
        }
    }
    let engine = engine(reg.clone());
    let admissions: Vec<Vec<String>> = (0..1000).map(|n| vec![images[n % 100].clone()]).collect();
    let outcomes = storm(&engine, admissions).await;
    assert!(outcomes.iter().all(|o| o == &[Outcome::Ok]));
    let (gets, checks) = reg.calls();
    assert!(
        checks <= 10,
        "at most 10 × ceil(80/100) blob checks, saw {checks}"
    );
    assert_eq!(gets, 10, "one tag lookup per repository");
}

#[tokio::test(start_paused = true)]
async fn more_than_a_hundred_blobs_per_repository_split_into_full_batches() {
    let reg = Arc::new(MemoryRegistry::default());
    let mut images = Vec::new();
    for i in 0..10 {
        // 10 images × 25 blobs = 250 distinct blobs in one repository.
        reg.push_image("team/wide", &format!("v{i}"), 25, BlobState::Available);
        images.push(format!("{REGISTRY}/team/wide:v{i}"));
    }
    let engine = engine(reg.clone());
    let admissions: Vec<Vec<String>> = (0..500).map(|n| vec![images[n % 10].clone()]).collect();
    storm(&engine, admissions).await;
    let (gets, checks) = reg.calls();
    assert_eq!((gets, checks), (1, 3), "ceil(250/100) blob checks");
    assert_eq!(
        reg.max_digests_per_call
            .load(std::sync::atomic::Ordering::SeqCst),
        100
    );
}

/// The caches run on tokio's clock: lifetimes are crossed by advancing the paused clock.
#[tokio::test(start_paused = true)]
async fn warm_caches_need_no_call_and_a_cached_manifest_needs_only_the_blob_check() {
    let reg = Arc::new(MemoryRegistry::default());
    reg.push_image("team/app", "1", 5, BlobState::Available);
    let mut settings = EngineSettings::new(vec!["linux/amd64".parse().expect("p")]);
    settings.cache.tag_ttl = Duration::from_secs(60);
    settings.cache.blob_ttl = Duration::from_secs(600);
    let engine = Engine::new(reg.clone(), settings);
    let image = format!("{REGISTRY}/team/app:1");
    let deadline = || Instant::now() + Duration::from_secs(3);
    engine.check(std::slice::from_ref(&image), deadline()).await;
    assert_eq!(reg.calls(), (1, 1));
    let again = engine.check(std::slice::from_ref(&image), deadline()).await;
    assert_eq!(again[0].outcome(), Outcome::Ok);
    assert_eq!(reg.calls(), (1, 1), "fully cached: 0 round trips");

    // Just before the tag's lifetime ends, still no call; just after, the tag is asked
    // again, and the manifest (by digest) and the blobs are still cached.
    tokio::time::advance(Duration::from_secs(59)).await;
    engine.check(std::slice::from_ref(&image), deadline()).await;
    assert_eq!(reg.calls(), (1, 1), "within the tag's lifetime");
    tokio::time::advance(Duration::from_secs(2)).await;
    engine.check(std::slice::from_ref(&image), deadline()).await;
    assert_eq!(reg.calls(), (2, 1), "only the tag is resolved again");

    // By digest, with the manifest cached and the blobs expired: one blob check.
    tokio::time::advance(Duration::from_secs(600)).await;
    let digest = reg
        .manifests
        .lock()
        .expect("lock")
        .get(&("team/app".to_owned(), "1".to_owned()))
        .map(|m| m.digest.clone())
        .expect("digest");
    let by_digest = format!("{REGISTRY}/team/app@{digest}");
    engine.check(&[by_digest], deadline()).await;
    assert_eq!(reg.calls(), (2, 2));
}

#[tokio::test(start_paused = true)]
async fn missing_blobs_and_unknown_tags_are_asked_again_so_a_repush_is_seen_at_once() {
    let reg = Arc::new(MemoryRegistry::default());
    let blobs = reg.push_image("team/app", "1", 3, BlobState::Available);
    reg.blob("team/app", &blobs[2], BlobState::Missing);
    let engine = engine(reg.clone());
    let deadline = || Instant::now() + Duration::from_secs(3);
    let image = format!("{REGISTRY}/team/app:1");
    let first = engine.check(std::slice::from_ref(&image), deadline()).await;
    assert_eq!(first[0].outcome(), Outcome::Missing);
    reg.blob("team/app", &blobs[2], BlobState::Available);
    let second = engine.check(std::slice::from_ref(&image), deadline()).await;
    assert_eq!(
        second[0].outcome(),
        Outcome::Ok,
        "the re-pushed blob is seen immediately"
    );
    assert_eq!(
        reg.calls(),
        (1, 2),
        "only the previously missing blob is asked again"
    );

    let later = format!("{REGISTRY}/team/app:2");
    assert_eq!(
        engine.check(std::slice::from_ref(&later), deadline()).await[0].outcome(),
        Outcome::NotFound
    );
    reg.push_image("team/app", "2", 1, BlobState::Available);
    assert_eq!(
        engine.check(std::slice::from_ref(&later), deadline()).await[0].outcome(),
        Outcome::Ok
    );
}

#[tokio::test(start_paused = true)]
async fn cache_keys_include_the_registry() {
    let reg = Arc::new(MemoryRegistry::default());
    reg.push_image("team/app", "1", 2, BlobState::Available);
    let engine = engine(reg.clone());
    let deadline = || Instant::now() + Duration::from_secs(3);
    engine
        .check(&[format!("{REGISTRY}/team/app:1")], deadline())
        .await;
    // Same repository and tag in another account: nothing from the first may be reused.
    engine
        .check(
            &["210987654321.dkr.ecr.us-east-1.amazonaws.com/team/app:1".to_owned()],
            deadline(),
        )
        .await;
    engine
        .check(
            &["123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/app:1".to_owned()],
            deadline(),
        )
        .await;
    assert_eq!(reg.calls(), (3, 3));
}

#[tokio::test(start_paused = true)]
async fn throttling_is_retried_within_the_budget() {
    let reg = Arc::new(MemoryRegistry::default());
    reg.push_image("team/app", "1", 2, BlobState::Available);
    reg.throttle_next
        .store(2, std::sync::atomic::Ordering::SeqCst);
    let engine = engine(reg.clone());
    let reports = engine
        .check(
            &[format!("{REGISTRY}/team/app:1")],
            Instant::now() + Duration::from_secs(3),
        )
        .await;
    assert_eq!(reports[0].outcome(), Outcome::Ok);
    assert_eq!(reg.calls(), (3, 1), "two throttled lookups, then success");
    assert_eq!(
        engine
            .stats()
            .batch_get_image
            .load(std::sync::atomic::Ordering::SeqCst),
        3
    );
}

#[tokio::test(start_paused = true)]
async fn throttling_past_the_budget_is_unknown_and_not_retried_forever() {
    let reg = Arc::new(MemoryRegistry::default());
    reg.push_image("team/app", "1", 2, BlobState::Available);
    reg.throttle_next
        .store(usize::MAX, std::sync::atomic::Ordering::SeqCst);
    let engine = engine(reg.clone());
    let start = Instant::now();
    let reports = engine
        .check(
            &[format!("{REGISTRY}/team/app:1")],
            start + Duration::from_millis(500),
        )
        .await;
    assert_eq!(reports[0].outcome(), Outcome::Unknown);
    assert!(start.elapsed() <= Duration::from_millis(500));
    let (gets, _) = reg.calls();
    assert!(
        (2..20).contains(&gets),
        "retried a few times within 500 ms, not more: {gets}"
    );
}
