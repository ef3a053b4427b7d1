//! The controller at scale, in one process as `serve --watch` runs it (the webhook on one
//! single-worker runtime, the controller's pass on a low-priority thread and runtime of its
//! own): REPOS repositories (default 500) of 4 images,
//! each image run by a Deployment of 5 replicas (500: 10,000 Pods, 2,000 Deployments, 2,000
//! images; 5,000: 100,000 Pods, 20,000 images), 30 blobs an image, half of them shared by the
//! images of a repository. Reports
//! - the ECR calls of one full re-verification per repository, against the bound
//!   ceil(ids/100) BatchGetImage + ceil(distinct blobs/100) BatchCheckLayerAvailability;
//! - resident memory of the webhook after serving the load, then with the inventory, then
//!   after a pass (its results, the controller's caches and per-workload series);
//! - warm admission latency at 1,000 reviews/s (open loop, from a second runtime), without
//!   a pass, while a pass runs, and while `/inventory` is asked for every GET_EVERY (its
//!   handler's call, each after a change, so that each builds a new document);
//! - the lifecycle calls of the pass (bound: 1 GetLifecyclePolicy + 1 DescribeImages page a
//!   repository; each repository lists 100 images, a policy of two rules) and the forecasts
//!   it made for the images in use.
//!
//! The registry behind the seam makes its answers up and counts the calls; the inventory is
//! fed the projections the watchers would make (no API server).
//!
//! Usage: watch_bench [INTERVAL_SECONDS] [REPOS] [CALLS_PER_SECOND] [LOAD_SECONDS] [WHOLE_PASS]
//!
//! By default the pass is squeezed into 90 % of the interval (the budget is set to fit), and
//! each load phase lasts as long. With CALLS_PER_SECOND the pass keeps to that budget as
//! `--watch-ecr-calls-per-second` does (the production shape: a 900 s interval, a budget
//! that just fits), each load phase lasts LOAD_SECONDS, and memory is read when the pass ends;
//! WHOLE_PASS 0 measures admission during the first LOAD_SECONDS of the pass and stops there
//! (a 900 s pass at production's pace is then sampled, not waited for).
//!
//! To see what the memory after a pass is made of: `WATCH_BENCH_SERIES=0` runs without the
//! per-workload series (`--workload-metrics=false`), `WATCH_BENCH_FORECASTS=0` without
//! lifecycle forecasts (`--lifecycle-forecast=false`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ecr_preflight::engine::{Engine, EngineSettings};
use ecr_preflight::image::{ImageId, RepositoryKey};
use ecr_preflight::lifecycle::ImageFacts;
use ecr_preflight::registry::{
    BatchGetImageOutput, BlobState, FetchedManifest, LayerAvailabilityOutput, LifecycleFacts,
    Preview, Registry, RegistryError,
};
use ecr_preflight::server::tls::{self, CertStore};
use ecr_preflight::server::{self, WebhookConfig};
use ecr_preflight::watch::inventory::{key_of, project_pod, project_workload};
use ecr_preflight::watch::{
    self, ExpirySettings, Inventory, Namespaces, Signals, Verifier, WatchSettings,
    DEFAULT_EXPIRY_WARNING,
};
use ecr_preflight::workload::WorkloadKind;
use futures::future::BoxFuture;
use futures::FutureExt;
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

/// mimalloc as the product runs it, counted: the live heap beside RSS.
#[global_allocator]
static ALLOCATOR: cap::Cap<mimalloc::MiMalloc> = cap::Cap::new(mimalloc::MiMalloc, usize::MAX);

fn heap_mib() -> f64 {
    ALLOCATOR.allocated() as f64 / 1048576.0
}

const REGISTRY: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
/// How often the `/inventory` phase asks for the document.
const GET_EVERY: Duration = Duration::from_millis(250);
const IMAGES_PER_REPO: usize = 4;
const BLOBS: usize = 30;
const SHARED: usize = 15;
const REPLICAS: usize = 5;

fn digest(seed: &str) -> String {
    let h = seed.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!(
        "sha256:{:016x}{:016x}{:016x}{:016x}",
        h,
        h.rotate_left(16),
        h.rotate_left(32),
        h.rotate_left(48)
    )
}

