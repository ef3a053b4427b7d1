//! Pod templates from every kind, read from AdmissionReview fixtures through the borrowed
//! view, cross-checked against a full `k8s-openapi` decode.

use ecr_preflight::admission::objects;
use ecr_preflight::admission::review::{ObjectField, ReviewView};
use ecr_preflight::workload::ContainerKind;
use ecr_preflight::workload::WorkloadKind;
use k8s_openapi::api::{apps, batch, core};
use kube::core::admission::AdmissionReview;
use kube::core::DynamicObject;

const FIXTURES: &[(&str, &str)] = &[
    ("pod-create.json", include_str!("fixtures/pod-create.json")),
    (
        "pod-create-dryrun.json",
        include_str!("fixtures/pod-create-dryrun.json"),
    ),
    (
        "pod-owned-create.json",
        include_str!("fixtures/pod-owned-create.json"),
    ),
    (
        "pod-mirror-create.json",
        include_str!("fixtures/pod-mirror-create.json"),
    ),
    (
        "pod-ephemeralcontainers-update.json",
        include_str!("fixtures/pod-ephemeralcontainers-update.json"),
    ),
    (
        "pod-public-images-create.json",
        include_str!("fixtures/pod-public-images-create.json"),
    ),
    (
        "deployment-create.json",
        include_str!("fixtures/deployment-create.json"),
    ),
    (
        "deployment-10k-create.json",
        include_str!("fixtures/deployment-10k-create.json"),
    ),
    (
        "deployment-update-scale.json",
        include_str!("fixtures/deployment-update-scale.json"),
    ),
    (
        "deployment-update-image.json",
        include_str!("fixtures/deployment-update-image.json"),
    ),
    (
        "statefulset-create.json",
        include_str!("fixtures/statefulset-create.json"),
    ),
    (
        "daemonset-create.json",
        include_str!("fixtures/daemonset-create.json"),
    ),
    (
        "replicaset-owned-create.json",
        include_str!("fixtures/replicaset-owned-create.json"),
    ),
    ("job-create.json", include_str!("fixtures/job-create.json")),
    (
        "cronjob-create.json",
        include_str!("fixtures/cronjob-create.json"),
    ),
    (
        "replicationcontroller-create.json",
        include_str!("fixtures/replicationcontroller-create.json"),
    ),
];

fn fixture(name: &str) -> &'static str {
    FIXTURES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| *s)
        .expect("fixture")
}

/// Images of the new object through the borrowed view, as (kind, container, image).
fn view_images(body: &str) -> (WorkloadKind, Vec<(ContainerKind, String, String)>) {
    let view = ReviewView::parse(body.as_bytes()).expect("view");
    let request = view.request.expect("request");
    let kind = request.kind.workload_kind().expect("workload kind");
    let object = request
        .object
        .resolve()
        .expect("object view")
        .expect("object");
    let images = objects::images_of(kind, &object)
        .into_iter()
        .map(|c| (c.kind, c.name.into_owned(), c.image.into_owned()))
        .collect();
    (kind, images)
}

fn spec_images(spec: &core::v1::PodSpec) -> Vec<(ContainerKind, String, String)> {
    let mut out = Vec::new();
    for c in spec.init_containers.iter().flatten() {
        out.push((
            ContainerKind::Init,
            c.name.clone(),
            c.image.clone().unwrap_or_default(),
        ));
    }
    for c in &spec.containers {
        out.push((
            ContainerKind::Container,
            c.name.clone(),
            c.image.clone().unwrap_or_default(),
        ));
    }
    for c in spec.ephemeral_containers.iter().flatten() {
        out.push((
            ContainerKind::Ephemeral,
            c.name.clone(),
            c.image.clone().unwrap_or_default(),
        ));
    }
    out
}

