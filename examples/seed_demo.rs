//! Seeds the ECR API emulator for the quick start and writes sample AdmissionReviews and
//! `images.json` (the two images' references and digests).
//!
//! Usage: seed_demo ENDPOINT OUT_DIR

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

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(endpoint), Some(out)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: seed_demo ENDPOINT OUT_DIR");
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
        ("5-pod-docker-hub-image", review(POD, "nginx:1.27")),
    ];
    let dir = std::path::Path::new(out).join("reviews");
    std::fs::create_dir_all(&dir).expect("mkdir");
    for (name, review) in reviews {
        std::fs::write(dir.join(format!("{name}.json")), review.to_string()).expect("write review");
    }
    let images = json!({
        "intact": {"reference": intact.reference(), "digest": intact.digest},
        "broken": {"reference": broken.reference(), "digest": broken.digest},
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
