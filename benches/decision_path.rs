//! The pure decision path with warm caches: decode (borrowed view) → extract → cached
//! lookups → decision → response JSON, for the ~10 KB Deployment review with 3 containers
//! from 2 ECR repositories. Also the two decodes side by side: the borrowed view the
//! webhook uses, and a full `k8s-openapi` decode.
//!
//!   cargo bench --bench decision_path

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use common::memory_registry::MemoryRegistry;
use criterion::{criterion_group, criterion_main, Criterion};
use ecr_preflight::admission::{self, review::ReviewView, OwnedObjects, Policy};
use ecr_preflight::decision::{Mode, OnError};
use ecr_preflight::engine::{Engine, EngineSettings};
use ecr_preflight::image::RepositoryKey;
use ecr_preflight::manifest::Platform;
use ecr_preflight::platforms::{
    ClusterFacts, ConfigCache, NodeFacts, PlatformSources, PoolFacts, Requirement, Taint,
    TaintEffect,
};
use ecr_preflight::registry::{BlobState, ConfigPlatforms, RegistryError};
use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::Deployment;
use kube::core::admission::AdmissionReview;

const REVIEW: &str = include_str!("../tests/fixtures/deployment-10k-create.json");
/// The same Deployment as `kubectl apply` sends it: its last-applied-configuration
/// annotation holds the object again as escaped JSON (19 KB compact).
const APPLIED: &str = include_str!("../tests/fixtures/deployment-applied-create.json");

/// Decodes the view and extracts the images, as the webhook does.
fn decode_images(body: &[u8]) -> usize {
    images_of_view(ReviewView::parse(body).expect("view"))
}

/// The images of a decoded view, as the webhook extracts them.
fn images_of_view(view: ReviewView<'_>) -> usize {
    let object = view
        .request
        .expect("request")
        .object
        .resolve()
        .expect("view")
        .expect("object");
    ecr_preflight::admission::objects::images_of(
        ecr_preflight::workload::WorkloadKind::Deployment,
        &object,
    )
    .len()
}

/// The same borrowed view through `sonic-rs` (SIMD, serde) and `simd-json` (SIMD, serde;
/// it decodes in place, so each run copies the body first, as the webhook would have to).
fn other_decoders(c: &mut Criterion, name: &str, body: &[u8]) {
    let expected = decode_images(body);
    assert_eq!(
        images_of_view(sonic_rs::from_slice(body).expect("sonic-rs")),
        expected
    );
    let mut copy = body.to_vec();
    assert_eq!(
        images_of_view(simd_json::serde::from_slice(&mut copy).expect("simd-json")),
        expected
    );
    c.bench_function(&format!("{name}_sonic_rs"), |b| {
        b.iter(|| {
            let view: ReviewView<'_> = sonic_rs::from_slice(black_box(body)).expect("view");
            black_box(images_of_view(view))
        })
    });
    c.bench_function(&format!("{name}_simd_json"), |b| {
        b.iter(|| {
            let mut copy = black_box(body).to_vec();
            let view: ReviewView<'_> = simd_json::serde::from_slice(&mut copy).expect("view");
            black_box(images_of_view(view))
        })
    });
}

fn compact(json: &str) -> Vec<u8> {
    let value: serde_json::Value = serde_json::from_str(json).expect("fixture");
    serde_json::to_vec(&value).expect("json")
}

/// Every config blob says linux/amd64.
struct Amd64;

impl ConfigPlatforms for Amd64 {
    fn config_platform<'a>(
        &'a self,
        _: &'a str,
        _: &'a RepositoryKey,
        _: &'a str,
    ) -> BoxFuture<'a, Result<Platform, RegistryError>> {
        Box::pin(async { Ok("linux/amd64".parse().expect("platform")) })
    }
}

