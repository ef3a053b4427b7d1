//! `/mutate` (`--pin-digests`) over HTTPS with AdmissionReviews as the API server sends them:
//! the JSON Patch it answers, applied to the Pod, pins each intact image to the digest the
//! check found, and the validating webhook after it asks ECR nothing more.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use common::seed::{Breakage, Seeder, DOCKER_MANIFEST};
use ecr_preflight::engine::{CacheSettings, Engine, EngineSettings};
use serde_json::{json, Value};

/// The webhook with `/mutate` on, on an engine whose tags are trusted for `tag_ttl`.
async fn server(tag_ttl: Duration) -> common::server::TestServer {
    let options = common::server::Options {
        pin_digests: true,
        ..common::server::Options::default()
    };
    let registry = common::server::registry(None, options.timeout).await;
    let engine = Engine::new(
        Arc::new(registry),
        EngineSettings {
            cache: CacheSettings {
                tag_ttl,
                ..CacheSettings::default()
            },
            ..EngineSettings::new(vec!["linux/amd64".parse().expect("platform")])
        },
    );
    common::server::start_with(Arc::new(engine), &options, None).await
}

/// A Pod review of `containers` (name, image) and `init` containers.
fn pod(containers: &[(&str, &str)], init: &[(&str, &str)]) -> Value {
    let mut review: Value = serde_json::from_str(&common::pod_review(containers)).expect("review");
    review["request"]["object"]["spec"]["initContainers"] = init
        .iter()
        .map(|(name, image)| json!({"name": name, "image": image}))
        .collect();
    review
}

