//! `ecr-preflight check` as a process, against the ECR emulator: every input form, every
//! output form, every exit code.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::seed::{Breakage, Seeder, OCI_MANIFEST, REGISTRY};
use common::unique;

const BIN: &str = env!("CARGO_BIN_EXE_ecr-preflight");
const INTACT: Breakage = Breakage {
    missing_layers: &[],
    missing_config: false,
};

fn check(args: &[&str], stdin: Option<&str>, endpoint: &str) -> Output {
    let mut child = Command::new(BIN)
        .arg("check")
        .args(args)
        .args(["--ecr-endpoint-url", endpoint, "--timeout", "10s"])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write");
    }
    child.wait_with_output().expect("wait")
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn deployment(name: &str, image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: shop\nspec:\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      containers:\n        - name: app\n          image: {image}\n"
    )
}

fn cronjob(name: &str, image: &str) -> String {
    format!(
        "apiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: {name}\nspec:\n  schedule: \"0 * * * *\"\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: Never\n          initContainers:\n            - name: init\n              image: {image}\n          containers:\n            - name: job\n              image: nginx:1.27\n"
    )
}

struct Images {
    good: String,
    broken: String,
    broken_layer: String,
    missing_tag: String,
    multi: String,
}

async fn seed() -> Images {
    let s = Seeder::new(&common::moto::endpoint());
    let repo = unique("check");
    let good = s
        .image(
            &format!("{repo}/good"),
            "1",
            "good",
            2,
            OCI_MANIFEST,
            INTACT,
        )
        .await;
    let broken = s
        .image(
            &format!("{repo}/broken"),
            "1",
            "broken",
            3,
            OCI_MANIFEST,
            Breakage {
                missing_layers: &[1],
                missing_config: false,
            },
        )
        .await;
    let (multi, _) = s
        .index(
            &format!("{repo}/multi"),
            "1",
            "multi",
            &[
                ("amd64", INTACT),
                (
                    "arm64",
                    Breakage {
                        missing_layers: &[0],
                        missing_config: false,
                    },
                ),
            ],
        )
        .await;
    Images {
        good: good.reference(),
        broken: broken.reference(),
        broken_layer: broken.layers[1].clone(),
        missing_tag: format!("{REGISTRY}/{repo}/good:9"),
        multi: multi.reference(),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(&path, text).expect("write");
    path.display().to_string()
}

#[tokio::test]
async fn multi_document_yaml_with_a_broken_image_exits_1_and_names_it() {
    let images = seed().await;
    let dir = tempfile::tempdir().expect("dir");
    let text = format!(
        "{}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\ndata: {{image: x}}\n---\n{}",
        deployment("web", &images.good),
        cronjob("nightly", &images.broken)
    );
    let file = write(dir.path(), "app.yaml", &text);
    let endpoint = common::moto::endpoint();
    // `--registries ecr`: the CronJob's nginx is Docker Hub's, out of reach here, and is
    // skipped (registries_other_than_ecr_are_checked_by_default checks other registries).
    let out = check(
        &["--output", "json", "--registries", "ecr", &file],
        None,
        &endpoint,
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out);
    let results = v["results"].as_array().expect("results");
    assert_eq!(results.len(), 3, "{v}");
    let broken = results
        .iter()
        .find(|r| r["container"] == "init")
        .expect("init row");
    assert_eq!(broken["outcome"], "missing");
    assert_eq!(broken["file"], file.as_str());
    assert_eq!(broken["document"], 2);
    assert_eq!(broken["kind"], "CronJob");
    assert_eq!(broken["missing"], serde_json::json!([images.broken_layer]));
    assert_eq!(
        broken["message"],
        format!(
            "init container init: {}: 1 of 4 blobs missing in ECR: {}",
            images.broken, images.broken_layer
        )
    );
    let good = results
        .iter()
        .find(|r| r["name"] == "web")
        .expect("web row");
    assert_eq!(
        (good["outcome"].as_str(), good["namespace"].as_str()),
        (Some("ok"), Some("shop"))
    );
    assert_eq!(
        results
            .iter()
            .find(|r| r["container"] == "job")
            .expect("job")["outcome"],
        "skipped"
    );
    assert_eq!(v["summary"]["exit_code"], 1);
    assert_eq!(v["summary"]["outcomes"]["missing"], 1);

    let table = check(&["--registries", "ecr", &file], None, &endpoint);
    assert_eq!(table.status.code(), Some(1));
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("OBJECT"), "{text}");
    assert!(
        text.contains("CronJob/nightly") && text.contains("missing"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "1 of 4 blobs missing in ECR: {}",
            images.broken_layer
        )),
        "{text}"
    );

    let github = check(&["--output", "github", &file], None, &endpoint);
    let text = String::from_utf8_lossy(&github.stdout);
    assert!(text.lines().any(|l| l.starts_with(&format!("::error file={},title=ecr-preflight%3A missing (CronJob/nightly)::init container init:", file))), "{text}");
}