/// The blobs of image `tag` of `repo`: 15 shared by the repository's images, 15 its own.
fn blobs(repo: &str, tag: &str) -> Vec<String> {
    (0..BLOBS)
        .map(|k| {
            if k < SHARED {
                digest(&format!("{repo}/shared/{k}"))
            } else {
                digest(&format!("{repo}/{tag}/{k}"))
            }
        })
        .collect()
}

fn manifest(repo: &str, tag: &str) -> String {
    let b = blobs(repo, tag);
    json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": b[BLOBS - 1], "size": 1},
        "layers": b[..BLOBS - 1].iter().map(|d| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": 1})).collect::<Vec<_>>()})
    .to_string()
}

/// Makes its answers up; counts calls, ids and digests per repository.
#[derive(Default)]
struct Counting {
    calls: Mutex<HashMap<String, (usize, usize)>>,
    /// GetLifecyclePolicy and DescribeImages calls per repository.
    lifecycle_calls: Mutex<HashMap<String, (usize, usize)>>,
}

/// Images each repository lists: its images in use and older builds.
const LISTED: usize = 100;
const DAY: i64 = 86_400;
/// Older builds beyond the newest 50 expire; every image expires 90 days after its push.
const POLICY: &str = r#"{"rules": [
    {"rulePriority": 1, "description": "keep 50 builds", "selection": {"tagStatus": "tagged", "tagPrefixList": ["build-"], "countType": "imageCountMoreThan", "countNumber": 50}, "action": {"type": "expire"}},
    {"rulePriority": 2, "description": "90 days", "selection": {"tagStatus": "any", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 90}, "action": {"type": "expire"}}]}"#;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Counting {
    fn count(&self, repo: &RepositoryKey, describe: bool) {
        let mut calls = self.lifecycle_calls.lock().expect("lock");
        let entry = calls.entry(repo.repository.clone()).or_default();
        if describe {
            entry.1 += 1;
        } else {
            entry.0 += 1;
        }
    }
}

impl LifecycleFacts for Counting {
    fn lifecycle_policy<'a>(
        &'a self,
        repo: &'a RepositoryKey,
    ) -> BoxFuture<'a, Result<Option<String>, RegistryError>> {
        self.count(repo, false);
        async { Ok(Some(POLICY.to_owned())) }.boxed()
    }

    fn describe_images<'a>(
        &'a self,
        repo: &'a RepositoryKey,
    ) -> BoxFuture<'a, Result<Vec<ImageFacts>, RegistryError>> {
        self.count(repo, true);
        let r: usize = repo
            .repository
            .rsplit('-')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let now = now();
        let images = (0..LISTED)
            .map(|k| {
                // The images in use by their manifests' digests; the builds by any other.
                let (tag, pushed, image_digest) = if k < IMAGES_PER_REPO {
                    let tag = format!("v1.{k}.{r}");
                    let d = digest(&manifest(&repo.repository, &tag));
                    (tag, now - (k as i64 + 1) * DAY, d)
                } else {
                    let tag = format!("build-{k}");
                    let d = digest(&format!("{}:{tag}", repo.repository));
                    (tag, now - (k as i64 + 10) * DAY, d)
                };
                ImageFacts::pushed(image_digest, vec![tag], pushed)
            })
            .collect();
        async { Ok(images) }.boxed()
    }

    fn restore<'a>(
        &'a self,
        _: &'a RepositoryKey,
        _: &'a ImageId,
    ) -> BoxFuture<'a, Result<ecr_preflight::registry::Restore, RegistryError>> {
        async { Err(RegistryError::Timeout) }.boxed()
    }

    fn start_preview<'a>(
        &'a self,
        _: &'a RepositoryKey,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        async { Err(RegistryError::Timeout) }.boxed()
    }

    fn preview<'a>(
        &'a self,
        _: &'a RepositoryKey,
    ) -> BoxFuture<'a, Result<Preview, RegistryError>> {
        async { Err(RegistryError::Timeout) }.boxed()
    }
}