/// The Pod after `/mutate`'s patch, and the patch's operations.
async fn mutate(server: &common::server::TestServer, review: &Value) -> (Value, Vec<Value>) {
    let response = server.review("/mutate", review.to_string()).await;
    assert_eq!(response["allowed"], true, "{response}");
    let mut object = review["request"]["object"].clone();
    let Some(encoded) = response["patch"].as_str() else {
        return (object, Vec::new());
    };
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("base64");
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("a JSON Patch");
    json_patch::patch(&mut object, &patch).expect("the patch applies to the Pod");
    let ops: Vec<Value> = serde_json::from_slice(&bytes).expect("ops");
    (object, ops)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intact_images_are_pinned_to_the_digest_checked_and_the_rest_left_as_written() {
    let seeder = Seeder::new(&common::moto::endpoint());
    let repo = common::unique("pin/app");
    let good = seeder
        .image(&repo, "v1", &repo, 2, DOCKER_MANIFEST, Breakage::default())
        .await;
    let broken = seeder
        .image(
            &repo,
            "v2",
            &format!("{repo}-broken"),
            2,
            DOCKER_MANIFEST,
            Breakage {
                missing_layers: &[0],
                missing_config: false,
            },
        )
        .await;
    let server = server(CacheSettings::default().tag_ttl).await;
    let review = pod(
        &[
            ("app", &good.reference()),
            ("sidecar", &good.reference()),
            ("pinned", &good.by_digest()),
        ],
        &[("init", &broken.reference())],
    );
    let (pod, ops) = mutate(&server, &review).await;
    let spec = &pod["spec"];
    let pinned = format!("{}@{}", good.reference(), good.digest);
    assert_eq!(spec["containers"][0]["image"], pinned.as_str());
    assert_eq!(
        spec["containers"][1]["image"],
        pinned.as_str(),
        "a repeated image too"
    );
    assert_eq!(
        spec["containers"][2]["image"],
        good.by_digest(),
        "already by digest"
    );
    assert_eq!(
        spec["initContainers"][0]["image"],
        broken.reference(),
        "not intact: as written"
    );
    // What was pinned, by container, under a key whose `/` the patch escapes as `~1`.
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(
        annotations["pinned.ecr-preflight.dev/app"],
        good.reference()
    );
    assert_eq!(
        annotations["pinned.ecr-preflight.dev/sidecar"],
        good.reference()
    );
    assert!(
        annotations.get("pinned.ecr-preflight.dev/init").is_none(),
        "{annotations}"
    );
    assert!(
        ops.iter()
            .any(|op| op["path"] == "/metadata/annotations/pinned.ecr-preflight.dev~1app"),
        "{ops:?}"
    );

    // The validating webhook, called after: the pinned images need no ECR call, and the
    // broken init container is still denied.
    let calls = server
        .engine
        .stats()
        .batch_get_image
        .load(std::sync::atomic::Ordering::SeqCst);
    let mut validated = review.clone();
    validated["request"]["object"] = pod.clone();
    let answer = server.review("/validate", validated.to_string()).await;
    assert_eq!(answer["allowed"], false, "{answer}");
    assert!(answer["status"]["message"]
        .to_string()
        .contains("init container init"));
    assert_eq!(
        server
            .engine
            .stats()
            .batch_get_image
            .load(std::sync::atomic::Ordering::SeqCst),
        calls,
        "one lookup served both webhooks"
    );

    // Sent again after another webhook's change (reinvocation): nothing more to pin.
    let mut again = review.clone();
    again["request"]["object"] = pod;
    let (_, ops) = mutate(&server, &again).await;
    assert!(ops.is_empty(), "{ops:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_pushed_again_between_two_pods_pins_each_to_its_own_checked_digest() {
    let seeder = Seeder::new(&common::moto::endpoint());
    let repo = common::unique("pin/moving");
    let first = seeder
        .image(
            &repo,
            "v1",
            &format!("{repo}-a"),
            2,
            DOCKER_MANIFEST,
            Breakage::default(),
        )
        .await;
    // Tags trusted for a second (--tag-cache-ttl): the second Pod, created after it, has
    // its tag resolved afresh.
    let ttl = Duration::from_secs(1);
    let server = server(ttl).await;
    let review = pod(&[("app", &first.reference())], &[]);
    let (one, _) = mutate(&server, &review).await;
    let second = seeder
        .image(
            &repo,
            "v1",
            &format!("{repo}-b"),
            2,
            DOCKER_MANIFEST,
            Breakage::default(),
        )
        .await;
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    assert_ne!(first.digest, second.digest);
    let (two, _) = mutate(&server, &review).await;
    assert_eq!(
        one["spec"]["containers"][0]["image"],
        format!("{}@{}", first.reference(), first.digest)
    );
    assert_eq!(
        two["spec"]["containers"][0]["image"],
        format!("{}@{}", second.reference(), second.digest)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutate_is_off_unless_asked() {
    let server = common::server::start(common::server::Options::default()).await;
    let (status, body) = server.post("/mutate", "{}").await;
    assert_eq!(status, 404);
    assert!(body.contains("--pin-digests"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_containers_and_an_added_ephemeral_container_are_pinned_each_in_its_place() {
    let seeder = Seeder::new(&common::moto::endpoint());
    let repo = common::unique("pin/many");
    let a = seeder
        .image(
            &repo,
            "a",
            &format!("{repo}-a"),
            2,
            DOCKER_MANIFEST,
            Breakage::default(),
        )
        .await;
    let b = seeder
        .image(
            &repo,
            "b",
            &format!("{repo}-b"),
            2,
            DOCKER_MANIFEST,
            Breakage::default(),
        )
        .await;
    let server = server(CacheSettings::default().tag_ttl).await;
    let names: Vec<String> = (0..30).map(|i| format!("c{i}")).collect();
    let (ra, rb) = (a.reference(), b.reference());
    let containers: Vec<(&str, &str)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            (
                n.as_str(),
                if i % 2 == 0 { ra.as_str() } else { rb.as_str() },
            )
        })
        .collect();
    let (many, _) = mutate(&server, &pod(&containers, &[])).await;
    for (i, c) in many["spec"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .enumerate()
    {
        let (image, digest) = if i % 2 == 0 {
            (&ra, &a.digest)
        } else {
            (&rb, &b.digest)
        };
        assert_eq!(c["image"], format!("{image}@{digest}"), "container {i}");
        assert_eq!(
            many["metadata"]["annotations"][format!("pinned.ecr-preflight.dev/c{i}")],
            image.as_str()
        );
    }

    // kubectl debug: an UPDATE of pods/ephemeralcontainers adding `debugger` beside the
    // `earlier` one. Only the new one is pinned, and the metadata is left alone.
    let mut update = pod(&[("app", &ra)], &[]);
    let request = &mut update["request"];
    request["operation"] = "UPDATE".into();
    request["subResource"] = "ephemeralcontainers".into();
    request["oldObject"] = request["object"].clone();
    request["oldObject"]["spec"]["ephemeralContainers"] = json!([{"name": "earlier", "image": rb}]);
    request["object"]["spec"]["ephemeralContainers"] =
        json!([{"name": "earlier", "image": rb}, {"name": "debugger", "image": rb}]);
    let (debugged, ops) = mutate(&server, &update).await;
    let ephemeral = &debugged["spec"]["ephemeralContainers"];
    assert_eq!(
        ephemeral[0]["image"],
        rb.as_str(),
        "not added by this update"
    );
    assert_eq!(ephemeral[1]["image"], format!("{rb}@{}", b.digest));
    assert_eq!(debugged["spec"]["containers"][0]["image"], ra.as_str());
    assert_eq!(ops.len(), 1, "{ops:?}");
}
