//! Cold path and storm against the ECR API emulator, over real HTTPS to the in-process
//! webhook: time to first decision for 1, 10 and 50 distinct images (single- and
//! multi-arch), and ECR call counts (the engine's own counters) for deploy storms.
//!
//! Usage: emulator_bench ENDPOINT     (benches/emulator.sh starts the emulator)

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::seed::{Breakage, Seeder, OCI_MANIFEST};
use common::server::{self, Options, TestServer};
use ecr_preflight::engine::CallStats;

fn calls(stats: &CallStats) -> (u64, u64) {
    (
        stats.batch_get_image.load(Ordering::SeqCst),
        stats.batch_check_layer_availability.load(Ordering::SeqCst),
    )
}

async fn fresh_server() -> TestServer {
    fresh_server_with(ecr_preflight::engine::DEFAULT_BATCH_WINDOW).await
}

async fn fresh_server_with(batch_window: Duration) -> TestServer {
    server::start(Options {
        timeout: Duration::from_secs(10),
        batch_window,
        ..Options::default()
    })
    .await
}

async fn decide(srv: &TestServer, images: &[String]) -> (Duration, serde_json::Value) {
    let names: Vec<String> = (0..images.len()).map(|i| format!("c{i}")).collect();
    let containers: Vec<(&str, &str)> = names
        .iter()
        .map(String::as_str)
        .zip(images.iter().map(String::as_str))
        .collect();
    let body = common::pod_review(&containers);
    let started = Instant::now();
    let response = srv.review("/validate?timeout=10s", body).await;
    (started.elapsed(), response)
}

/// `n` distinct images spread over `ceil(n / 10)` repositories, 4 layers each (or indexes of
/// two platforms with 2 layers each).
async fn seed_images(s: &Seeder, run: &str, n: usize, multi: bool) -> Vec<String> {
    let mut images = Vec::new();
    for i in 0..n {
        let repo = format!("{run}/r{}", i / 10);
        let tag = format!("v{i}");
        let image = if multi {
            let intact = Breakage::default();
            s.index(
                &repo,
                &tag,
                &format!("{run}-{i}"),
                &[("amd64", intact), ("arm64", intact)],
            )
            .await
            .0
        } else {
            s.image(
                &repo,
                &tag,
                &format!("{run}-{i}"),
                4,
                OCI_MANIFEST,
                Breakage::default(),
            )
            .await
        };
        images.push(image.reference());
    }
    images
}

async fn cold_path(endpoint: &str) {
    let s = Seeder::new(endpoint);
    println!("## Cold path (one Pod with N distinct images, empty caches)\n");
    println!("| images | kind | repositories | time to decision | BatchGetImage | BatchCheckLayerAvailability | warm repeat |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for multi in [false, true] {
        for n in [1usize, 10, 50] {
            let run = common::unique(if multi { "cold-multi" } else { "cold-single" });
            let images = seed_images(&s, &run, n, multi).await;
            let srv = fresh_server().await;
            let (cold, response) = decide(&srv, &images).await;
            assert_eq!(response["allowed"], true, "{response}");
            let (gets, checks) = calls(srv.engine.stats());
            let (warm, _) = decide(&srv, &images).await;
            assert_eq!(
                calls(srv.engine.stats()),
                (gets, checks),
                "the warm repeat made ECR calls"
            );
            println!(
                "| {n} | {} | {} | {:.1} ms | {gets} | {checks} | {:.2} ms |",
                if multi {
                    "multi-arch index"
                } else {
                    "single-arch"
                },
                n.div_ceil(10),
                cold.as_secs_f64() * 1000.0,
                warm.as_secs_f64() * 1000.0
            );
        }
    }
}

/// Sends `admissions` concurrently (each a Pod naming one image), released together, over
/// 16 clients of one HTTP/2 connection each.
async fn storm(srv: &TestServer, admissions: Vec<String>) -> (Duration, usize) {
    let clients: Vec<reqwest::Client> = (0..16)
        .map(|_| server::client(&srv.cert_pem, false))
        .collect();
    let url = format!("{}/validate?timeout=10s", srv.url);
    let barrier = Arc::new(tokio::sync::Barrier::new(admissions.len()));
    let started = Instant::now();
    let tasks: Vec<_> = admissions
        .into_iter()
        .enumerate()
        .map(|(i, image)| {
            let client = clients[i % clients.len()].clone();
            let (url, barrier) = (url.clone(), barrier.clone());
            tokio::spawn(async move {
                let body = common::pod_review(&[("app", &image)]);
                barrier.wait().await;
                let r = client
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                match r {
                    Ok(r) => r
                        .json::<serde_json::Value>()
                        .await
                        .map(|v| v["response"]["allowed"] == true)
                        .unwrap_or(false),
                    Err(_) => false,
                }
            })
        })
        .collect();
    let mut allowed = 0;
    for t in tasks {
        if t.await.unwrap_or(false) {
            allowed += 1;
        }
    }
    (started.elapsed(), allowed)
}

