//! Seeds the ECR API emulator for the quick start and writes sample AdmissionReviews,
//! `images.json` (the two images' references and digests) and, under `configs/`, the
//! images' config blobs for the registry API (`REPOSITORY@DIGEST` per file name, `/` as
//! `~`), which the demo uploads to its OCI registry. With the references of an intact and a
//! broken image in another registry, writes reviews of those too.
//!
//! Usage: seed_demo ENDPOINT OUT_DIR [OTHER_INTACT OTHER_INTACT_DIGEST OTHER_BROKEN]

#[allow(dead_code)]
#[path = "../tests/common/seed.rs"]
mod seed;

use seed::{Breakage, Seeder, DOCKER_MANIFEST, OCI_MANIFEST};
use serde_json::{json, Value};

const POD: &str = include_str!("../tests/fixtures/pod-create.json");
const DEPLOYMENT: &str = include_str!("../tests/fixtures/deployment-create.json");

/// A fixture review with its pod template reduced to one container running `image`.
fn review(fixture: &str, image: &str) -> Value {
    let mut review: Value = serde_json::from_str(fixture).expect("fixture");
    let object = &mut review["request"]["object"];
    let spec = if object["kind"] == "Pod" {
        &mut object["spec"]
    } else {
        &mut object["spec"]["template"]["spec"]
    };
    spec["containers"] = json!([{"name": "app", "image": image}]);
    if let Some(spec) = spec.as_object_mut() {
        spec.remove("initContainers");
    }
    review
}

fn write_reviews<const N: usize>(dir: &std::path::Path, reviews: [(&str, Value); N]) {
    std::fs::create_dir_all(dir).expect("mkdir");
    for (name, review) in reviews {
        std::fs::write(dir.join(format!("{name}.json")), review.to_string()).expect("write review");
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(endpoint), Some(out)) = (args.get(1), args.get(2)) else {
        eprintln!(
            "usage: seed_demo ENDPOINT OUT_DIR [OTHER_INTACT OTHER_INTACT_DIGEST OTHER_BROKEN]"
        );
        std::process::exit(2);
    };
    let s = Seeder::new(endpoint);
    let intact = s
        .image(
            "demo/shop",
            "1.0",
            "demo-intact",
            3,
            DOCKER_MANIFEST,
            Breakage::default(),
        )
        .await;
    let broken = s
        .image(
            "demo/shop",
            "1.1",
            "demo-broken",
            3,
            OCI_MANIFEST,
            Breakage {
                missing_layers: &[1],
                missing_config: false,
            },
        )
        .await;
    let missing_tag = format!("{}/demo/shop:2.0", seed::REGISTRY);
    let reviews = [
        ("1-pod-intact-image", review(POD, &intact.reference())),
        (
            "2-deployment-broken-image",
            review(DEPLOYMENT, &broken.reference()),
        ),
        (
            "3-deployment-broken-image-warn-mode",
            review(DEPLOYMENT, &broken.reference()),
        ),
        ("4-pod-missing-tag", review(POD, &missing_tag)),
    ];
    write_reviews(&std::path::Path::new(out).join("reviews"), reviews);
    let other = args.get(3).zip(args.get(4)).zip(args.get(5));
    if let Some(((intact, _), broken)) = other {
        write_reviews(
            &std::path::Path::new(out).join("other-registry-reviews"),
            [
                ("5-pod-other-registry-intact-image", review(POD, intact)),
                (
                    "6-deployment-other-registry-broken-image",
                    review(DEPLOYMENT, broken),
                ),
            ],
        );
    }
    // Where the demo cluster's tainted Graviton NodePool may start nodes: the intact image
    // is amd64 only.
    let graviton =
        json!([{"key": "arch", "operator": "Equal", "value": "arm64", "effect": "NoSchedule"}]);
    let mut tolerating = review(POD, &intact.reference());
    tolerating["request"]["object"]["spec"]["tolerations"] = graviton;
    let mut kept = tolerating.clone();
    kept["request"]["object"]["spec"]["nodeSelector"] = json!({"kubernetes.io/arch": "amd64"});
    write_reviews(
        &std::path::Path::new(out).join("platform-reviews"),
        [
            ("7-pod-tolerating-graviton-amd64-image", tolerating),
            ("8-same-pod-kept-to-amd64", kept),
        ],
    );
    seed::write_configs(
        std::path::Path::new(out),
        &[(&intact, "demo-intact"), (&broken, "demo-broken")],
    );
    let images = json!({
        "intact": {"reference": intact.reference(), "digest": intact.digest},
        "broken": {"reference": broken.reference(), "digest": broken.digest},
        "other_intact": other.map(|((intact, digest), _)| json!({"reference": intact, "digest": digest})),
    });
    std::fs::write(
        std::path::Path::new(out).join("images.json"),
        images.to_string(),
    )
    .expect("write images");
    println!(
        "intact: {}\nbroken: {} (layer {} never pushed)",
        intact.reference(),
        broken.reference(),
        broken.layers[1]
    );
}
