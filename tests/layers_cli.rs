//! `ecr-preflight layers` as a process against the ECR emulator: the AWS CLI's shapes and
//! options, more than 100 digests, malformed digests, `layers IMAGE`, and exit codes.

mod common;

use std::process::{Command, Output};

use common::seed::{sha256, Breakage, Seeder, OCI_MANIFEST};
use common::unique;

const BIN: &str = env!("CARGO_BIN_EXE_ecr-preflight");
const INTACT: Breakage = Breakage {
    missing_layers: &[],
    missing_config: false,
};

fn layers(args: &[&str], endpoint: &str) -> Output {
    Command::new(BIN)
        .arg("layers")
        .args(args)
        .args(["--endpoint-url", endpoint, "--region", "us-east-1"])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("run")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            stdout(out),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[tokio::test]
async fn digests_in_the_aws_cli_shape_with_missing_and_malformed_ones() {
    let endpoint = common::moto::endpoint();
    let s = Seeder::new(&endpoint);
    let repo = unique("layers");
    let image = s.image(&repo, "1", "l", 2, OCI_MANIFEST, INTACT).await;
    let absent = sha256(b"never pushed");
    let out = layers(
        &[
            "--repository-name",
            &repo,
            "--layer-digests",
            &image.layers[0],
            &image.config,
            &absent,
            "sha256:bad",
        ],
        &endpoint,
    );
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out);
    let answered = v["layers"].as_array().expect("layers");
    assert_eq!(answered.len(), 2);
    assert!(answered
        .iter()
        .all(|l| l["layerAvailability"] == "AVAILABLE"
            && l["layerSize"].is_number()
            && l["mediaType"].is_string()));
    let failures = v["failures"].as_array().expect("failures");
    let code = |d: &str| {
        failures
            .iter()
            .find(|f| f["layerDigest"] == d)
            .map(|f| f["failureCode"].clone())
    };
    assert_eq!(code(&absent), Some("MissingLayerDigest".into()));
    assert_eq!(code("sha256:bad"), Some("InvalidLayerDigest".into()));

    let ok = layers(
        &[
            "--repository-name",
            &repo,
            "--registry-id",
            "123456789012",
            "--layer-digests",
            &image.layers[0],
            &image.layers[1],
        ],
        &endpoint,
    );
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let query = layers(
        &[
            "--repository-name",
            &repo,
            "--layer-digests",
            &image.layers[0],
            &absent,
            "--query",
            "failures[].failureCode",
            "--output",
            "text",
        ],
        &endpoint,
    );
    assert_eq!(stdout(&query).trim(), "MissingLayerDigest");
    let query = layers(
        &[
            "--repository-name",
            &repo,
            "--layer-digests",
            &image.layers[0],
            "--query",
            "layers[0].layerDigest",
            "--output",
            "json",
        ],
        &endpoint,
    );
    assert_eq!(stdout(&query).trim(), format!("\"{}\"", image.layers[0]));

    let text = stdout(&layers(
        &[
            "--repository-name",
            &repo,
            "--layer-digests",
            &image.layers[0],
            &absent,
            "--output",
            "text",
        ],
        &endpoint,
    ));
    assert!(
        text.lines()
            .any(|l| l.starts_with(&format!("LAYERS\tAVAILABLE\t{}\t", image.layers[0]))),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("FAILURES\tMissingLayerDigest\t")),
        "{text}"
    );
    let yaml = stdout(&layers(
        &[
            "--repository-name",
            &repo,
            "--layer-digests",
            &image.layers[0],
            "--output",
            "yaml",
        ],
        &endpoint,
    ));
    assert!(yaml.contains("layerAvailability: AVAILABLE"), "{yaml}");
    let table = stdout(&layers(
        &[
            "--repository-name",
            &repo,
            "--layer-digests",
            &image.layers[0],
            "--output",
            "table",
        ],
        &endpoint,
    ));
    assert!(
        table.starts_with("BatchCheckLayerAvailability") && table.contains("| AVAILABLE "),
        "{table}"
    );
}

