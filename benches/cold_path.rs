//! The first admission of a never-seen image, against the ECR emulator behind a proxy that
//! adds a fixed round trip to every ECR call and records each call's span: for a tag, an
//! index and a digest, the decision time, the time spent inside ECR calls, the number of
//! sequential calls, and what is left, the webhook's own time, per call.
//!
//! Each image is posted once, fresh (nothing of it cached), then once again warm, over one
//! keep-alive HTTP/1.1 connection as the API server uses. Own time per call =
//! (decision - time inside ECR calls - the warm answer's time) / sequential calls.
//!
//! Usage: cold_path ENDPOINT [RTT_MS] [IMAGES]   (benches/cold_path.sh starts the emulator)

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::fault_proxy::{Fault, FaultProxy};
use common::seed::{Breakage, Seeder, OCI_MANIFEST};
use common::server::{self, Options, TestServer};

/// How each kind of image is named in the admission.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Tag,
    Index,
    Digest,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Tag => "tag (single-arch)",
            Kind::Index => "tag (index, 2 platforms)",
            Kind::Digest => "digest (manifest not cached)",
        }
    }
}

/// A fresh image of `kind`, as a reference.
async fn seed(s: &Seeder, run: &str, n: usize, kind: Kind) -> String {
    let repo = format!("{run}/app");
    let tag = format!("v{n}");
    let seed = format!("{run}-{n}");
    let intact = Breakage::default();
    match kind {
        Kind::Tag => s
            .image(&repo, &tag, &seed, 4, OCI_MANIFEST, intact)
            .await
            .reference(),
        Kind::Digest => s
            .image(&repo, &tag, &seed, 4, OCI_MANIFEST, intact)
            .await
            .by_digest(),
        Kind::Index => {
            let platforms = [("amd64", intact), ("arm64", intact)];
            s.index(&repo, &tag, &seed, &platforms).await.0.reference()
        }
    }
}

/// Time inside ECR calls (the union of the spans) and how many calls ran one after another
/// (spans that overlap an earlier one run beside it, not after it).
fn ecr_time(spans: &[(Instant, Instant)]) -> (Duration, usize) {
    let mut spans = spans.to_vec();
    spans.sort();
    let (mut total, mut sequential) = (Duration::ZERO, 0);
    let mut covered: Option<Instant> = None;
    for (start, end) in spans {
        match covered {
            Some(c) if start < c => {
                total += end.saturating_duration_since(c);
                covered = Some(c.max(end));
            }
            _ => {
                total += end - start;
                sequential += 1;
                covered = Some(end);
            }
        }
    }
    (total, sequential)
}