#[tokio::test]
async fn directories_json_lists_and_all_good_exit_0() {
    let images = seed().await;
    let dir = tempfile::tempdir().expect("dir");
    write(dir.path(), "a/web.yml", &deployment("web", &images.good));
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": images.good}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {}}
    ]});
    write(dir.path(), "b/c/list.json", &list.to_string());
    write(dir.path(), "b/notes.txt", "not a manifest");
    let out = check(
        &["--output", "json", &dir.path().display().to_string()],
        None,
        &common::moto::endpoint(),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v = json(&out);
    assert_eq!(v["results"].as_array().map(Vec::len), Some(2));
    assert_eq!(v["summary"]["outcomes"]["ok"], 2);
}

#[tokio::test]
async fn helm_template_output_on_stdin_and_index_platforms_and_missing_tags() {
    let images = seed().await;
    let rendered = format!(
        "---\n# Source: shop/templates/web.yaml\n{}---\n# Source: shop/templates/empty.yaml\n---\n# Source: shop/templates/cron.yaml\n{}",
        deployment("multi", &images.multi),
        deployment("gone", &images.missing_tag)
    );
    let out = check(
        &[
            "--output",
            "json",
            "--platforms",
            "linux/amd64,linux/arm64",
            "-",
        ],
        Some(&rendered),
        &common::moto::endpoint(),
    );
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out);
    let rows = v["results"].as_array().expect("rows");
    let platforms: Vec<(&str, &str)> = rows
        .iter()
        .filter(|r| r["name"] == "multi")
        .map(|r| {
            (
                r["platform"].as_str().unwrap_or(""),
                r["outcome"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        platforms,
        vec![("linux/amd64", "ok"), ("linux/arm64", "missing")]
    );
    let gone = rows.iter().find(|r| r["name"] == "gone").expect("gone");
    assert_eq!(gone["outcome"], "not_found");
    assert_eq!(gone["file"], "-");
    assert!(gone["message"]
        .as_str()
        .is_some_and(|m| m.ends_with("tag not found in ECR")));
}

#[tokio::test]
async fn unreadable_documents_exit_2_and_the_rest_is_still_checked() {
    let images = seed().await;
    let dir = tempfile::tempdir().expect("dir");
    let good = write(dir.path(), "good.yaml", &deployment("web", &images.broken));
    let after = deployment("after", &images.good);
    let bad = write(
        dir.path(),
        "bad.yaml",
        &format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: [unclosed\n---\n{after}"),
    );
    let wrong = write(dir.path(), "wrong.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: w}\nspec:\n  template:\n    spec:\n      containers: 7\n");
    let out = check(
        &["--output", "json", &good, &bad, &wrong, "/nonexistent.yaml"],
        None,
        &common::moto::endpoint(),
    );
    assert_eq!(out.status.code(), Some(2));
    let v = json(&out);
    let errors = v["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 3, "{v}");
    assert!(errors
        .iter()
        .any(|e| e["file"] == bad.as_str() && e["document"] == 0));
    assert!(errors.iter().any(|e| e["file"] == wrong.as_str()
        && e["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("malformed Deployment"))));
    assert!(errors.iter().any(|e| e["file"] == "/nonexistent.yaml"));
    let outcome = |name: &str| {
        v["results"]
            .as_array()
            .and_then(|r| r.iter().find(|row| row["name"] == name))
            .map(|row| row["outcome"].clone())
    };
    assert_eq!(
        outcome("web"),
        Some("missing".into()),
        "the readable file is still checked"
    );
    assert_eq!(
        outcome("after"),
        Some("ok".into()),
        "so is the document after the broken one"
    );
}

#[tokio::test]
async fn ecr_that_cannot_answer_exits_3() {
    let refused = common::refused_endpoint();
    let dir = tempfile::tempdir().expect("dir");
    let file = write(
        dir.path(),
        "web.yaml",
        &deployment("web", &format!("{REGISTRY}/team/app:1")),
    );
    let out = check(&["--output", "json", &file], None, &refused);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v = json(&out);
    assert_eq!(v["results"][0]["outcome"], "unknown");
    assert!(v["results"][0]["message"]
        .as_str()
        .is_some_and(|m| m.contains("ECR could not be asked")));
}

#[test]
fn usage_errors_exit_2() {
    let out = Command::new(BIN)
        .args(["check", "--output", "xml", "x.yaml"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN).args(["check"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
}

/// Puts `rules` as `repository`'s lifecycle policy in the emulator.
async fn put_policy(seeder: &Seeder, repository: &str, rules: serde_json::Value) {
    seeder
        .client
        .put_lifecycle_policy()
        .repository_name(repository)
        .lifecycle_policy_text(serde_json::json!({ "rules": rules }).to_string())
        .send()
        .await
        .expect("put lifecycle policy");
}

#[tokio::test]
async fn lifecycle_reports_an_image_a_rule_expires_within_the_warning_and_fails_only_when_asked() {
    let endpoint = common::moto::endpoint();
    let s = Seeder::new(&endpoint);
    let repo = unique("check/lifecycle");
    let soon = s
        .image(
            &format!("{repo}/soon"),
            "v1",
            "soon",
            1,
            OCI_MANIFEST,
            INTACT,
        )
        .await;
    let later = s
        .image(
            &format!("{repo}/later"),
            "v1",
            "later",
            1,
            OCI_MANIFEST,
            INTACT,
        )
        .await;
    let rule = |days: u32, description: &str| serde_json::json!([{"rulePriority": 5, "description": description, "selection": {"tagStatus": "any", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": days}, "action": {"type": "expire"}}]);
    put_policy(&s, &soon.repository, rule(3, "three days")).await;
    put_policy(&s, &later.repository, rule(30, "a month")).await;
    let dir = tempfile::tempdir().expect("dir");
    let file = write(
        dir.path(),
        "app.yaml",
        &format!(
            "{}---\n{}",
            deployment("soon", &soon.reference()),
            deployment("later", &later.reference())
        ),
    );

    // Reported, exit code unchanged.
    let out = check(&["--lifecycle", "-o", "json", &file], None, &endpoint);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out);
    let result = |name: &str| {
        v["results"]
            .as_array()
            .expect("results")
            .iter()
            .find(|r| r["name"] == name)
            .cloned()
            .expect("row")
    };
    let r = result("soon");
    assert_eq!(r["expiring"], true, "{r}");
    assert_eq!(r["expiry_action"], "expire");
    assert_eq!(r["expiry_rule"]["priority"], 5);
    assert_eq!(r["expiry_rule"]["description"], "three days");
    assert!(
        r["expires_at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{r}"
    );
    let message = r["expiry_message"].as_str().expect("message");
    assert!(
        message.contains("will be expired by lifecycle rule 5 (three days)"),
        "{message}"
    );
    let r = result("later");
    assert!(
        r["expires_at"].is_string(),
        "a forecast, beyond the warning: {r}"
    );
    assert!(r["expiring"].is_null(), "{r}");
    assert_eq!(v["summary"]["expiring"], 1);
    assert_eq!(v["summary"]["lifecycle_errors"], 0);

    // A shorter warning: nothing within it.
    let out = check(
        &[
            "--lifecycle",
            "--expiry-warning",
            "1d",
            "--fail-on-expiry",
            "-o",
            "json",
            &file,
        ],
        None,
        &endpoint,
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(json(&out)["summary"]["expiring"], 0);

    // --fail-on-expiry: exit 1; the table and the annotations name the image and the rule.
    let out = check(&["--lifecycle", "--fail-on-expiry", &file], None, &endpoint);
    assert_eq!(out.status.code(), Some(1));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("EXPIRES"), "{table}");
    assert!(table.contains("expiring:"), "{table}");
    assert!(table.contains(&soon.reference()), "{table}");
    let out = check(
        &["--lifecycle", "--fail-on-expiry", "-o", "github", &file],
        None,
        &endpoint,
    );
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let annotations: Vec<&str> = text.lines().filter(|l| l.starts_with("::")).collect();
    assert_eq!(annotations.len(), 1, "{text}");
    assert!(annotations[0].starts_with("::error file="), "{text}");
    assert!(
        annotations[0].contains("lifecycle rule 5 (three days)"),
        "{text}"
    );
    let out = check(&["--lifecycle", "-o", "github", &file], None, &endpoint);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("::warning file="));

    // Without --lifecycle: no forecast at all.
    let out = check(&["-o", "json", &file], None, &endpoint);
    let v = json(&out);
    assert!(v["results"][0]["expires_at"].is_null(), "{v}");
    assert!(v["summary"]["expiring"].is_null(), "{v}");
}

#[test]
fn fail_on_expiry_needs_lifecycle() {
    let out = check(&["--fail-on-expiry", "x.yaml"], None, "http://127.0.0.1:1");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--lifecycle"), "{err}");
}

#[tokio::test]
async fn a_multi_arch_image_is_forecast_by_its_index_not_its_untagged_children() {
    // The most common policy there is, "expire untagged images older than N days", on a
    // multi-arch image: the index carries the tag, its children are untagged. ECR spares
    // what an index references, so nothing is expiring and --fail-on-expiry passes.
    let endpoint = common::moto::endpoint();
    let s = Seeder::new(&endpoint);
    let repo = unique("check/multiarch");
    let (index, _children) = s
        .index(
            &repo,
            "v1",
            "multi",
            &[("amd64", INTACT), ("arm64", INTACT)],
        )
        .await;
    put_policy(
        &s,
        &repo,
        serde_json::json!([{"rulePriority": 1, "description": "untagged after a day", "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 1}, "action": {"type": "expire"}}]),
    )
    .await;
    let dir = tempfile::tempdir().expect("dir");
    let file = write(
        dir.path(),
        "app.yaml",
        &deployment("multi", &index.reference()),
    );
    let out = check(
        &["--lifecycle", "--fail-on-expiry", "-o", "json", &file],
        None,
        &endpoint,
    );
    let v = json(&out);
    assert_eq!(out.status.code(), Some(0), "{v}");
    let row = &v["results"][0];
    assert!(row["expires_at"].is_null(), "{row}");
    assert!(row["expiring"].is_null(), "{row}");
    assert_eq!(v["summary"]["expiring"], 0, "{v}");
    assert_eq!(v["summary"]["lifecycle_errors"], 0, "{v}");

    // The same image referenced by its index's digest: the index's own forecast too.
    let file = write(
        dir.path(),
        "pinned.yaml",
        &deployment("pinned", &index.by_digest()),
    );
    let out = check(&["--lifecycle", "--fail-on-expiry", &file], None, &endpoint);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registries_other_than_ecr_are_checked_by_default() {
    let registry = common::oci_registry::OciRegistry::start_open();
    let (_, blobs) = registry.push_image("team/app", "v1").await;
    registry.push_image("team/broken", "v1").await;
    let (_, broken) = registry.push_image("team/broken", "v2").await;
    registry.lose_blob(&broken[1]);
    let host = registry.url.trim_start_matches("https://").to_owned();
    let dir = tempfile::tempdir().expect("dir");
    let text = format!(
        "{}---\n{}",
        deployment("web", &format!("{host}/team/app:v1")),
        deployment("jobs", &format!("{host}/team/broken:v2"))
    );
    let file = write(dir.path(), "app.yaml", &text);
    let ca = registry.ca.display().to_string();
    let endpoint = common::moto::endpoint();

    // `--registries ecr`: ECR's images only; these are skipped.
    let skipped = check(
        &["--output", "json", "--registries", "ecr", &file],
        None,
        &endpoint,
    );
    assert_eq!(
        skipped.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&skipped.stderr)
    );
    assert_eq!(json(&skipped)["summary"]["outcomes"]["skipped"], 2);

    // The default (all), all named, and the registry's host named.
    let named = [
        vec![],
        vec!["--registries", "all"],
        vec!["--registries", &host],
    ];
    for registries in named {
        let mut args = vec!["--output", "json", "--registry-ca-file", &ca, &file];
        args.splice(0..0, registries);
        let out = check(&args, None, &endpoint);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v = json(&out);
        assert_eq!(v["summary"]["outcomes"]["ok"], 1, "{v}");
        assert_eq!(v["summary"]["outcomes"]["missing"], 1, "{v}");
        let row = v["results"]
            .as_array()
            .expect("results")
            .iter()
            .find(|r| r["outcome"] == "missing")
            .expect("the broken image");
        assert!(row.to_string().contains(&broken[1]), "{row}");
    }
    assert_eq!(blobs.len(), 3);

    // A registry not named stays skipped; a bad list is a usage error.
    let other = check(
        &["--output", "json", "--registries", "ghcr.io", &file],
        None,
        &endpoint,
    );
    assert_eq!(json(&other)["summary"]["outcomes"]["skipped"], 2);
    let bad = check(&["--registries", "all,ghcr.io", &file], None, &endpoint);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--registries"));
}