#[tokio::test]
async fn more_than_a_hundred_digests_are_split_and_merged() {
    let endpoint = common::moto::endpoint();
    let s = Seeder::new(&endpoint);
    let repo = unique("layers-big");
    let image = s.image(&repo, "1", "big", 149, OCI_MANIFEST, INTACT).await;
    let mut digests: Vec<&str> = image.layers.iter().map(String::as_str).collect();
    digests.push(&image.config);
    let mut args = vec!["--repository-name", repo.as_str(), "--layer-digests"];
    args.extend(digests);
    let out = layers(&args, &endpoint);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(json(&out)["layers"].as_array().map(Vec::len), Some(150));
}

#[tokio::test]
async fn cli_input_json_and_yaml_and_skeletons() {
    let endpoint = common::moto::endpoint();
    let s = Seeder::new(&endpoint);
    let repo = unique("layers-input");
    let image = s.image(&repo, "1", "in", 1, OCI_MANIFEST, INTACT).await;
    let input =
        serde_json::json!({"repositoryName": repo, "layerDigests": [image.layers[0]]}).to_string();
    let out = layers(&["--cli-input-json", &input], &endpoint);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("in.yaml");
    std::fs::write(
        &path,
        format!(
            "repositoryName: {repo}\nlayerDigests:\n  - {}\n",
            sha256(b"absent")
        ),
    )
    .expect("write");
    let out = layers(
        &["--cli-input-yaml", &format!("file://{}", path.display())],
        &endpoint,
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "the digest in the file is missing"
    );
    // A flag overrides the input file.
    let out = layers(
        &[
            "--cli-input-yaml",
            &format!("file://{}", path.display()),
            "--layer-digests",
            &image.layers[0],
        ],
        &endpoint,
    );
    assert_eq!(out.status.code(), Some(0));

    let skeleton = layers(&["--generate-cli-skeleton"], &endpoint);
    let v = json(&skeleton);
    assert_eq!(
        v,
        serde_json::json!({"registryId": "", "repositoryName": "", "layerDigests": [""]})
    );
    assert!(stdout(&layers(
        &["--generate-cli-skeleton", "yaml-input"],
        &endpoint
    ))
    .contains("repositoryName:"));
    assert!(json(&layers(&["--generate-cli-skeleton", "output"], &endpoint))["layers"].is_array());
}

#[tokio::test]
async fn an_image_expands_into_its_blobs_with_platform_and_role() {
    let endpoint = common::moto::endpoint();
    let s = Seeder::new(&endpoint);
    let repo = unique("layers-image");
    let (index, children) = s
        .index(
            &repo,
            "1",
            "img",
            &[
                ("amd64", INTACT),
                (
                    "arm64",
                    Breakage {
                        missing_layers: &[1],
                        missing_config: false,
                    },
                ),
            ],
        )
        .await;
    let out = layers(&[&index.reference()], &endpoint);
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out);
    let blobs = v["blobs"].as_array().expect("blobs");
    let find = |platform: &str, role: &str| {
        blobs
            .iter()
            .find(|b| b["platform"] == platform && b["role"] == role)
            .unwrap_or_else(|| panic!("{platform} {role} in {v}"))
    };
    assert_eq!(
        find("linux/amd64", "config")["layerAvailability"],
        "AVAILABLE"
    );
    let missing = find("linux/arm64", "layer 2");
    assert_eq!(missing["layerDigest"], children[1].layers[1].as_str());
    assert_eq!(missing["layerAvailability"], "MISSING");
    assert!(
        blobs
            .iter()
            .any(|b| b["attestation"] == true && b["platform"] == "unknown/unknown"),
        "attestations are marked"
    );

    let (intact, _) = s.index(&repo, "2", "img2", &[("amd64", INTACT)]).await;
    let out = layers(&[&intact.reference(), "--output", "table"], &endpoint);
    assert_eq!(
        out.status.code(),
        Some(0),
        "a missing attestation blob does not fail: {}",
        stdout(&out)
    );
}

#[test]
fn usage_and_unreachable_ecr() {
    let out = layers(&["--layer-digests", "sha256:x"], "http://127.0.0.1:9");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--repository-name"));
    let out = layers(&["nginx:1.27"], "http://127.0.0.1:9");
    assert_eq!(out.status.code(), Some(2));
    let refused = common::refused_endpoint();
    let digest = sha256(b"x");
    let out = layers(
        &["--repository-name", "team/app", "--layer-digests", &digest],
        &refused,
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