async fn post(srv: &TestServer, image: &str) -> Duration {
    let body = common::pod_review(&[("app", image)]);
    let started = Instant::now();
    let response = srv.review("/validate?timeout=10s", body).await;
    let elapsed = started.elapsed();
    assert_eq!(response["allowed"], true, "{image}: {response}");
    elapsed
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The same round trip without the webhook: `BatchGetImage` of one tag through the registry
/// client alone (the SDK), sequentially. What is left outside the
/// proxy's span is the client's and the connection's share of the webhook's own time per
/// call.
async fn client_alone(
    webhook_rt: &tokio::runtime::Handle,
    s: &Seeder,
    proxy: &FaultProxy,
    calls: usize,
) -> (f64, f64) {
    use ecr_preflight::image::{ImageId, ImageTarget, RepositoryKey};
    use ecr_preflight::registry::Registry;
    let run = common::unique("sdk");
    let image = seed(s, &run, 0, Kind::Tag).await;
    let url = proxy.url.clone();
    let registry = webhook_rt
        .spawn(async move { server::registry(Some(url), Duration::from_secs(10)).await })
        .await
        .expect("registry");
    let registry = std::sync::Arc::new(registry);
    let repo: RepositoryKey = match ImageTarget::classify(&image) {
        Ok(ImageTarget::Ecr { repo, .. }) => repo,
        _ => panic!("not an ECR reference: {image}"),
    };
    let ids = [ImageId::Tag("v0".to_owned())];
    let call = || {
        let (registry, repo) = (registry.clone(), repo.clone());
        let ids = ids.clone();
        webhook_rt.spawn(async move {
            let (started, cpu) = (Instant::now(), thread_cpu());
            registry.batch_get_image(&repo, &ids).await.expect("call");
            // The webhook's runtime has one worker: the SDK and its connection's task
            // ran on this thread, so its CPU time is the call's.
            (started.elapsed(), thread_cpu().saturating_sub(cpu))
        })
    };
    call().await.expect("first call");
    let (mut total, mut own, mut cpu) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..calls {
        proxy.take_spans();
        let (elapsed, in_thread) = call().await.expect("call");
        cpu.push(ms(in_thread));
        let (inside, _) = ecr_time(&proxy.take_spans());
        total.push(ms(elapsed));
        own.push(ms(elapsed.saturating_sub(inside)));
    }
    println!(
        "CPU time of the webhook's thread per SDK call: {:.3} ms",
        median(cpu)
    );
    (median(total), median(own))
}

/// A bare POST through the same proxy, on this runtime and on the webhook's (one worker,
/// like the client calls): the floor of what any client pays here.
async fn raw_floor(webhook_rt: &tokio::runtime::Handle, proxy: &FaultProxy, calls: usize) {
    let here = raw_posts(proxy, calls).await;
    let url = proxy.url.clone();
    let spans = proxy.clone();
    let (there, raw_cpu) = webhook_rt
        .spawn(async move { raw_posts_to(&url, &spans, calls).await })
        .await
        .expect("raw");
    println!(
        "raw reqwest outside span: {here:.3} ms (this runtime), {there:.3} ms (the webhook's), {raw_cpu:.3} ms CPU a call there"
    );
}

/// The CPU time this thread has used, user and system together, to the nanosecond
/// (`CLOCK_THREAD_CPUTIME_ID`; getrusage's user/system split is estimated from ticks).
fn thread_cpu() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the pointer it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    Duration::new(
        now.tv_sec.max(0) as u64,
        now.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// The calling thread's kernel id, to read its CPU time from another thread.
fn thread_id() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// The CPU time thread `tid` of this process has used (its `schedstat`, in nanoseconds).
fn cpu_of(tid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .expect("schedstat of the webhook's thread");
    let ns = stat.split_whitespace().next().and_then(|n| n.parse().ok());
    Duration::from_nanos(ns.expect("schedstat's first field"))
}

async fn raw_posts(proxy: &FaultProxy, calls: usize) -> f64 {
    raw_posts_to(&proxy.url, proxy, calls).await.0
}

/// The median time outside the proxy's span of `calls` bare POSTs to `url`, and the
/// median CPU time (user and system) of this thread per POST (the call's, on a one-worker runtime).
async fn raw_posts_to(url: &str, proxy: &FaultProxy, calls: usize) -> (f64, f64) {
    let client = reqwest::Client::new();
    let (mut raw, mut cpu) = (Vec::new(), Vec::new());
    for _ in 0..=calls {
        proxy.take_spans();
        let (started, before) = (Instant::now(), thread_cpu());
        let r = client
            .post(url)
            .header(
                "x-amz-target",
                "AmazonEC2ContainerRegistry_V20150921.DescribeRegistry",
            )
            .header("content-type", "application/x-amz-json-1.1")
            .body("{}")
            .send()
            .await
            .expect("raw");
        let _ = r.bytes().await;
        let elapsed = started.elapsed();
        cpu.push(ms(thread_cpu().saturating_sub(before)));
        let (inside, _) = ecr_time(&proxy.take_spans());
        raw.push(ms(elapsed.saturating_sub(inside)));
    }
    // The first opened the connection.
    raw.remove(0);
    cpu.remove(0);
    (median(raw), median(cpu))
}

// The allocator `ecr-preflight` itself runs with (src/main.rs): the webhook measured here is
// the one that ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let endpoint = args
        .next()
        .expect("usage: cold_path ENDPOINT [RTT_MS] [IMAGES]");
    let rtt: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(25);
    let images: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(15);
    let s = Seeder::new(&endpoint);
    let proxy = FaultProxy::start(&endpoint).await;
    proxy.set(Fault::Latency(Duration::from_millis(rtt)));
    println!(
        "Cold path: {images} fresh images per row, {rtt} ms added to every ECR call; medians.\n"
    );
    // The webhook and its SDK client run on a runtime of their own with one worker, as
    // `serve` runs them by default; the proxy and the client that posts reviews on this one.
    let webhook_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        // Named, so that a profile can tell its thread from the proxy's.
        .thread_name("webhook")
        .enable_all()
        .build()
        .expect("runtime");
    let webhook = webhook_rt.handle().clone();
    raw_floor(&webhook, &proxy, images * 2).await;
    let (total, own) = client_alone(&webhook, &s, &proxy, images * 2).await;
    println!("SDK alone (`BatchGetImage` of one tag, {} calls): {total:.1} ms a call, **{own:.2} ms** of it outside the proxy's span.", images * 2);
    println!();
    if std::env::var_os("SDK_ONLY").is_some() {
        webhook_rt.shutdown_background();
        return;
    }
    println!("| image | --batch-window | decision | inside ECR calls | sequential calls | warm answer | webhook's own time per call | webhook thread's CPU per call |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let rows = [ecr_preflight::engine::DEFAULT_BATCH_WINDOW, Duration::ZERO]
        .into_iter()
        .flat_map(|window| [Kind::Tag, Kind::Index, Kind::Digest].map(|kind| (window, kind)));
    let webhook_thread = webhook
        .spawn(async { thread_id() })
        .await
        .expect("thread id");
    for (window, kind) in rows {
        {
            let options = Options {
                timeout: Duration::from_secs(10),
                batch_window: window,
                endpoint: Some(proxy.url.clone()),
                ..Options::default()
            };
            let srv = webhook.spawn(server::start(options)).await.expect("server");
            let srv = TestServer {
                client: server::client(&srv.cert_pem, true),
                ..srv
            };
            // The SDK client and its connection to the endpoint, made once.
            let run = common::unique("cold");
            post(&srv, &seed(&s, &run, 0, kind).await).await;
            let (mut decision, mut inside, mut calls, mut warm, mut own, mut cpu) = (
                Vec::new(),
                Vec::new(),
                Vec::new(),
                Vec::new(),
                Vec::new(),
                Vec::new(),
            );
            for n in 1..=images {
                let image = seed(&s, &run, n, kind).await;
                proxy.take_spans();
                let before = cpu_of(webhook_thread);
                let cold = post(&srv, &image).await;
                let cold_cpu = cpu_of(webhook_thread).saturating_sub(before);
                let (in_ecr, sequential) = ecr_time(&proxy.take_spans());
                let before = cpu_of(webhook_thread);
                let cached = post(&srv, &image).await;
                let warm_cpu = cpu_of(webhook_thread).saturating_sub(before);
                cpu.push(ms(cold_cpu.saturating_sub(warm_cpu)) / sequential.max(1) as f64);
                assert!(proxy.take_spans().is_empty(), "the warm answer asked ECR");
                let left = cold.saturating_sub(in_ecr).saturating_sub(cached);
                decision.push(ms(cold));
                inside.push(ms(in_ecr));
                calls.push(sequential as f64);
                warm.push(ms(cached));
                own.push(ms(left) / sequential.max(1) as f64);
            }
            println!(
                "| {} | {} | {:.1} ms | {:.1} ms | {} | {:.2} ms | **{:.2} ms** | {:.3} ms |",
                kind.name(),
                humantime::format_duration(window),
                median(decision),
                median(inside),
                median(calls),
                median(warm),
                median(own),
                median(cpu)
            );
        }
    }
    webhook_rt.shutdown_background();
}