/// 60 amd64 nodes (10 of them tainted), a NodePool of amd64 nodes.
fn platform_sources() -> PlatformSources {
    let cluster = ClusterFacts::new();
    let nodes = (0..60)
        .map(|i| {
            let mut labels = std::collections::BTreeMap::new();
            labels.insert("kubernetes.io/os".to_owned(), "linux".to_owned());
            labels.insert("kubernetes.io/arch".to_owned(), "amd64".to_owned());
            labels.insert(
                "topology.kubernetes.io/zone".to_owned(),
                format!("us-east-1{}", i % 3),
            );
            let taints = if i % 6 == 0 {
                vec![Taint {
                    key: "dedicated".into(),
                    value: Some("batch".into()),
                    effect: TaintEffect::NoSchedule,
                }]
            } else {
                Vec::new()
            };
            let name = format!("ip-10-0-{i}-1");
            (
                name.clone(),
                NodeFacts {
                    name,
                    labels,
                    taints,
                },
            )
        })
        .collect();
    cluster.nodes_listed(nodes);
    let pool = PoolFacts {
        name: "general".into(),
        labels: Default::default(),
        requirements: vec![
            Requirement::new("kubernetes.io/arch", "In", vec!["amd64".into()])
                .expect("requirement"),
        ],
        taints: Vec::new(),
    };
    cluster.pools_listed([("general".to_owned(), pool)].into_iter().collect());
    PlatformSources {
        cluster,
        configs: Some(Arc::new(ConfigCache::new(Arc::new(Amd64)))),
    }
}

/// The sample's three images (two repositories) in an in-memory registry, an engine on it,
/// and enforce mode: what every review here is decided with.
struct Sample {
    runtime: tokio::runtime::Runtime,
    reg: Arc<MemoryRegistry>,
    engine: Engine,
    policy: Policy,
}

fn sample() -> Sample {
    let reg = Arc::new(MemoryRegistry::default());
    reg.push_image("sample/app", "1.4", 8, BlobState::Available);
    reg.push_image("sample/app", "1.4-metrics", 3, BlobState::Available);
    reg.push_image("sample/worker", "2.0", 6, BlobState::Available);
    Sample {
        runtime: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime"),
        engine: Engine::new(
            reg.clone(),
            EngineSettings::new(vec!["linux/amd64".parse().expect("p")]),
        ),
        reg,
        policy: Policy {
            mode: Mode::Enforce,
            on_error: OnError::Allow,
            owned_objects: OwnedObjects::Audit,
        },
    }
}

