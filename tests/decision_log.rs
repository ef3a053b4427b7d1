//! The JSON decision line: one valid JSON object per line, whatever the request's strings
//! hold, with the keys the docs name.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::memory_registry::MemoryRegistry;
use common::pod_review;
use common::seed::REGISTRY;
use ecr_preflight::admission::json_line;
use ecr_preflight::admission::{self, OwnedObjects, Policy};
use ecr_preflight::decision::{Mode, OnError};
use ecr_preflight::engine::{Engine, EngineSettings};
use ecr_preflight::registry::BlobState;
use serde_json::Value;

#[tokio::test]
async fn hostile_strings_stay_inside_one_valid_json_line() {
    let reg = Arc::new(MemoryRegistry::default());
    let blobs = reg.push_image("team/app", "1.0", 3, BlobState::Missing);
    let engine = Engine::new(
        reg,
        EngineSettings::new(vec!["linux/amd64".parse().expect("platform")]),
    );
    let uid = "uid \"quoted\"\nsecond line\u{7}\u{2028} ünïcode";
    let mut review: Value =
        serde_json::from_str(&pod_review(&[("app", &format!("{REGISTRY}/team/app:1.0"))]))
            .expect("review");
    review["request"]["uid"] = uid.into();
    review["request"]["name"] = "name\\with\\backslashes".into();
    let policy = Policy {
        mode: Mode::Enforce,
        on_error: OnError::Allow,
        owned_objects: OwnedObjects::Audit,
    };
    let body = review.to_string();
    let reviewed = admission::evaluate(
        &engine,
        policy,
        Default::default(),
        body.as_bytes(),
        Duration::from_secs(3),
    )
    .await
    .expect("reviewed");

    let mut out = Vec::new();
    json_line(
        &mut out,
        &reviewed,
        SystemTime::now(),
        Duration::from_micros(1500),
    );
    let text = String::from_utf8(out).expect("UTF-8");
    assert!(text.ends_with('\n'));
    assert_eq!(text.matches('\n').count(), 1, "one line: {text}");
    let line: Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(line["uid"], uid);
    assert_eq!(line["name"], "name\\with\\backslashes");
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["message"], "admission decision");
    assert_eq!(line["kind"], "Pod");
    assert_eq!(line["operation"], "CREATE");
    assert_eq!(line["mode"], "enforce");
    assert_eq!(line["decision"], "denied");
    assert_eq!(line["images"], 1);
    assert_eq!(line["duration_ms"], 1.5);
    let problems = line["problems"].as_array().expect("problems array");
    assert_eq!(problems.len(), 1, "{problems:?}");
    let problem = problems[0].as_str().expect("a string");
    for digest in &blobs {
        assert!(
            problem.contains(digest.as_str()),
            "{digest} not in {problem}"
        );
    }
    let stamp = line["timestamp"].as_str().expect("timestamp");
    assert_eq!(stamp.len(), "2026-11-26T03:01:59.684888Z".len(), "{stamp}");
    assert!(stamp.ends_with('Z'));
    // The request body itself is never in the line.
    assert!(!text.contains("IfNotPresent"));
}
