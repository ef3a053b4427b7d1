//! The engine behind the registry seam, with answers the emulator cannot give and with its
//! calls counted.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::memory_registry::{oci_manifest, MemoryRegistry};
use common::seed::{sha256, OCI_INDEX, OCI_MANIFEST, REGISTRY};
use ecr_preflight::decision::{decide, ContainerFinding, Mode, OnError};
use ecr_preflight::engine::{Engine, EngineSettings};
use ecr_preflight::findings::{Finding, Outcome};
use ecr_preflight::registry::{BlobState, RegistryError};
use ecr_preflight::workload::ContainerKind;
use serde_json::json;
use tokio::time::Instant;

fn engine(registry: Arc<MemoryRegistry>) -> Engine {
    Engine::new(
        registry,
        EngineSettings::new(vec![
            "linux/amd64".parse().expect("p"),
            "linux/arm64".parse().expect("p"),
        ]),
    )
}

fn digests(seed: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| sha256(format!("{seed}-{i}").as_bytes()))
        .collect()
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(3)
}

#[tokio::test]
async fn archived_blobs_make_the_image_archived() {
    let reg = Arc::new(MemoryRegistry::default());
    let blobs = reg.push_image("team/app", "1.4", 3, BlobState::Available);
    reg.blob("team/app", &blobs[2], BlobState::Archived);
    let image = format!("{REGISTRY}/team/app:1.4");
    let reports = engine(reg.clone())
        .check(std::slice::from_ref(&image), deadline())
        .await;
    assert_eq!(reports[0].outcome(), Outcome::Archived);
    let verdict = decide(
        Mode::Enforce,
        OnError::Allow,
        &[ContainerFinding {
            container: "app",
            kind: ContainerKind::Container,
            report: &reports[0],
        }],
    );
    let message = verdict.message.expect("denied");
    assert!(
        message.starts_with(&format!(
            "container app: {image}: image archived; restore it before pulling"
        )),
        "{message}"
    );
    assert!(message.contains(&blobs[2]));
    // The denial says how to restore it.
    assert!(
        message.contains("aws ecr update-image-storage-class --registry-id 123456789012 --region us-east-1 --repository-name team/app --image-id imageTag="),
        "{message}"
    );
    assert!(
        message.contains("--target-storage-class STANDARD"),
        "{message}"
    );
}

#[tokio::test]
async fn a_repeated_image_gets_one_check_and_the_same_report_each_time() {
    let reg = Arc::new(MemoryRegistry::default());
    let blobs = reg.push_image("team/app", "2", 2, BlobState::Available);
    reg.blob("team/app", &blobs[0], BlobState::Unavailable);
    reg.push_image("team/ok", "1", 2, BlobState::Available);
    let (bad, ok) = (
        format!("{REGISTRY}/team/app:2"),
        format!("{REGISTRY}/team/ok:1"),
    );
    let images = [
        bad.clone(),
        ok.clone(),
        bad.clone(),
        ok.clone(),
        "nginx".into(),
    ];
    let engine = engine(reg.clone());
    // Cold, then with the intact image cached.
    for round in 0..2 {
        let reports = engine.check(&images, deadline()).await;
        let seen: Vec<(&str, Outcome)> = reports
            .iter()
            .map(|r| (r.image.as_str(), r.outcome()))
            .collect();
        assert_eq!(
            seen,
            [
                (bad.as_str(), Outcome::Missing),
                (ok.as_str(), Outcome::Ok),
                (bad.as_str(), Outcome::Missing),
                (ok.as_str(), Outcome::Ok),
                ("nginx", Outcome::Skipped),
            ],
            "round {round}"
        );
        assert_eq!(reports[0].finding, reports[2].finding);
        assert_eq!(reports[1].finding, reports[3].finding);
    }
}