fn bench(c: &mut Criterion) {
    let body = compact(REVIEW);
    let Sample {
        runtime,
        reg,
        engine,
        policy,
    } = sample();
    let budget = Duration::from_secs(3);
    let warm = runtime
        .block_on(admission::evaluate(
            &engine,
            policy,
            Default::default(),
            &body,
            budget,
        ))
        .expect("review");
    assert!(warm
        .verdict
        .as_ref()
        .is_some_and(|v| v.allowed() && v.problems.is_empty()));
    let calls = reg.calls();

    c.bench_function("review_warm_10k_deployment", |b| {
        b.iter(|| {
            let reviewed = runtime
                .block_on(admission::evaluate(
                    &engine,
                    policy,
                    Default::default(),
                    black_box(&body),
                    budget,
                ))
                .expect("review");
            black_box(reviewed.to_json().expect("json"))
        })
    });
    assert_eq!(reg.calls(), calls, "the warm path made ECR calls");

    // The same with the platform check on: 60 nodes and a NodePool, config blobs' platforms
    // known after the first review.
    let platforms = platform_sources();
    let first = runtime
        .block_on(admission::evaluate(
            &engine,
            policy,
            admission::Sources {
                platforms: Some(&platforms),
                pull_secrets: None,
            },
            &body,
            budget,
        ))
        .expect("review");
    assert_eq!(first.platform_source, "nodes+nodepools");
    assert!(
        first.verdict.as_ref().is_some_and(|v| v.allowed()),
        "{:?}",
        first.verdict
    );
    let reads = platforms.configs.as_ref().map(|c| c.reads());
    c.bench_function("review_warm_10k_deployment_platforms", |b| {
        b.iter(|| {
            let reviewed = runtime
                .block_on(admission::evaluate(
                    &engine,
                    policy,
                    admission::Sources {
                        platforms: Some(&platforms),
                        pull_secrets: None,
                    },
                    black_box(&body),
                    budget,
                ))
                .expect("review");
            black_box(reviewed.to_json().expect("json"))
        })
    });
    assert_eq!(
        platforms.configs.as_ref().map(|c| c.reads()),
        reads,
        "the warm path read config blobs"
    );

    c.bench_function("decode_borrowed_view", |b| {
        b.iter(|| black_box(decode_images(black_box(&body))))
    });
    let applied = compact(APPLIED);
    c.bench_function("decode_borrowed_view_applied_19k", |b| {
        b.iter(|| black_box(decode_images(black_box(&applied))))
    });
    other_decoders(c, "decode_borrowed_view", &body);
    other_decoders(c, "decode_borrowed_view_applied_19k", &applied);
    c.bench_function("decode_borrowed_view_applied_19k_serde_json", |b| {
        b.iter(|| {
            let view = ReviewView::parse_with_serde(black_box(&applied)).expect("view");
            black_box(view.request.is_some())
        })
    });
    c.bench_function("decode_borrowed_view_serde_json", |b| {
        b.iter(|| {
            let view = ReviewView::parse_with_serde(black_box(&body)).expect("view");
            black_box(view.request.is_some())
        })
    });
    c.bench_function("decode_full_k8s_openapi", |b| {
        b.iter(|| {
            let review: AdmissionReview<Deployment> =
                serde_json::from_slice(black_box(&body)).expect("decode");
            black_box(
                review
                    .request
                    .and_then(|r| r.object)
                    .map(|d| d.spec.template.spec.map(|s| s.containers.len())),
            )
        })
    });
}

/// The sample Pod review (`pod-create.json`) running the 10 KB review's three images.
fn pod_body() -> Vec<u8> {
    let mut review: serde_json::Value =
        serde_json::from_str(include_str!("../tests/fixtures/pod-create.json")).expect("pod");
    let spec = &mut review["request"]["object"]["spec"];
    spec["containers"] = serde_json::json!([
        {"name": "app", "image": format!("{}/sample/app:1.4", common::seed::REGISTRY)},
        {"name": "metrics", "image": format!("{}/sample/app:1.4-metrics", common::seed::REGISTRY)},
        {"name": "worker", "image": format!("{}/sample/worker:2.0", common::seed::REGISTRY)},
    ]);
    if let Some(spec) = spec.as_object_mut() {
        spec.remove("initContainers");
    }
    review.to_string().into_bytes()
}

/// `/mutate` against `/validate` on the same Pod review, caches warm: the cost pinning adds.
fn pinning(c: &mut Criterion) {
    let Sample {
        runtime,
        reg,
        engine,
        policy,
    } = sample();
    let body = pod_body();
    let budget = Duration::from_secs(3);
    let pinned = runtime
        .block_on(admission::pin(&engine, Default::default(), &body, budget))
        .expect("pin");
    assert!(
        pinned
            .pins
            .iter()
            .all(|p| p.result == admission::PinResult::Pinned),
        "{:?}",
        pinned.pins
    );
    let calls = reg.calls();
    c.bench_function("pod_validate_warm", |b| {
        b.iter(|| {
            let reviewed = runtime
                .block_on(admission::evaluate(
                    &engine,
                    policy,
                    Default::default(),
                    black_box(&body),
                    budget,
                ))
                .expect("review");
            black_box(reviewed.to_json().expect("json"))
        })
    });
    c.bench_function("pod_mutate_warm", |b| {
        b.iter(|| {
            let pinned = runtime
                .block_on(admission::pin(
                    &engine,
                    Default::default(),
                    black_box(&body),
                    budget,
                ))
                .expect("pin");
            black_box(pinned.json)
        })
    });
    assert_eq!(reg.calls(), calls, "the warm path made ECR calls");
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = bench, pinning
}
criterion_main!(benches);
