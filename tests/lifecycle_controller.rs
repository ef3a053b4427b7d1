//! The controller's lifecycle work behind the registry seam, on the paused clock: what the
//! emulator cannot answer (lifecycle policy previews, UpdateImageStorageClass). A preview's
//! disagreement with the forecast is counted per repository; an archived image in use is
//! restored once, told once, and a refused restore is tried again the next pass only.

mod common;

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::memory_registry::MemoryRegistry;
use common::seed::REGISTRY;
use ecr_preflight::engine::{Engine, EngineSettings};
use ecr_preflight::image::ImageTarget;
use ecr_preflight::lifecycle::{Action, ImageFacts, ImageStatus};
use ecr_preflight::registry::{BlobState, Preview, PreviewAction, RegistryError};
use ecr_preflight::watch::inventory::{key_of, project_workload};
use ecr_preflight::watch::{
    self, ExpirySettings, Inventory, Signals, Verifier, WatchMetrics, WatchSettings,
    DEFAULT_EXPIRY_WARNING,
};
use ecr_preflight::workload::WorkloadKind;
use serde_json::json;

const INTERVAL: Duration = Duration::from_secs(60);

/// A controller's verifier over `registry` for workloads using `images`, run for `run`.
async fn run_verifier(
    registry: &Arc<MemoryRegistry>,
    images: &[String],
    expiry: ExpirySettings,
    run: Duration,
) -> (Arc<Inventory>, Arc<WatchMetrics>) {
    let settings = WatchSettings {
        calls_per_second: 100.0,
        workload_metrics: true,
        expiry: expiry.clone(),
        ..common::watch_settings(100.0, INTERVAL)
    };
    let engine_settings = EngineSettings::new(vec!["linux/amd64".parse().expect("platform")]);
    let admission = Engine::new(registry.clone(), engine_settings.clone());
    let background =
        watch::background_engine(&admission, registry.clone(), &engine_settings, &settings);
    let inventory = Inventory::new(0);
    for (i, image) in images.iter().enumerate() {
        let meta = serde_json::from_value(
            json!({"namespace": "shop", "name": format!("web{i}"), "uid": format!("u{i}")}),
        )
        .expect("meta");
        let spec = serde_json::from_value(json!({"containers": [{"name": "app", "image": image}]}))
            .expect("spec");
        let p = project_workload(WorkloadKind::Deployment, &meta, Some(&spec));
        inventory.apply(
            key_of(WorkloadKind::Deployment, &meta).expect("key"),
            Some(p),
        );
    }
    let metrics: Arc<WatchMetrics> = Arc::new(Default::default());
    let signals = Arc::new(Signals::new(
        metrics.clone(),
        true,
        DEFAULT_EXPIRY_WARNING,
        None,
    ));
    let verifier = Verifier::new(
        Arc::new(background),
        inventory.clone(),
        INTERVAL,
        signals,
        metrics.clone(),
        &expiry,
    );
    let task = tokio::spawn(async move { verifier.run().await });
    tokio::time::sleep(run).await;
    task.abort();
    (inventory, metrics)
}

fn facts(digest: &str, tag: &str, pushed_at: i64) -> ImageFacts {
    ImageFacts::pushed(digest, vec![tag.to_owned()], pushed_at)
}

fn repository_label(image: &str) -> String {
    match ImageTarget::classify(image).expect("reference") {
        ImageTarget::Ecr { repo, .. } => repo.to_string(),
        ImageTarget::Other(_) => panic!("not ECR"),
    }
}