#[tokio::test]
async fn unavailable_blobs_are_missing() {
    let reg = Arc::new(MemoryRegistry::default());
    let blobs = reg.push_image("team/app", "1", 2, BlobState::Available);
    reg.blob("team/app", &blobs[1], BlobState::Unavailable);
    let reports = engine(reg)
        .check(&[format!("{REGISTRY}/team/app:1")], deadline())
        .await;
    match &reports[0].finding {
        Finding::Checked(p) => assert_eq!(p[0].missing, vec![blobs[1].clone()]),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn blob_checks_never_exceed_a_hundred_digests_per_call() {
    let reg = Arc::new(MemoryRegistry::default());
    reg.push_image("team/big", "1", 250, BlobState::Available);
    let reports = engine(reg.clone())
        .check(&[format!("{REGISTRY}/team/big:1")], deadline())
        .await;
    assert_eq!(reports[0].outcome(), Outcome::Ok);
    assert_eq!(
        reg.calls(),
        (1, 3),
        "one BatchGetImage, ceil(250/100) blob checks"
    );
    assert_eq!(
        reg.max_digests_per_call
            .load(std::sync::atomic::Ordering::SeqCst),
        100
    );
}

#[tokio::test]
async fn image_lookups_never_exceed_a_hundred_ids_per_call() {
    let reg = Arc::new(MemoryRegistry::default());
    let mut images = Vec::new();
    for i in 0..150 {
        reg.push_image("team/many", &format!("v{i}"), 1, BlobState::Available);
        images.push(format!("{REGISTRY}/team/many:v{i}"));
    }
    let reports = engine(reg.clone()).check(&images, deadline()).await;
    assert!(reports.iter().all(|r| r.outcome() == Outcome::Ok));
    assert_eq!(reg.calls(), (2, 2));
    assert_eq!(
        reg.max_ids_per_call
            .load(std::sync::atomic::Ordering::SeqCst),
        100
    );
}

#[tokio::test]
async fn images_of_one_repository_share_their_calls_and_repositories_are_separate() {
    let reg = Arc::new(MemoryRegistry::default());
    reg.push_image("team/a", "1", 2, BlobState::Available);
    reg.push_image("team/a", "2", 2, BlobState::Available);
    reg.push_image("team/b", "1", 2, BlobState::Available);
    let images: Vec<String> = ["team/a:1", "team/a:2", "team/b:1", "team/a:1"]
        .iter()
        .map(|i| format!("{REGISTRY}/{i}"))
        .collect();
    let reports = engine(reg.clone()).check(&images, deadline()).await;
    assert_eq!(reports.len(), 4);
    assert!(reports.iter().all(|r| r.outcome() == Outcome::Ok));
    assert_eq!(
        reg.calls(),
        (2, 2),
        "one BatchGetImage and one blob check per repository"
    );
}

#[tokio::test]
async fn an_index_takes_three_round_trips_and_skips_attestations() {
    let reg = Arc::new(MemoryRegistry::default());
    let amd = digests("amd", 2);
    let att = digests("att", 2);
    for b in &amd {
        reg.blob("team/multi", b, BlobState::Available);
    }
    let amd_digest = reg.put("team/multi", None, &oci_manifest(&amd), OCI_MANIFEST);
    let att_digest = reg.put("team/multi", None, &oci_manifest(&att), OCI_MANIFEST);
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": amd_digest, "size": 1, "platform": {"os": "linux", "architecture": "amd64"}},
        {"mediaType": OCI_MANIFEST, "digest": att_digest, "size": 1, "platform": {"os": "unknown", "architecture": "unknown"}},
    ]});
    reg.put("team/multi", Some("1"), &index.to_string(), OCI_INDEX);
    let reports = engine(reg.clone())
        .check(&[format!("{REGISTRY}/team/multi:1")], deadline())
        .await;
    assert_eq!(reports[0].outcome(), Outcome::Ok, "{reports:?}");
    assert_eq!(reg.calls(), (2, 1));
    match &reports[0].finding {
        Finding::Checked(p) => {
            assert_eq!(p.len(), 1);
            assert_eq!(
                p[0].platform.as_ref().map(ToString::to_string).as_deref(),
                Some("linux/amd64")
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_widened_platform_set_checks_the_new_children_of_images_found_intact() {
    let reg = Arc::new(MemoryRegistry::default());
    let (amd, win) = (digests("w-amd", 2), digests("w-win", 2));
    for b in &amd {
        reg.blob("team/multi", b, BlobState::Available);
    }
    reg.blob("team/multi", &win[0], BlobState::Available);
    let amd_digest = reg.put("team/multi", None, &oci_manifest(&amd), OCI_MANIFEST);
    let win_digest = reg.put("team/multi", None, &oci_manifest(&win), OCI_MANIFEST);
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": amd_digest, "size": 1, "platform": {"os": "linux", "architecture": "amd64"}},
        {"mediaType": OCI_MANIFEST, "digest": win_digest, "size": 1, "platform": {"os": "windows", "architecture": "amd64"}},
    ]});
    reg.put("team/multi", Some("1"), &index.to_string(), OCI_INDEX);
    let image = [format!("{REGISTRY}/team/multi:1")];
    let engine = engine(reg.clone());
    // Linux only: intact, and remembered so (no call the second time).
    assert_eq!(
        engine.check(&image, deadline()).await[0].outcome(),
        Outcome::Ok
    );
    engine.check(&image, deadline()).await;
    assert_eq!(reg.calls(), (2, 1));
    // Windows nodes join: the windows child is checked, its missing layer found.
    engine.widen_platforms(&[
        "windows/amd64".parse().expect("p"),
        "linux/amd64".parse().expect("p"),
    ]);
    assert_eq!(engine.checked_platforms().len(), 3);
    let reports = engine.check(&image, deadline()).await;
    assert_eq!(reports[0].outcome(), Outcome::Missing, "{reports:?}");
    match &reports[0].finding {
        Finding::Checked(p) => assert_eq!(p[1].missing, vec![win[1].clone()], "{p:?}"),
        other => panic!("{other:?}"),
    }
    // Widening by what is already checked forgets nothing.
    engine.widen_platforms(&["linux/amd64".parse().expect("p")]);
    assert_eq!(engine.checked_platforms().len(), 3);
}

