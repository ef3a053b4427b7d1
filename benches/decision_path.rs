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
use ecr_preflight::registry::BlobState;
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
    ecr_preflight::workload::images_of(ecr_preflight::workload::WorkloadKind::Deployment, &object)
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

fn bench(c: &mut Criterion) {
    let body = compact(REVIEW);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let reg = Arc::new(MemoryRegistry::default());
    reg.push_image("sample/app", "1.4", 8, BlobState::Available);
    reg.push_image("sample/app", "1.4-metrics", 3, BlobState::Available);
    reg.push_image("sample/worker", "2.0", 6, BlobState::Available);
    let engine = Engine::new(
        reg.clone(),
        EngineSettings::new(vec!["linux/amd64".parse().expect("p")]),
    );
    let policy = Policy {
        mode: Mode::Enforce,
        on_error: OnError::Allow,
        owned_objects: OwnedObjects::Audit,
    };
    let budget = Duration::from_secs(3);
    let warm = runtime
        .block_on(admission::evaluate(&engine, policy, None, &body, budget))
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
                    None,
                    black_box(&body),
                    budget,
                ))
                .expect("review");
            black_box(reviewed.to_json().expect("json"))
        })
    });
    assert_eq!(reg.calls(), calls, "the warm path made ECR calls");

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

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