fn calls(registry: &MemoryRegistry, operation: &str) -> Vec<(String, Vec<String>)> {
    registry
        .log
        .lock()
        .expect("lock")
        .iter()
        .filter(|c| c.operation == operation)
        .map(|c| (c.repository.clone(), c.keys.clone()))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_preview_that_disagrees_with_the_forecast_is_counted_for_its_repository() {
    let registry = Arc::new(MemoryRegistry::default());
    registry.has_lifecycle.store(true, Ordering::SeqCst);
    let keep_one = json!({"rules": [{"rulePriority": 1, "description": "keep one", "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1}, "action": {"type": "expire"}}]}).to_string();
    let mut images = Vec::new();
    for repo in ["preview/agrees", "preview/differs"] {
        registry.push_image(repo, "v1", 2, BlobState::Available);
        images.push(format!("{REGISTRY}/{repo}:v1"));
        registry
            .policies
            .lock()
            .expect("lock")
            .insert(repo.into(), keep_one.clone());
        // v1 is the older of two: "keep one" expires it now.
        registry.described.lock().expect("lock").insert(
            repo.into(),
            vec![
                facts("sha256:old", "v1", 1_000),
                facts("sha256:new", "v2", 2_000),
            ],
        );
    }
    let expire = |digest: &str| PreviewAction {
        digest: digest.into(),
        rule_priority: 1,
        action: Action::Expire,
    };
    registry.previews.lock().expect("lock").extend([
        (
            "preview/agrees".to_owned(),
            VecDeque::from([
                Preview::InProgress,
                Preview::Complete(vec![expire("sha256:old")]),
            ]),
        ),
        (
            "preview/differs".to_owned(),
            VecDeque::from([Preview::Complete(vec![
                expire("sha256:old"),
                expire("sha256:new"),
            ])]),
        ),
    ]);
    let preview = ExpirySettings {
        preview: true,
        ..ExpirySettings::default()
    };
    let (inventory, metrics) =
        run_verifier(&registry, &images, preview, Duration::from_secs(30)).await;

    assert_eq!(
        metrics.disagreements(&repository_label(&images[0])),
        Some(0)
    );
    assert_eq!(
        metrics.disagreements(&repository_label(&images[1])),
        Some(1)
    );
    let started = calls(&registry, "StartLifecyclePolicyPreview");
    assert_eq!(started.len(), 2, "one preview a repository: {started:?}");
    let polled = calls(&registry, "GetLifecyclePolicyPreview");
    assert_eq!(
        polled.iter().filter(|(r, _)| r == "preview/agrees").count(),
        2,
        "asked again while in progress: {polled:?}"
    );
    // The forecast of the image in use, from the same facts.
    let view = inventory.view();
    for w in &view.workloads {
        let c = &w.containers[0];
        assert_eq!(c.expiry_action.as_deref(), Some("expire"), "{c:?}");
        let rule = c.expiry_rule.as_ref().expect("rule");
        assert_eq!((rule.priority, rule.digest.as_str()), (1, "sha256:old"));
    }
}

#[tokio::test(start_paused = true)]
async fn without_the_flag_no_preview_is_run() {
    let registry = Arc::new(MemoryRegistry::default());
    registry.has_lifecycle.store(true, Ordering::SeqCst);
    registry.push_image("preview/off", "v1", 2, BlobState::Available);
    let images = vec![format!("{REGISTRY}/preview/off:v1")];
    let (_, metrics) = run_verifier(
        &registry,
        &images,
        ExpirySettings::default(),
        Duration::from_secs(150),
    )
    .await;
    assert!(calls(&registry, "StartLifecyclePolicyPreview").is_empty());
    assert_eq!(metrics.disagreements(&repository_label(&images[0])), None);
    assert_eq!(
        calls(&registry, "GetLifecyclePolicy").len(),
        3,
        "the policy is read once a pass"
    );
    assert!(
        calls(&registry, "DescribeImages").is_empty(),
        "no policy, no image listing"
    );
}

#[tokio::test(start_paused = true)]
async fn an_archived_image_in_use_is_restored_once_and_told() {
    let registry = Arc::new(MemoryRegistry::default());
    registry.has_lifecycle.store(true, Ordering::SeqCst);
    registry.push_image("restore/cold", "v1", 2, BlobState::Archived);
    registry.push_image("restore/warm", "v1", 2, BlobState::Available);
    let images = vec![
        format!("{REGISTRY}/restore/cold:v1"),
        format!("{REGISTRY}/restore/warm:v1"),
    ];
    // Two workloads use the archived image.
    let with_twin = [images.clone(), vec![images[0].clone()]].concat();
    let restore = ExpirySettings {
        restore_archived: true,
        ..ExpirySettings::default()
    };
    let (inventory, metrics) =
        run_verifier(&registry, &with_twin, restore, Duration::from_secs(150)).await;
    assert_eq!(
        calls(&registry, "UpdateImageStorageClass"),
        [("restore/cold".to_owned(), vec!["tag v1".to_owned()])],
        "once, over three passes"
    );
    assert_eq!(
        metrics.events_of("ImageRestoreStarted"),
        2,
        "one Event on each workload using it"
    );
    let outcomes: Vec<String> = inventory
        .view()
        .workloads
        .iter()
        .map(|w| w.containers[0].outcome.clone())
        .collect();
    assert_eq!(outcomes, ["archived", "ok", "archived"]);
}

#[tokio::test(start_paused = true)]
async fn a_refused_restore_is_tried_again_the_next_pass_and_not_before() {
    let registry = Arc::new(MemoryRegistry::default());
    registry.has_lifecycle.store(true, Ordering::SeqCst);
    registry.push_image("restore/denied", "v1", 2, BlobState::Archived);
    *registry.restore_error.lock().expect("lock") = Some(RegistryError::AccessDenied {
        operation: "ecr:UpdateImageStorageClass",
    });
    let images = vec![format!("{REGISTRY}/restore/denied:v1")];
    let restore = ExpirySettings {
        restore_archived: true,
        ..ExpirySettings::default()
    };
    let (_, metrics) = run_verifier(&registry, &images, restore, Duration::from_secs(150)).await;
    assert_eq!(
        calls(&registry, "UpdateImageStorageClass").len(),
        3,
        "once a pass, passes at 0, 60 and 120 s"
    );
    assert_eq!(metrics.events_of("ImageRestoreStarted"), 0);
}

#[tokio::test(start_paused = true)]
async fn without_the_flag_nothing_is_restored() {
    let registry = Arc::new(MemoryRegistry::default());
    registry.has_lifecycle.store(true, Ordering::SeqCst);
    registry.push_image("restore/off", "v1", 2, BlobState::Archived);
    let images = vec![format!("{REGISTRY}/restore/off:v1")];
    let (inventory, _) = run_verifier(
        &registry,
        &images,
        ExpirySettings::default(),
        Duration::from_secs(90),
    )
    .await;
    assert!(calls(&registry, "UpdateImageStorageClass").is_empty());
    assert_eq!(
        inventory.view().workloads[0].containers[0].outcome,
        "archived"
    );
}

#[tokio::test(start_paused = true)]
async fn an_image_already_being_restored_is_not_restored_again_nor_told() {
    // ACTIVATING: another replica (or a person) started the restore. Pulls still fail until
    // it completes, but asking again would only be refused or billed twice.
    let registry = Arc::new(MemoryRegistry::default());
    registry.has_lifecycle.store(true, Ordering::SeqCst);
    registry.push_image("restore/activating", "v1", 2, BlobState::Archived);
    let mut described = ImageFacts::pushed("sha256:aa", vec!["v1".to_owned()], 0);
    described.status = ImageStatus::Activating;
    registry
        .described
        .lock()
        .expect("lock")
        .insert("restore/activating".into(), vec![described]);
    let images = vec![format!("{REGISTRY}/restore/activating:v1")];
    let restore = ExpirySettings {
        restore_archived: true,
        ..ExpirySettings::default()
    };
    let (_, metrics) = run_verifier(&registry, &images, restore, Duration::from_secs(150)).await;
    assert!(calls(&registry, "UpdateImageStorageClass").is_empty());
    assert_eq!(metrics.events_of("ImageRestoreStarted"), 0);
}

#[tokio::test(start_paused = true)]
async fn an_unreadable_policy_is_logged_once_counted_each_pass_and_explained_in_the_inventory() {
    // An AWS-owned repository (an EKS add-on's image) answers AccessDenied every pass.
    let (logs, _guard) = common::logs::capture("ecr_preflight=warn");
    let registry = Arc::new(MemoryRegistry::default());
    registry.has_lifecycle.store(true, Ordering::SeqCst);
    registry.push_image("addon/owned", "v1", 2, BlobState::Available);
    registry.policy_errors.lock().expect("lock").insert(
        "addon/owned".into(),
        RegistryError::AccessDenied {
            operation: "ecr:GetLifecyclePolicy",
        },
    );
    let images = vec![format!("{REGISTRY}/addon/owned:v1")];
    let (inventory, metrics) = run_verifier(
        &registry,
        &images,
        ExpirySettings::default(),
        Duration::from_secs(150),
    )
    .await;
    assert_eq!(
        calls(&registry, "GetLifecyclePolicy").len(),
        3,
        "asked each pass (0, 60, 120 s)"
    );
    assert_eq!(
        metrics.forecast_errors_of(&repository_label(&images[0])),
        Some(3),
        "counted each pass"
    );
    assert_eq!(
        logs.count("cannot forecast lifecycle policies"),
        1,
        "told once: {:?}",
        logs.lines()
    );
    let view = inventory.view();
    let c = &view.workloads[0].containers[0];
    assert!(c.expires_at.is_none());
    let why = c.no_forecast.as_deref().expect("why there is no forecast");
    assert!(
        why.contains("lifecycle policy cannot be read") && why.contains("ecr:GetLifecyclePolicy"),
        "{why}"
    );
}