#[tokio::test]
async fn a_child_manifest_missing_from_ecr_is_reported_for_its_platform() {
    let reg = Arc::new(MemoryRegistry::default());
    let gone = sha256(b"deleted child");
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": gone, "size": 1, "platform": {"os": "linux", "architecture": "arm64"}},
    ]});
    reg.put("team/multi", Some("1"), &index.to_string(), OCI_INDEX);
    let reports = engine(reg)
        .check(&[format!("{REGISTRY}/team/multi:1")], deadline())
        .await;
    assert_eq!(reports[0].outcome(), Outcome::Missing);
    let verdict = decide(
        Mode::Warn,
        OnError::Allow,
        &[ContainerFinding {
            container: "c",
            kind: ContainerKind::Container,
            report: &reports[0],
        }],
    );
    assert!(
        verdict.warnings[0].contains("(linux/arm64): manifest sha256:"),
        "{:?}",
        verdict.warnings
    );
}

#[tokio::test]
async fn registry_errors_are_unknown_and_name_the_permission() {
    let reg = Arc::new(MemoryRegistry::default());
    reg.push_image("team/denied", "1", 1, BlobState::Available);
    reg.push_image("team/fine", "1", 1, BlobState::Available);
    reg.fail(
        "team/denied",
        RegistryError::AccessDenied {
            operation: "ecr:BatchGetImage",
        },
    );
    let images = vec![
        format!("{REGISTRY}/team/denied:1"),
        format!("{REGISTRY}/team/fine:1"),
    ];
    let reports = engine(reg).check(&images, deadline()).await;
    assert_eq!(
        reports[0].finding,
        Finding::Unknown("AccessDeniedException (ecr:BatchGetImage)".into())
    );
    assert_eq!(
        reports[1].outcome(),
        Outcome::Ok,
        "one repository's trouble does not spill over"
    );
}

#[tokio::test]
async fn blobs_ecr_does_not_answer_for_are_unknown_not_ok() {
    let reg = Arc::new(MemoryRegistry::default());
    let blobs = reg.push_image("team/app", "1", 3, BlobState::Available);
    reg.silent_blobs
        .lock()
        .expect("lock")
        .push(blobs[1].clone());
    let reports = engine(reg)
        .check(&[format!("{REGISTRY}/team/app:1")], deadline())
        .await;
    assert_eq!(reports[0].outcome(), Outcome::Unknown);
}