impl Registry for Counting {
    fn lifecycle(&self) -> Option<&dyn LifecycleFacts> {
        Some(self)
    }

    fn batch_get_image<'a>(
        &'a self,
        repo: &'a RepositoryKey,
        ids: &'a [ImageId],
    ) -> BoxFuture<'a, Result<BatchGetImageOutput, RegistryError>> {
        async move {
            self.calls
                .lock()
                .expect("lock")
                .entry(repo.repository.clone())
                .or_default()
                .0 += 1;
            let images = ids
                .iter()
                .filter_map(|id| match id {
                    ImageId::Tag(t) => Some(t),
                    ImageId::Digest(_) => None,
                })
                .map(|tag| {
                    let m = manifest(&repo.repository, tag);
                    FetchedManifest {
                        tag: Some(tag.clone()),
                        digest: Some(digest(&m)),
                        media_type: Some("application/vnd.oci.image.manifest.v1+json".into()),
                        manifest: m,
                    }
                })
                .collect();
            Ok(BatchGetImageOutput {
                images,
                failures: Vec::new(),
            })
        }
        .boxed()
    }

    fn batch_check_layer_availability<'a>(
        &'a self,
        repo: &'a RepositoryKey,
        digests: &'a [String],
    ) -> BoxFuture<'a, Result<LayerAvailabilityOutput, RegistryError>> {
        async move {
            self.calls
                .lock()
                .expect("lock")
                .entry(repo.repository.clone())
                .or_default()
                .1 += 1;
            Ok(LayerAvailabilityOutput {
                blobs: digests
                    .iter()
                    .map(|d| (d.clone(), BlobState::Available))
                    .collect(),
                ..LayerAvailabilityOutput::default()
            })
        }
        .boxed()
    }
}

/// 2,000 Deployments, their ReplicaSets and 10,000 Pods, as the watchers would project them.
fn fill(inventory: &Inventory, repos: usize) {
    for r in 0..repos {
        let repo = format!("team-{:02}/service-{r:03}", r % 20);
        for i in 0..IMAGES_PER_REPO {
            let tag = format!("v1.{i}.{r}");
            let image = format!("{REGISTRY}/{repo}:{tag}");
            let running = digest(&manifest(&repo, &tag));
            let ns = format!("namespace-{:02}", r % 40);
            let name = format!("service-{r:03}-{i}");
            let spec = json!({"containers": [{"name": "app", "image": image}]});
            let d = serde_json::from_value(
                json!({"namespace": ns, "name": name, "uid": format!("d-{r}-{i}")}),
            )
            .expect("meta");
            inventory.apply(
                key_of(WorkloadKind::Deployment, &d).expect("key"),
                Some(project_workload(
                    WorkloadKind::Deployment,
                    &d,
                    Some(&serde_json::from_value(spec.clone()).expect("spec")),
                )),
            );
            let rs_name = format!("{name}-7c9f8d6b5");
            let owner = |kind: &str, n: &str, uid: String| json!([{"apiVersion": "apps/v1", "kind": kind, "name": n, "uid": uid, "controller": true}]);
            let rs = serde_json::from_value(
                json!({"namespace": ns, "name": rs_name, "uid": format!("rs-{r}-{i}"),
                "ownerReferences": owner("Deployment", &name, format!("d-{r}-{i}"))}),
            )
            .expect("meta");
            inventory.apply(
                key_of(WorkloadKind::ReplicaSet, &rs).expect("key"),
                Some(project_workload(
                    WorkloadKind::ReplicaSet,
                    &rs,
                    Some(&serde_json::from_value(spec.clone()).expect("spec")),
                )),
            );
            for p in 0..REPLICAS {
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"namespace": ns, "name": format!("{rs_name}-x{p}q2z"), "uid": format!("p-{r}-{i}-{p}"),
                        "ownerReferences": owner("ReplicaSet", &rs_name, format!("rs-{r}-{i}"))},
                    "spec": spec,
                    "status": {"phase": "Running", "containerStatuses": [{"name": "app", "image": image,
                        "imageID": format!("{REGISTRY}/{repo}@{running}"), "ready": true, "restartCount": 0}]}}))
                .expect("pod");
                inventory.apply(
                    key_of(WorkloadKind::Pod, &pod.metadata).expect("key"),
                    project_pod(&pod),
                );
            }
        }
    }
}

