//! Call counts under concurrency: single-flight, coalescing, and what the caches save.
//! Counts, not times: the engine with a counting registry behind the seam, requests released
//! together by a barrier, tokio time paused so the batching window is deterministic.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::memory_registry::{oci_manifest, Call, MemoryRegistry};
use common::seed::{sha256, OCI_INDEX, OCI_MANIFEST, REGISTRY};
use ecr_preflight::engine::{Engine, EngineSettings};
use ecr_preflight::findings::Outcome;
use ecr_preflight::registry::BlobState;
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

/// An index of linux/amd64 and linux/arm64 children of `blobs` blobs each, under `tag`;
/// returns the children's digests.
fn push_index(reg: &MemoryRegistry, repo: &str, tag: &str, blobs: usize) -> Vec<String> {
    let mut entries = Vec::new();
    let mut children = Vec::new();
    for arch in ["amd64", "arm64"] {
        let blobs: Vec<String> = (0..blobs)
            .map(|i| sha256(format!("{repo}:{tag}:{arch}-{i}").as_bytes()))
            .collect();
        for b in &blobs {
            reg.blob(repo, b, BlobState::Available);
        }
        let digest = reg.put(repo, None, &oci_manifest(&blobs), OCI_MANIFEST);
        entries.push(json!({"mediaType": OCI_MANIFEST, "digest": digest, "size": 1, "platform": {"os": "linux", "architecture": arch}}));
        children.push(digest);
    }
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
    reg.put(repo, Some(tag), &index.to_string(), OCI_INDEX);
    children
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
    push_index(&reg, "team/multi", "1", 60);
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

/// 100 images, 10 in each of 10 repositories, of 8 blobs each: 80 blobs a repository, one
/// check's worth.
fn hundred_images(reg: &MemoryRegistry) -> Vec<String> {
    let mut images = Vec::new();
    for r in 0..10 {
        for i in 0..10 {
            let (repo, tag) = (format!("team/r{r}"), format!("v{i}"));
            reg.push_image(&repo, &tag, 8, BlobState::Available);
            images.push(format!("{REGISTRY}/{repo}:{tag}"));
        }
    }
    images
}

#[tokio::test(start_paused = true)]
async fn a_thousand_admissions_over_a_hundred_images_in_ten_repositories_coalesce_per_repository() {
    let reg = Arc::new(MemoryRegistry::default());
    let images = hundred_images(&reg);
    let engine = engine(reg.clone());
    let admissions: Vec<Vec<String>> = (0..1000).map(|n| vec![images[n % 100].clone()]).collect();
    let outcomes = storm(&engine, admissions).await;
    assert!(outcomes.iter().all(|o| o == &[Outcome::Ok]));
    // Released together, the admissions of one repository all join the call its first one
    // opened (it leaves once the tasks already woken have run); the same for the blobs (80
    // a repository: under 100 a call).
    let (gets, checks) = reg.calls();
    assert_eq!(
        (gets, checks),
        (10, 10),
        "1 call of each kind per repository"
    );
}

/// The storm as it reaches a webhook: 100 clients, each sending its 10 admissions one after
/// another, starting up to 9 ms apart, against a registry answering in 5 ms. Keys that
/// arrive while a call is in flight wait for it to return, so no repository sees more than
/// 3 calls of either operation however the arrivals fall.
#[tokio::test(start_paused = true)]
async fn a_hundred_clients_over_a_hundred_images_make_at_most_three_calls_a_repository() {
    let reg = Arc::new(MemoryRegistry::default());
    let images = hundred_images(&reg);
    *reg.latency.lock().expect("lock") = Duration::from_millis(5);
    let engine = engine(reg.clone());
    let admissions: Vec<String> = (0..1000).map(|n| images[n % 100].clone()).collect();
    let admissions = Arc::new(admissions);
    let clients: Vec<_> = (0..100)
        .map(|c| {
            let (engine, admissions) = (engine.clone(), admissions.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(c as u64 % 10)).await;
                let mut outcomes = Vec::new();
                for image in admissions.iter().skip(c).step_by(100) {
                    let deadline = Instant::now() + Duration::from_secs(3);
                    let reports = engine.check(std::slice::from_ref(image), deadline).await;
                    outcomes.push(reports[0].outcome());
                }
                outcomes
            })
        })
        .collect();
    for client in clients {
        let outcomes = client.await.expect("join");
        assert_eq!(outcomes, vec![Outcome::Ok; 10]);
    }
    for operation in ["BatchGetImage", "BatchCheckLayerAvailability"] {
        let per_repo = reg.calls_per_repository(operation);
        assert_eq!(per_repo.len(), 10, "{operation}: {per_repo:?}");
        assert!(
            per_repo.values().all(|&n| (2..=3).contains(&n)),
            "{operation}: arrivals over 9 ms against 5 ms calls make 2 or 3 a repository: {per_repo:?}"
        );
    }
}