/// The same through `kube`'s AdmissionReview and typed `k8s-openapi` objects.
fn reference_images(body: &str, kind: WorkloadKind) -> Vec<(ContainerKind, String, String)> {
    let review: AdmissionReview<DynamicObject> = serde_json::from_str(body).expect("kube decode");
    let object = review.request.expect("request").object.expect("object");
    let value = serde_json::to_value(object).expect("value");
    fn typed<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).expect("typed decode")
    }
    let template = |t: Option<core::v1::PodTemplateSpec>| {
        t.and_then(|t| t.spec)
            .map(|s| spec_images(&s))
            .unwrap_or_default()
    };
    match kind {
        WorkloadKind::Pod => typed::<core::v1::Pod>(value)
            .spec
            .map(|s| spec_images(&s))
            .unwrap_or_default(),
        WorkloadKind::Deployment => {
            template(Some(typed::<apps::v1::Deployment>(value).spec.template))
        }
        WorkloadKind::StatefulSet => {
            template(Some(typed::<apps::v1::StatefulSet>(value).spec.template))
        }
        WorkloadKind::DaemonSet => {
            template(Some(typed::<apps::v1::DaemonSet>(value).spec.template))
        }
        WorkloadKind::ReplicaSet => template(typed::<apps::v1::ReplicaSet>(value).spec.template),
        WorkloadKind::Job => template(typed::<batch::v1::Job>(value).spec.map(|s| s.template)),
        WorkloadKind::CronJob => template(
            typed::<batch::v1::CronJob>(value)
                .spec
                .job_template
                .spec
                .map(|s| s.template),
        ),
        WorkloadKind::ReplicationController => template(
            typed::<core::v1::ReplicationController>(value)
                .spec
                .and_then(|s| s.template),
        ),
    }
}

#[test]
fn borrowed_view_and_k8s_openapi_find_the_same_images_in_every_fixture() {
    for (name, body) in FIXTURES {
        let (kind, images) = view_images(body);
        assert!(!images.is_empty(), "{name}: no images found");
        assert_eq!(images, reference_images(body, kind), "{name}");
    }
}

#[test]
fn every_kind_yields_its_template_images() {
    let reg = "123456789012.dkr.ecr.us-east-1.amazonaws.com/sample";
    let expect = |name: &str, kind: WorkloadKind, images: &[&str]| {
        let (k, got) = view_images(fixture(name));
        assert_eq!(k, kind, "{name}");
        let got: Vec<String> = got.into_iter().map(|(_, _, i)| i).collect();
        let want: Vec<String> = images.iter().map(|i| format!("{reg}/{i}")).collect();
        assert_eq!(got, want, "{name}");
    };
    expect(
        "pod-create.json",
        WorkloadKind::Pod,
        &["worker:2.0", "proxy:1.0", "app:1.4"],
    );
    expect(
        "deployment-create.json",
        WorkloadKind::Deployment,
        &["app:1.4", "worker:2.0", "app:1.4-metrics"],
    );
    expect(
        "statefulset-create.json",
        WorkloadKind::StatefulSet,
        &["worker:2.0", "db:16"],
    );
    expect(
        "daemonset-create.json",
        WorkloadKind::DaemonSet,
        &["agent:3.1"],
    );
    expect(
        "replicaset-owned-create.json",
        WorkloadKind::ReplicaSet,
        &["app:1.4"],
    );
    expect("job-create.json", WorkloadKind::Job, &["worker:2.0"]);
    expect(
        "cronjob-create.json",
        WorkloadKind::CronJob,
        &["report:0.9"],
    );
    expect(
        "replicationcontroller-create.json",
        WorkloadKind::ReplicationController,
        &["legacy:1.0"],
    );
    expect(
        "pod-ephemeralcontainers-update.json",
        WorkloadKind::Pod,
        &["worker:2.0", "proxy:1.0", "app:1.4", "debug:1.0"],
    );
}

#[test]
fn owners_and_mirror_pods_are_recognised() {
    let object = |name: &str| {
        let view = ReviewView::parse(fixture(name).as_bytes()).expect("view");
        let object = view
            .request
            .expect("request")
            .object
            .resolve()
            .expect("view")
            .expect("object");
        (
            objects::has_controller_owner(&object),
            objects::is_mirror_pod(&object),
        )
    };
    assert_eq!(object("pod-owned-create.json"), (true, false));
    assert_eq!(object("replicaset-owned-create.json"), (true, false));
    assert_eq!(object("pod-mirror-create.json"), (true, true));
    assert_eq!(object("pod-create.json"), (false, false));
    assert_eq!(object("deployment-create.json"), (false, false));
}

#[test]
fn update_checks_only_images_new_to_the_object() {
    let new_on_update = |name: &str| {
        let view = ReviewView::parse(fixture(name).as_bytes()).expect("view");
        let request = view.request.expect("request");
        let kind = request.kind.workload_kind().expect("kind");
        let new = request.object.resolve().expect("new").expect("new");
        let old = request.old_object.resolve().expect("old").expect("old");
        let fresh = objects::new_images(
            objects::images_of(kind, &new),
            &objects::images_of(kind, &old),
        );
        fresh
            .into_iter()
            .map(|c| (c.name.into_owned(), c.image.into_owned()))
            .collect::<Vec<_>>()
    };
    assert_eq!(new_on_update("deployment-update-scale.json"), vec![]);
    let reg = "123456789012.dkr.ecr.us-east-1.amazonaws.com/sample";
    assert_eq!(
        new_on_update("deployment-update-image.json"),
        vec![("app".to_owned(), format!("{reg}/app:1.5"))]
    );
    assert_eq!(
        new_on_update("pod-ephemeralcontainers-update.json"),
        vec![("debugger".to_owned(), format!("{reg}/debug:1.0"))]
    );
}

