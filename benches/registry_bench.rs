//! The controller's passes over the images of a registry other than ECR's: REPOS
//! repositories (default 100) of TAGS tags each (default 20: 2,000 images) on Debian's
//! `docker-registry` on loopback (TLS), each image run by one Deployment. Every image has a
//! config blob shared by all and two layers of its own. Reports the requests of two full
//! passes, as the registry's access log tells them (manifest HEADs, manifest GETs, blob
//! HEADs), against the minimum:
//! - a tag is one manifest HEAD, every pass;
//! - a manifest is one GET, once (held by digest after);
//! - a blob is one HEAD, once a pass for each repository that uses it (the controller asks
//!   afresh every pass).
//!
//! Usage: registry_bench [REPOS] [TAGS] (needs `docker-registry`: `.ci/run` installs it)

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::oci_registry::OciRegistry;
use ecr_preflight::engine::{Engine, EngineSettings};
use ecr_preflight::image::Registries;
use ecr_preflight::registry::distribution::{Distribution, DistributionSettings};
use ecr_preflight::registry::Routes;
use ecr_preflight::watch::inventory::{key_of, project_workload};
use ecr_preflight::watch::{
    self, ExpirySettings, Inventory, Namespaces, Signals, Verifier, WatchMetrics, WatchSettings,
    DEFAULT_EXPIRY_WARNING,
};
use ecr_preflight::workload::WorkloadKind;
use futures::StreamExt;
use serde_json::json;

/// The pass's interval: long enough for a pass at loopback speed.
const INTERVAL: Duration = Duration::from_secs(30);

fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .nth(n)
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn fill(inventory: &Inventory, host: &str, repos: usize, tags: usize) {
    for r in 0..repos {
        for t in 0..tags {
            let image = format!("{host}/team/r{r:03}:v{t}");
            let meta = serde_json::from_value(
                json!({"namespace": "shop", "name": format!("app-{r}-{t}"), "uid": format!("d-{r}-{t}")}),
            )
            .expect("meta");
            let spec = json!({"containers": [{"name": "app", "image": image}]});
            inventory.apply(
                key_of(WorkloadKind::Deployment, &meta).expect("key"),
                Some(project_workload(
                    WorkloadKind::Deployment,
                    &meta,
                    Some(&serde_json::from_value(spec).expect("spec")),
                )),
            );
        }
    }
}

/// Requests by kind: (manifest HEADs, manifest GETs, blob HEADs, others).
fn kinds(requests: &[(String, String)]) -> BTreeMap<&'static str, usize> {
    let mut out = BTreeMap::new();
    for (method, path) in requests {
        let kind = match (
            method.as_str(),
            path.contains("/manifests/"),
            path.contains("/blobs/"),
        ) {
            ("HEAD", true, _) => "manifest HEAD",
            ("GET", true, _) => "manifest GET",
            ("HEAD", _, true) => "blob HEAD",
            _ => "other",
        };
        *out.entry(kind).or_insert(0) += 1;
    }
    out
}

fn main() {
    let (repos, tags) = (arg(1, 100), arg(2, 20));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        ecr_preflight::server::tls::install_crypto_provider();
        let registry = OciRegistry::start_open();
        let started = Instant::now();
        // Repositories side by side, each one's images one after another (two uploads of
        // the config blob they share into one repository at once race in the registry).
        futures::stream::iter(0..repos)
            .for_each_concurrent(16, |r| {
                let registry = &registry;
                async move {
                    for t in 0..tags {
                        registry
                            .push_image(&format!("team/r{r:03}"), &format!("v{t}"))
                            .await;
                    }
                }
            })
            .await;
        println!(
            "pushed {} images in {repos} repositories in {:.1} s",
            repos * tags,
            started.elapsed().as_secs_f64()
        );
        let host = registry.url.trim_start_matches("https://").to_owned();
        let other = Distribution::new(DistributionSettings {
            timeout: Duration::from_secs(10),
            extra_roots: vec![std::fs::read(&registry.ca).expect("ca")],
            ..DistributionSettings::default()
        })
        .expect("client");
        let routes = Arc::new(Routes {
            ecr: Arc::new(common::memory_registry::MemoryRegistry::default()),
            other: Arc::new(other),
        });
        let settings = EngineSettings {
            registries: Registries::All,
            ..EngineSettings::new(vec!["linux/amd64".parse().expect("platform")])
        };
        let admission = Engine::new(routes.clone(), settings.clone());
        let watch_settings = WatchSettings {
            recheck_interval: INTERVAL,
            calls_per_second: 1000.0,
            registry_requests_per_second: 1000.0,
            namespaces: Namespaces::default(),
            workload_metrics: false,
            leader_election: false,
            lease_namespace: "default".into(),
            lease_duration: Duration::from_secs(15),
            identity: "bench".into(),
            expiry: ExpirySettings::default(),
            read_pull_secrets: false,
        };
        let background = Arc::new(watch::background_engine(
            &admission,
            routes,
            &settings,
            &watch_settings,
        ));
        let inventory = Inventory::new(0);
        fill(&inventory, &host, repos, tags);
        let metrics: Arc<WatchMetrics> = Arc::new(WatchMetrics::default());
        let verifier = Verifier::new(
            background,
            inventory.clone(),
            INTERVAL,
            Arc::new(Signals::new(
                metrics.clone(),
                false,
                DEFAULT_EXPIRY_WARNING,
                None,
            )),
            metrics.clone(),
            &watch_settings.expiry,
        )
        .with_budget(watch::Rates {
            ecr_calls: 1000.0,
            registry_requests: 1000.0,
        });
        let before = registry.requests_since(0, 0).len();
        let pass = tokio::spawn(async move { verifier.run().await });
        let mut ends = vec![before];
        let mut seen = metrics.last_full_pass.get();
        while ends.len() < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let now = metrics.last_full_pass.get();
            if now != seen && metrics.cycle_duration.get() > 0.0 {
                seen = now;
                ends.push(registry.requests_since(0, 0).len());
                println!("pass {} took {:.1} s", ends.len() - 1, metrics.cycle_duration.get());
                // Assessed before the pass: its need against the budget.
                if let Some(b) = inventory.view().budget {
                    println!(
                        "  budget assessed before it: {} {} needed of {} available ({})",
                        b.calls_needed, b.unit, b.calls_available, b.registry
                    );
                }
            }
        }
        pass.abort();
        let requests = registry.requests();
        let blobs = repos * (1 + 2 * tags);
        let images = repos * tags;
        for (n, window) in ends.windows(2).enumerate() {
            let counted = kinds(&requests[window[0]..window[1]]);
            let gets = if n == 0 { images } else { 0 };
            println!(
                "pass {}: {counted:?}; minimum {{\"blob HEAD\": {blobs}, \"manifest GET\": {gets}, \"manifest HEAD\": {images}}}",
                n + 1
            );
        }
        let outcomes: BTreeMap<String, usize> = inventory
            .view()
            .workloads
            .iter()
            .flat_map(|w| w.containers.iter().map(|c| c.outcome.clone()))
            .fold(BTreeMap::new(), |mut m, o| {
                *m.entry(o).or_insert(0) += 1;
                m
            });
        println!("outcomes: {outcomes:?}");
    });
}