/// One admission of `image` (in the test registry) with a 100 ms window, checked intact;
/// returns when it started and the calls made.
async fn lone_admission(reg: &Arc<MemoryRegistry>, image: &str) -> (Instant, Vec<Call>) {
    let mut settings = EngineSettings::new(vec!["linux/amd64".parse().expect("p")]);
    settings.batch_window = Duration::from_millis(100);
    let engine = Engine::new(reg.clone(), settings);
    let start = Instant::now();
    let images = [format!("{REGISTRY}/{image}")];
    let reports = engine.check(&images, start + Duration::from_secs(3)).await;
    assert_eq!(reports[0].outcome(), Outcome::Ok);
    let log = reg.log.lock().expect("lock").clone();
    (start, log)
}

/// Nagle's rule, first half: an admission that finds the repository idle sends at once,
/// however long the window (no virtual time passes before its call).
#[tokio::test(start_paused = true)]
async fn a_lone_admission_is_sent_without_waiting_for_the_window() {
    let reg = Arc::new(MemoryRegistry::default());
    reg.push_image("team/app", "1", 3, BlobState::Available);
    let (start, log) = lone_admission(&reg, "team/app:1").await;
    let made: Vec<(&str, Duration)> = log.iter().map(|c| (c.operation, c.at - start)).collect();
    assert_eq!(
        made,
        [
            ("BatchGetImage", Duration::ZERO),
            ("BatchCheckLayerAvailability", Duration::ZERO)
        ],
        "a call waited for the window"
    );
    assert_eq!(start.elapsed(), Duration::ZERO);
}

/// The same for an index: tag, children and blobs, three calls one after another, none of
/// them waiting (the children's lookup follows a call of the same operation that has just
/// returned: that is no reason to wait).
#[tokio::test(start_paused = true)]
async fn a_lone_index_makes_its_three_calls_without_waiting_for_the_window() {
    let reg = Arc::new(MemoryRegistry::default());
    let children = push_index(&reg, "team/multi", "1", 3);
    *reg.latency.lock().expect("lock") = Duration::from_millis(20);
    let (start, log) = lone_admission(&reg, "team/multi:1").await;
    let made: Vec<(&str, Duration, usize)> = log
        .iter()
        .map(|c| (c.operation, c.at - start, c.keys.len()))
        .collect();
    let rtt = Duration::from_millis(20);
    assert_eq!(
        made,
        [
            ("BatchGetImage", Duration::ZERO, 1),
            ("BatchGetImage", rtt, 1),
            ("BatchCheckLayerAvailability", rtt * 2, 3),
        ],
        "a call waited for the window, or more were made"
    );
    assert_eq!(log[1].keys, [format!("digest {}", children[0])]);
    assert_eq!(start.elapsed(), rtt * 3);
}

/// Four admissions of tags "a" to "d": "a" alone, the others 10 ms later, while its call
/// (of `latency`) is in flight. Returns each `BatchGetImage` call's time and ids.
async fn follow_up_calls(latency: Duration, window: Duration) -> Vec<(Duration, Vec<String>)> {
    let reg = Arc::new(MemoryRegistry::default());
    for tag in ["a", "b", "c", "d"] {
        reg.push_image("team/app", tag, 2, BlobState::Available);
    }
    *reg.latency.lock().expect("lock") = latency;
    let mut settings = EngineSettings::new(vec!["linux/amd64".parse().expect("p")]);
    settings.batch_window = window;
    let engine = Arc::new(Engine::new(reg.clone(), settings));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(5);
    let check = |tag: &str| {
        let (engine, image) = (engine.clone(), format!("{REGISTRY}/team/app:{tag}"));
        tokio::spawn(async move { engine.check(&[image], deadline).await })
    };
    let first = check("a");
    tokio::time::sleep(Duration::from_millis(10)).await;
    let later: Vec<_> = ["b", "c", "d"].into_iter().map(check).collect();
    for task in std::iter::once(first).chain(later) {
        let reports = task.await.expect("join");
        assert_eq!(reports[0].outcome(), Outcome::Ok);
    }
    let log = reg.log.lock().expect("lock").clone();
    log.iter()
        .filter(|c| c.operation == "BatchGetImage")
        .map(|c| (c.at - start, c.keys.clone()))
        .collect()
}

/// Asserts that [`follow_up_calls`] made "a" at once and "b", "c", "d" in one call at `at`.
async fn assert_one_follow_up(latency: Duration, window: Duration, at: Duration) {
    let asked = follow_up_calls(latency, window).await;
    let later = vec!["tag b".to_owned(), "tag c".to_owned(), "tag d".to_owned()];
    let expected = [(Duration::ZERO, vec!["tag a".to_owned()]), (at, later)];
    assert_eq!(asked, expected, "latency {latency:?}, window {window:?}");
}

/// Nagle's rule, second half: keys that arrive while a call is in flight gather, and go out
/// together in exactly one follow-up call when it returns (well before the window ends).
#[tokio::test(start_paused = true)]
async fn keys_arriving_during_a_call_go_out_together_in_one_follow_up_call() {
    let ms = Duration::from_millis;
    assert_one_follow_up(ms(50), Duration::from_secs(1), ms(50)).await;
}

/// The window bounds the wait behind a slow call: the gathered keys leave when it ends
/// (10 ms + 30 ms), not when the 200 ms call returns.
#[tokio::test(start_paused = true)]
async fn keys_behind_a_slow_call_leave_when_the_window_ends() {
    let ms = Duration::from_millis;
    assert_one_follow_up(ms(200), ms(30), ms(40)).await;
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