/// `clients` HTTP/2 clients, each on its own connection (opened before the release), each
/// sending its share of `admissions` one after another: client `c` sends admissions `c`,
/// `c + clients`, ... All clients are released together.
async fn client_storm(srv: &TestServer, admissions: Vec<String>, clients: usize) -> usize {
    let url = format!("{}/validate?timeout=10s", srv.url);
    let barrier = Arc::new(tokio::sync::Barrier::new(clients));
    let admissions = Arc::new(admissions);
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let client = server::client(&srv.cert_pem, false);
            let (url, barrier, admissions) = (url.clone(), barrier.clone(), admissions.clone());
            tokio::spawn(async move {
                // Opens the connection (a 404) so that the release times admissions only.
                let _ = client.get(format!("{url}/warm")).send().await;
                barrier.wait().await;
                let mut allowed = 0;
                for image in admissions.iter().skip(c).step_by(clients) {
                    let body = common::pod_review(&[("app", image)]);
                    let r = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await;
                    if let Ok(r) = r {
                        let v = r.json::<serde_json::Value>().await.unwrap_or_default();
                        allowed += usize::from(v["response"]["allowed"] == true);
                    }
                }
                allowed
            })
        })
        .collect();
    let mut allowed = 0;
    for t in tasks {
        allowed += t.await.unwrap_or(0);
    }
    allowed
}

async fn storms(endpoint: &str) {
    let s = Seeder::new(endpoint);
    println!("\n## Storms over HTTPS (1,000 concurrent admissions over 16 HTTP/2 connections)\n");
    println!("| storm | blobs | allowed | wall time | BatchGetImage | BatchCheckLayerAvailability | bound asked for |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");

    let run = common::unique("storm-one");
    let image = s
        .image(
            &format!("{run}/app"),
            "1.0",
            &run,
            249,
            OCI_MANIFEST,
            Breakage::default(),
        )
        .await;
    let srv = fresh_server().await;
    let (wall, allowed) = storm(&srv, vec![image.reference(); 1000]).await;
    let (gets, checks) = calls(srv.engine.stats());
    println!("| one never-seen image | 250 | {allowed} | {:.0} ms | {gets} | {checks} | 1 and ceil(250/100) = 3 |", wall.as_secs_f64() * 1000.0);

    let run = common::unique("storm-many");
    let mut images = Vec::new();
    for r in 0..10 {
        for i in 0..10 {
            let pushed = s
                .image(
                    &format!("{run}/r{r}"),
                    &format!("v{i}"),
                    &format!("{run}-{r}-{i}"),
                    7,
                    OCI_MANIFEST,
                    Breakage::default(),
                )
                .await;
            images.push(pushed.reference());
        }
    }
    for window_ms in [50u64, 2, 0] {
        let srv = fresh_server_with(Duration::from_millis(window_ms)).await;
        let admissions: Vec<String> = (0..1000).map(|n| images[n % 100].clone()).collect();
        let (wall, allowed) = storm(&srv, admissions).await;
        let (gets, checks) = calls(srv.engine.stats());
        println!(
            "| 100 images in 10 repositories, --batch-window {window_ms}ms | 800 (80 a repository) | {allowed} | {:.0} ms | {gets} | {checks} | checks ≤ 10 × ceil(80/100) = 10 when released together |",
            wall.as_secs_f64() * 1000.0
        );
    }
    let srv = fresh_server().await;
    let admissions: Vec<String> = (0..1000).map(|n| images[n % 100].clone()).collect();
    let allowed = client_storm(&srv, admissions, 100).await;
    let (gets, checks) = calls(srv.engine.stats());
    println!(
        "| 100 images in 10 repositories, 100 clients of 10 admissions each | 800 (80 a repository) | {allowed} | - | {gets} | {checks} | ≤ 3 of each a repository: 30 |"
    );
}

#[tokio::main]
async fn main() {
    let endpoint = std::env::args()
        .nth(1)
        .unwrap_or_else(common::moto::endpoint);
    std::env::set_var("ECR_PREFLIGHT_TEST_ECR_ENDPOINT", &endpoint);
    cold_path(&endpoint).await;
    storms(&endpoint).await;
}