#[tokio::test]
async fn hostile_manifests_are_unknown_not_a_crash() {
    let reg = Arc::new(MemoryRegistry::default());
    reg.put("team/x", Some("garbage"), "{not json", OCI_MANIFEST);
    reg.put(
        "team/x",
        Some("schema1"),
        r#"{"schemaVersion":1}"#,
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    );
    let many: Vec<serde_json::Value> = (0..300)
        .map(|i| json!({"mediaType": OCI_MANIFEST, "digest": sha256(format!("{i}").as_bytes()), "size": 1, "platform": {"os": "linux", "architecture": "amd64"}}))
        .collect();
    reg.put(
        "team/x",
        Some("wide"),
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": many}).to_string(),
        OCI_INDEX,
    );
    let images: Vec<String> = ["garbage", "schema1", "wide"]
        .iter()
        .map(|t| format!("{REGISTRY}/team/x:{t}"))
        .collect();
    let reports = engine(reg).check(&images, deadline()).await;
    for r in &reports {
        assert_eq!(r.outcome(), Outcome::Unknown, "{r:?}");
    }
    assert!(
        matches!(&reports[1].finding, Finding::Unknown(m) if m.contains("unsupported manifest media type"))
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_registry_answers_unknown_at_the_deadline() {
    struct Slow;
    impl ecr_preflight::registry::Registry for Slow {
        fn batch_get_image<'a>(
            &'a self,
            _: &'a ecr_preflight::image::RepositoryKey,
            _: &'a [ecr_preflight::image::ImageId],
        ) -> futures::future::BoxFuture<
            'a,
            Result<ecr_preflight::registry::BatchGetImageOutput, RegistryError>,
        > {
            Box::pin(async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Err(RegistryError::Timeout)
            })
        }
        fn batch_check_layer_availability<'a>(
            &'a self,
            _: &'a ecr_preflight::image::RepositoryKey,
            _: &'a [String],
        ) -> futures::future::BoxFuture<
            'a,
            Result<ecr_preflight::registry::LayerAvailabilityOutput, RegistryError>,
        > {
            Box::pin(async { Err(RegistryError::Timeout) })
        }
    }
    let engine = Engine::new(
        Arc::new(Slow),
        EngineSettings::new(vec!["linux/amd64".parse().expect("p")]),
    );
    let start = Instant::now();
    let reports = engine
        .check(
            &[format!("{REGISTRY}/team/app:1"), "nginx".to_owned()],
            start + Duration::from_secs(2),
        )
        .await;
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(
        reports[0].finding,
        Finding::Unknown("no answer from ECR within 2.0s".into())
    );
    assert_eq!(reports[1].finding, Finding::Skipped);
}

#[tokio::test]
async fn an_object_with_too_many_images_checks_the_first_256_and_says_so() {
    use ecr_preflight::admission::{evaluate, OwnedObjects, Policy, MAX_IMAGES_PER_OBJECT};
    let reg = Arc::new(MemoryRegistry::default());
    let engine = engine(reg.clone());
    let containers: Vec<serde_json::Value> = (0..300)
        .map(|i| json!({"name": format!("c{i}"), "image": format!("{REGISTRY}/team/app:{i}")}))
        .collect();
    let body = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE",
        "object": {"metadata": {"name": "wide"}, "spec": {"containers": containers}}}})
    .to_string();
    let policy = Policy {
        mode: Mode::Warn,
        on_error: OnError::Allow,
        owned_objects: OwnedObjects::Audit,
    };
    let reviewed = evaluate(
        &engine,
        policy,
        Default::default(),
        body.as_bytes(),
        Duration::from_secs(3),
    )
    .await
    .expect("review");
    assert_eq!(reviewed.reports.len(), 300);
    let unchecked = reviewed
        .reports
        .iter()
        .filter(|r| matches!(&r.finding, Finding::Unknown(m) if m.starts_with("not checked")))
        .count();
    assert_eq!(unchecked, 300 - MAX_IMAGES_PER_OBJECT);
    let verdict = reviewed.verdict.expect("verdict");
    assert!(verdict.warnings.len() <= ecr_preflight::decision::MAX_WARNINGS);
    assert!(verdict
        .warnings
        .last()
        .is_some_and(|w| w.starts_with("… and ")));
}
