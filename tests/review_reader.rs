//! The pull reader that decodes reviews on the hot path, held to the `serde_json` decoder:
//! the same view for every fixture and for every mutation `serde_json` accepts, an error
//! (never a panic) for truncated and malformed bodies.

use ecr_preflight::admission::review::{ObjectField, ReviewView};

const FIXTURES: &[&str] = &[
    include_str!("fixtures/pod-create.json"),
    include_str!("fixtures/pod-create-dryrun.json"),
    include_str!("fixtures/pod-owned-create.json"),
    include_str!("fixtures/pod-mirror-create.json"),
    include_str!("fixtures/pod-ephemeralcontainers-update.json"),
    include_str!("fixtures/pod-public-images-create.json"),
    include_str!("fixtures/deployment-create.json"),
    include_str!("fixtures/deployment-10k-create.json"),
    include_str!("fixtures/deployment-applied-create.json"),
    include_str!("fixtures/deployment-update-scale.json"),
    include_str!("fixtures/deployment-update-image.json"),
    include_str!("fixtures/statefulset-create.json"),
    include_str!("fixtures/daemonset-create.json"),
    include_str!("fixtures/replicaset-owned-create.json"),
    include_str!("fixtures/job-create.json"),
    include_str!("fixtures/cronjob-create.json"),
    include_str!("fixtures/replicationcontroller-create.json"),
    include_str!("fixtures/configmap-create.json"),
];

/// Both decoders on `body`: `Some(view)` from each, or `None` where it refused.
fn both(body: &[u8]) -> (Option<ReviewView<'_>>, Option<ReviewView<'_>>) {
    (
        ReviewView::parse(body).ok(),
        ReviewView::parse_with_serde(body).ok(),
    )
}

#[test]
fn every_fixture_decodes_to_the_same_view() {
    for fixture in FIXTURES {
        let fast = ReviewView::parse(fixture.as_bytes()).expect("fast");
        let reference = ReviewView::parse_with_serde(fixture.as_bytes()).expect("serde");
        assert_eq!(fast, reference);
        // Compact, as the API server sends it, too.
        let compact = serde_json::to_string(
            &serde_json::from_str::<serde_json::Value>(fixture).expect("json"),
        )
        .expect("json");
        let (fast, reference) = both(compact.as_bytes());
        assert!(fast.is_some());
        assert_eq!(fast, reference);
    }
}

#[test]
fn escapes_decode_as_serde_json_decodes_them() {
    let body = r#"{"apiVersion":"admission.k8s.io/v1","request":{"uid":"a\"b\\c\/d\b\f\n\r\t\u00e9\ud83d\ude00",
        "kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE","name":"caf\u00e9",
        "object":{"metadata":{"name":"p","annotations":{"k\u0031":"v\ud83d\ude00\"}","x":{"y":[1,-2.5e+3,true,false,null,"\\]"]}}},
        "spec":{"containers":[{"name":"c\u0030","image":"\u0072epo/app:1","env":[{"name":"A","value":"}]\\"}]}]}}}}"#;
    let (fast, reference) = both(body.as_bytes());
    let fast = fast.expect("fast decodes");
    assert_eq!(Some(&fast), reference.as_ref());
    let request = fast.request.expect("request");
    assert_eq!(request.uid, "a\"b\\c/d\u{8}\u{c}\n\r\té😀");
    let ObjectField::Parsed(object) = request.object else {
        panic!("object not decoded")
    };
    let containers = object.spec.expect("spec").containers.expect("containers");
    assert_eq!(containers[0].name, "c0");
    assert_eq!(containers[0].image.as_deref(), Some("repo/app:1"));
}

#[test]
fn truncated_bodies_are_errors_from_both() {
    for fixture in [FIXTURES[0], FIXTURES[6], FIXTURES[16]] {
        let bytes = fixture.trim_end().as_bytes();
        for end in 0..bytes.len() {
            let (fast, reference) = both(&bytes[..end]);
            assert!(fast.is_none(), "accepted a body cut at byte {end}");
            assert!(reference.is_none());
        }
    }
}

/// Every byte of a review replaced by each of a few characters that matter to the grammar:
/// whatever `serde_json` accepts, the reader must accept with the same result.
#[test]
fn mutations_serde_json_accepts_give_the_same_view() {
    let body = serde_json::to_string(
        &serde_json::from_str::<serde_json::Value>(FIXTURES[6]).expect("json"),
    )
    .expect("json");
    let mut accepted = 0;
    for i in 0..body.len() {
        for replacement in [
            b'"', b'{', b'}', b'[', b']', b',', b':', b'\\', b' ', b'1', b'n', 0x01,
        ] {
            let mut mutated = body.clone().into_bytes();
            mutated[i] = replacement;
            let (fast, reference) = both(&mutated);
            if let Some(reference) = reference {
                accepted += 1;
                assert_eq!(fast.as_ref(), Some(&reference), "byte {i} → {replacement}");
            }
        }
    }
    assert!(accepted > 100, "only {accepted} mutations were valid JSON");
}

#[test]
fn depth_and_size_are_bounded_with_errors_not_crashes() {
    let wrap = |inner: &str| {
        format!(
            r#"{{"request":{{"uid":"u","kind":{{"group":"","version":"v1","kind":"ConfigMap"}},"operation":"CREATE","object":{inner}}}}}"#
        )
    };
    let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    // Skipped values may nest as deep as serde_json skips them, with brackets paired.
    for depth in [100, 127, 128, 129, 256, 100_000] {
        assert!(
            ReviewView::parse(wrap(&nested(depth)).as_bytes()).is_ok(),
            "{depth}"
        );
        let mixed = format!("{}1{}", "[{\"a\":".repeat(depth), "}]".repeat(depth));
        let body = wrap(&mixed);
        let (fast, reference) = both(body.as_bytes());
        assert!(reference.is_some() && fast == reference, "{depth}");
        let unpaired = format!("{}1{}", "[{\"a\":".repeat(depth), "]}".repeat(depth));
        assert!(
            ReviewView::parse(wrap(&unpaired).as_bytes()).is_err(),
            "{depth}"
        );
    }
    // Values that are read nest no deeper than serde_json's recursion limit.
    let deep_templates = format!(
        r#"{{"request":{{"uid":"u","kind":{{"group":"apps","version":"v1","kind":"Deployment"}},"operation":"CREATE","object":{}{}}}}}"#,
        r#"{"spec":{"template":"#.repeat(200),
        "{}}}".repeat(200)
    );
    let err = ReviewView::parse(deep_templates.as_bytes()).expect_err("too deep");
    assert!(err.to_string().contains("nested too deeply"), "{err}");
    assert!(ReviewView::parse_with_serde(deep_templates.as_bytes()).is_err());
    let long = format!(r#"{{"data":"{}"}}"#, "x".repeat(4 << 20));
    assert!(ReviewView::parse(wrap(&long).as_bytes()).is_ok());
    for bad in [
        r#"{"a":[}"#,
        r#"{"a":{]}"#,
        r#"{"a":"\q"}"#,
        r#"{"a":"\u12"}"#,
        "{\"a\":\"\u{1}\"}",
        r#"{"a":[1,"x"}"#,
    ] {
        let err = ReviewView::parse(wrap(bad).as_bytes()).expect_err(bad);
        assert!(err.to_string().contains("at byte"), "{err}");
    }
    let err = ReviewView::parse(br#"{"request":{"kind":{"kind":"Pod"},"operation":"CREATE"}}"#)
        .expect_err("no uid");
    assert_eq!(err.to_string(), "missing field `uid` in request");
}
