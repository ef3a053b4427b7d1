//! The plain allowed answer is written directly; it must be byte for byte what kube's
//! response types serialize to, whatever the uid holds.

use ecr_preflight::admission::{allowed_json, allowed_response};

#[test]
fn allowed_json_is_what_kube_serializes() {
    for uid in [
        "7f1c2a90-1d3e-4c7b-9a0e-1c2d3e4f5a11",
        "",
        "quote\" backslash\\ newline\n tab\t control\u{1} unicode é😀 \u{2028}",
    ] {
        let reference = serde_json::to_vec(&allowed_response(uid).into_review()).expect("json");
        assert_eq!(
            String::from_utf8(allowed_json(uid)).expect("utf-8"),
            String::from_utf8(reference).expect("utf-8"),
        );
    }
}