/// Posts the same (warm) review at `rate` a second, open loop, for `length`; latencies.
async fn load(
    client: reqwest::Client,
    url: String,
    review: String,
    rate: u32,
    length: Duration,
) -> Vec<Duration> {
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
    let end = tokio::time::Instant::now() + length;
    let mut tasks = Vec::new();
    while tokio::time::Instant::now() < end {
        tick.tick().await;
        let (client, url, review) = (client.clone(), url.clone(), review.clone());
        tasks.push(tokio::spawn(async move {
            let start = std::time::Instant::now();
            let r = client.post(&url).body(review).send().await.expect("post");
            assert_eq!(r.status(), 200);
            let _ = r.bytes().await;
            start.elapsed()
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("task"));
    }
    out.sort();
    out
}

/// An on/off environment variable, on unless `0`.
fn switch(name: &str) -> bool {
    std::env::var(name).map_or(true, |v| v != "0")
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

fn main() {
    let arg = |n: usize, default: u64| {
        std::env::args()
            .nth(n)
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let interval = Duration::from_secs(arg(1, 20));
    let expiry = ExpirySettings {
        forecast: switch("WATCH_BENCH_FORECASTS"),
        ..ExpirySettings::default()
    };
    let repos = arg(2, 500) as usize;
    // Room for a pass (4 calls a repository with forecasts) within 90 % of the interval,
    // unless given.
    let squeezed = 5.0 * repos as f64 / (0.9 * interval.as_secs_f64());
    let calls_per_second = std::env::args()
        .nth(3)
        .and_then(|s| s.parse().ok())
        .unwrap_or(squeezed.max(1000.0));
    let length = match arg(4, 0) {
        0 => interval.mul_f64(0.9),
        seconds => Duration::from_secs(seconds),
    };
    tls::install_crypto_provider();
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("server")
        .enable_all()
        .build()
        .expect("rt");
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("client")
        .enable_all()
        .build()
        .expect("rt");
    let registry = Arc::new(Counting::default());
    let settings = EngineSettings::new(vec!["linux/amd64".parse().expect("platform")]);
    let admission = Arc::new(Engine::new(registry.clone(), settings.clone()));
    let watch_settings = WatchSettings {
        recheck_interval: interval,
        calls_per_second,
        registry_requests_per_second: watch::DEFAULT_REGISTRY_REQUESTS_PER_SECOND,
        namespaces: Namespaces::default(),
        workload_metrics: switch("WATCH_BENCH_SERIES"),
        leader_election: false,
        lease_namespace: "default".into(),
        lease_duration: Duration::from_secs(15),
        identity: "bench".into(),
        expiry: expiry.clone(),
        read_pull_secrets: false,
    };
    let background = Arc::new(watch::background_engine(
        &admission,
        registry.clone(),
        &settings,
        &watch_settings,
    ));
    let (cert, key) = tls::self_signed_pem().expect("cert");
    let certified = tls::certified_key(cert.as_bytes(), key.as_bytes(), "c".as_ref(), "k".as_ref())
        .expect("key");
    let running = server_rt
        .block_on(server::start_webhook(
            admission.clone(),
            WebhookConfig {
                timeout: Duration::from_secs(30),
                ..common::server::loopback_config(CertStore::new(certified))
            },
        ))
        .expect("start");
    let url = format!(
        "https://localhost:{}/validate",
        running.webhook_addr.expect("webhook").port()
    );
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert.as_bytes()).expect("pem")])
        .http1_only()
        .pool_max_idle_per_host(256)
        .build()
        .expect("client");
    let warm_image = format!("{REGISTRY}/warm/app:v1");
    let review = common::pod_review(&[("app", warm_image.as_str())]);
    let answer = client_rt.block_on(async {
        client
            .post(&url)
            .body(review.clone())
            .send()
            .await
            .expect("post")
            .text()
            .await
            .expect("text")
    });
    assert!(answer.contains("\"allowed\":true"), "{answer}");
    std::thread::sleep(Duration::from_millis(500));
    let idle = common::rss().0;
    let idle_heap = heap_mib();

    let inventory = Inventory::new(0);
    fill(&inventory, repos);
    let filled = common::rss().0;
    let filled_heap = heap_mib();
    let objects = inventory.objects();
    let images = inventory.images().len();

    let quiet = client_rt.block_on(load(
        client.clone(),
        url.clone(),
        review.clone(),
        1000,
        length,
    ));

    let metrics: Arc<ecr_preflight::watch::WatchMetrics> = Arc::new(Default::default());
    let verifier = Verifier::new(
        background.clone(),
        inventory.clone(),
        interval,
        Arc::new(Signals::new(
            Arc::clone(&metrics),
            switch("WATCH_BENCH_SERIES"),
            DEFAULT_EXPIRY_WARNING,
            None,
        )),
        metrics.clone(),
        &expiry,
    )
    .with_budget(watch::Rates {
        ecr_calls: calls_per_second,
        registry_requests: watch::DEFAULT_REGISTRY_REQUESTS_PER_SECOND,
    });
    // On the controller's own low-priority thread and runtime, as `serve --watch` runs it.
    let (abort, aborted) = tokio::sync::oneshot::channel::<()>();
    watch::spawn_apart(move || async move {
        tokio::select! {
            () = verifier.run() => {}
            _ = aborted => {}
        }
    })
    .expect("controller thread");
    let busy = client_rt.block_on(load(
        client.clone(),
        url.clone(),
        review.clone(),
        1000,
        length,
    ));
    if arg(5, 1) == 0 {
        println!("warm admission at 1000/s, no pass: {} reviews, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            quiet.len(), pct(&quiet, 0.5), pct(&quiet, 0.99), pct(&quiet, 1.0));
        println!("warm admission at 1000/s, the first {length:?} of a pass at {calls_per_second:.0} calls a second: {} reviews, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (p99 ratio {:.2}); {} repositories verified by then",
            busy.len(), pct(&busy, 0.5), pct(&busy, 0.99), pct(&busy, 1.0), pct(&busy, 0.99) / pct(&quiet, 0.99),
            registry.calls.lock().expect("lock").keys().filter(|r| r.starts_with("team-")).count());
        return;
    }
    // Wait for the pass to end (its duration is set last), and take its calls then: a pass
    // squeezed into the interval is followed by the next at once.
    while metrics.cycle_duration.get() == 0.0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = abort.send(());
    let calls = registry.calls.lock().expect("lock").clone();
    let lifecycle = registry.lifecycle_calls.lock().expect("lock").clone();
    let after = common::rss().0;
    let after_heap = heap_mib();
    let held = background.cache_sizes();
    let budget = inventory.view().budget;

    // `/inventory` asked for every GET_EVERY, each time after a change (the worst case: every
    // request builds a new document), as its handler does, on the server's runtime.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let asking = {
        let (inventory, stop, budget) = (inventory.clone(), stop.clone(), budget.clone());
        server_rt.spawn(async move {
            let mut took: Vec<Duration> = Vec::new();
            let mut bytes = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                inventory.record_budget(budget.clone());
                let start = std::time::Instant::now();
                bytes = inventory.published_view().await.len();
                took.push(start.elapsed());
                tokio::time::sleep(GET_EVERY).await;
            }
            took.sort();
            (took, bytes)
        })
    };
    let reading = client_rt.block_on(load(
        client.clone(),
        url.clone(),
        review.clone(),
        1000,
        length,
    ));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (documents, document_bytes) = server_rt.block_on(asking).expect("asking");
    let after_reading = common::rss().0;
    let after_reading_heap = heap_mib();

    let watched: Vec<(&String, &(usize, usize))> = calls
        .iter()
        .filter(|(r, _)| r.starts_with("team-"))
        .collect();
    let distinct_blobs = SHARED + IMAGES_PER_REPO * (BLOBS - SHARED);
    let bound = (IMAGES_PER_REPO.div_ceil(100), distinct_blobs.div_ceil(100));
    let over: Vec<_> = watched
        .iter()
        .filter(|(_, c)| c.0 > bound.0 || c.1 > bound.1)
        .collect();
    let (get, check): (usize, usize) = watched
        .iter()
        .fold((0, 0), |acc, (_, c)| (acc.0 + c.0, acc.1 + c.1));
    let view = inventory.view();
    let outcomes: BTreeSet<&str> = view
        .workloads
        .iter()
        .flat_map(|w| w.containers.iter().map(|c| c.outcome.as_str()))
        .collect();

    println!(
        "pass: {calls_per_second:.0} calls a second, {:.0} s; budget {:?}",
        metrics.cycle_duration.get(),
        budget
    );
    println!("inventory: {objects} objects ({} workloads), {images} distinct images in {repos} repositories", view.workloads.len());
    println!("one full re-verification: {} repositories asked, {get} BatchGetImage + {check} BatchCheckLayerAvailability; bound per repository {} + {} ({} distinct blobs); repositories over the bound: {}; outcomes {outcomes:?}",
        watched.len(), bound.0, bound.1, distinct_blobs, over.len());
    println!("memory: webhook idle {:.1} MiB; with the inventory {:.1} MiB (+{:.1}); after a pass {:.1} MiB (+{:.1} over idle)",
        idle as f64 / 1024.0, filled as f64 / 1024.0, filled.saturating_sub(idle) as f64 / 1024.0,
        after as f64 / 1024.0, after.saturating_sub(idle) as f64 / 1024.0);
    println!("live heap: webhook idle {idle_heap:.1} MiB; with the inventory {filled_heap:.1} MiB; after a pass {after_heap:.1} MiB; after the /inventory phase {after_reading_heap:.1} MiB");
    println!(
        "the controller's caches after the pass: {} tags, {} manifests, {} blobs",
        held.0, held.1, held.2
    );
    let (policies, described) = lifecycle
        .values()
        .fold((0, 0), |acc, c| (acc.0 + c.0, acc.1 + c.1));
    let lifecycle_over = lifecycle.values().filter(|c| c.0 > 1 || c.1 > 1).count();
    let forecast: Vec<_> = view
        .workloads
        .iter()
        .flat_map(|w| &w.containers)
        .filter(|c| c.expires_at.is_some())
        .collect();
    let rules: BTreeSet<u32> = forecast
        .iter()
        .filter_map(|c| c.expiry_rule.as_ref().map(|r| r.priority))
        .collect();
    println!("lifecycle: {} repositories, {policies} GetLifecyclePolicy + {described} DescribeImages ({LISTED} images each); repositories over 1 + 1: {lifecycle_over}; forecasts on {} of {} workload containers, by rules {rules:?}",
        lifecycle.len(), forecast.len(), view.workloads.iter().map(|w| w.containers.len()).sum::<usize>());
    println!(
        "warm admission at 1000/s, no pass: {} reviews, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        quiet.len(),
        pct(&quiet, 0.5),
        pct(&quiet, 0.99),
        pct(&quiet, 1.0)
    );
    println!("warm admission at 1000/s, during a pass: {} reviews, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        busy.len(), pct(&busy, 0.5), pct(&busy, 0.99), pct(&busy, 1.0));
    println!("warm admission at 1000/s, /inventory every {GET_EVERY:?}: {} reviews, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        reading.len(), pct(&reading, 0.5), pct(&reading, 0.99), pct(&reading, 1.0));
    println!("/inventory: {} documents of {:.1} MiB, each built anew, in p50 {:.0} ms, max {:.0} ms (the walks' thread); memory after {:.1} MiB",
        documents.len(), document_bytes as f64 / 1048576.0, pct(&documents, 0.5), pct(&documents, 1.0), after_reading as f64 / 1024.0);
    println!(
        "p99 ratios against no pass: during a pass {:.2}, during /inventory {:.2}",
        pct(&busy, 0.99) / pct(&quiet, 0.99),
        pct(&reading, 0.99) / pct(&quiet, 0.99)
    );
}