#[test]
fn other_kinds_are_not_workloads() {
    let view = ReviewView::parse(include_bytes!("fixtures/configmap-create.json")).expect("view");
    assert_eq!(view.request.expect("request").kind.workload_kind(), None);
    assert_eq!(WorkloadKind::from_group_kind("apps", "Pod"), None);
    assert_eq!(
        WorkloadKind::from_group_kind("example.com", "Deployment"),
        None
    );
}

#[test]
fn object_before_kind_is_kept_raw_and_decoded_after() {
    let review: serde_json::Value =
        serde_json::from_str(fixture("deployment-create.json")).expect("json");
    let request = &review["request"];
    // serde_json writes keys sorted, so build the body by hand with `object` first.
    let body = format!(
        r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"object":{},"uid":"u1","kind":{},"operation":"CREATE"}}}}"#,
        request["object"], request["kind"]
    );
    let view = ReviewView::parse(body.as_bytes()).expect("view");
    let request = view.request.expect("request");
    assert!(matches!(request.object, ObjectField::Raw(_)));
    let object = request.object.resolve().expect("decode").expect("object");
    let images = objects::images_of(WorkloadKind::Deployment, &object);
    assert_eq!(images.len(), 3);
}

#[test]
fn objects_of_other_kinds_are_skipped_unread_whatever_their_shape() {
    let body = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u2",
        "kind":{"group":"example.com","version":"v1","kind":"Widget"},"operation":"CREATE",
        "object":{"metadata":{"name":"w"},"spec":{"template":"not an object","containers":7}}}}"#;
    let view = ReviewView::parse(body.as_bytes()).expect("a Widget's odd spec is not our business");
    assert!(matches!(
        view.request.expect("request").object,
        ObjectField::Skipped
    ));
}

/// The webhook (the review's borrowed view) and the controller (k8s-openapi) read one pod
/// spec the same way: the same containers, an empty or absent image skipped by both, and
/// the same placement.
#[test]
fn the_webhook_and_the_controller_read_a_pod_spec_alike() {
    let text = serde_json::json!({
        "initContainers": [{"name": "init", "image": "init:1"}],
        "containers": [
            {"name": "app", "image": "app:2"},
            {"name": "defaulted-later", "image": ""},
            {"name": "no-image"}
        ],
        "ephemeralContainers": [{"name": "debug", "image": "busybox"}],
        "nodeSelector": {"kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "arm64"},
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": "team", "operator": "In", "values": ["a", "b"]}],
                 "matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["n1"]}]},
                {"matchExpressions": [{"key": "zone", "operator": "Sometimes"}]}
            ]}}},
        "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}, {"operator": "Exists"}],
        "nodeName": "ip-10-0-0-1"
    })
    .to_string();
    let view: ecr_preflight::admission::review::SpecView =
        serde_json::from_str(&text).expect("view");
    let typed: core::v1::PodSpec = serde_json::from_str(&text).expect("typed");

    let webhook: Vec<(String, ContainerKind, String)> = objects::container_images(&view)
        .into_iter()
        .map(|c| (c.name.into_owned(), c.kind, c.image.into_owned()))
        .collect();
    let controller: Vec<(String, ContainerKind, String)> =
        ecr_preflight::workload::spec::images(&&typed)
            .into_iter()
            .map(|c| (c.name.into_owned(), c.kind, c.image.into_owned()))
            .collect();
    assert_eq!(webhook, controller);
    assert_eq!(
        webhook,
        [
            ("init".to_owned(), ContainerKind::Init, "init:1".to_owned()),
            (
                "app".to_owned(),
                ContainerKind::Container,
                "app:2".to_owned()
            ),
            (
                "debug".to_owned(),
                ContainerKind::Ephemeral,
                "busybox".to_owned()
            ),
        ]
    );
    let webhook = ecr_preflight::workload::spec::placement(&view);
    let controller = ecr_preflight::workload::spec::placement(&&typed);
    assert_eq!(webhook, controller);
    assert_eq!(webhook.node_name.as_deref(), Some("ip-10-0-0-1"));
    assert_eq!(webhook.terms.len(), 2, "the unmeetable term is kept, empty");
    assert_eq!(webhook.tolerations.len(), 2);
}
