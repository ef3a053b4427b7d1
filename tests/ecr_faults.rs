//! Failing ECR, through a fault-injecting proxy in front of the emulator: each fault gives
//! the `--on-error` decision with a message that says what failed, inside `--timeout`, and
//! once the fault clears the next admission gets a correct, fresh answer.

mod common;

use std::time::Duration;

use common::fault_proxy::{Fault, FaultProxy};
use common::seed::{Breakage, Seeder, OCI_MANIFEST};
use common::server::{self, Options};
use common::{message, pod_review, unique, warnings};
use ecr_preflight::decision::OnError;

const TIMEOUT: Duration = Duration::from_millis(1500);

struct Setup {
    proxy: FaultProxy,
    good: String,
    broken: String,
}

async fn setup() -> Setup {
    let endpoint = common::moto::endpoint();
    let s = Seeder::new(&endpoint);
    let repo = unique("faults");
    let intact = Breakage {
        missing_layers: &[],
        missing_config: false,
    };
    let good = s
        .image(
            &format!("{repo}/good"),
            "1",
            "good",
            2,
            OCI_MANIFEST,
            intact,
        )
        .await
        .reference();
    let broken = s
        .image(
            &format!("{repo}/broken"),
            "1",
            "broken",
            2,
            OCI_MANIFEST,
            Breakage {
                missing_layers: &[0],
                missing_config: false,
            },
        )
        .await
        .reference();
    Setup {
        proxy: FaultProxy::start(&endpoint).await,
        good,
        broken,
    }
}

/// Runs one fault with both --on-error settings, then clears it and checks fresh answers.
async fn fault_gives_on_error_decision(fault: Fault, expect_in_message: &str) {
    let setup = setup().await;
    for (on_error, allowed) in [(OnError::Allow, true), (OnError::Deny, false)] {
        let srv = server::start(Options {
            on_error,
            timeout: TIMEOUT,
            endpoint: Some(setup.proxy.url.clone()),
            ..Options::default()
        })
        .await;
        setup.proxy.set(fault);
        // The answer at the deadline is shown under the paused clock (engine_seam.rs); here,
        // the decision and its reason.
        let response = srv
            .review("/validate", pod_review(&[("app", &setup.good)]))
            .await;
        assert_eq!(response["allowed"], allowed, "{fault:?}: {response}");
        let text = if allowed {
            warnings(&response).join("\n")
        } else {
            message(&response)
        };
        assert!(
            text.starts_with(&format!(
                "container app: ECR could not be asked about {}:",
                setup.good
            )),
            "{fault:?}: {text}"
        );
        assert!(
            text.contains(expect_in_message),
            "{fault:?}: {text:?} lacks {expect_in_message:?}"
        );

        // The fault clears: answers are correct and fresh (nothing poisoned was cached).
        setup.proxy.set(Fault::None);
        let good = srv
            .review("/validate", pod_review(&[("app", &setup.good)]))
            .await;
        assert_eq!(good["allowed"], true, "{fault:?} cleared: {good}");
        assert!(warnings(&good).is_empty());
        let broken = srv
            .review("/validate", pod_review(&[("app", &setup.broken)]))
            .await;
        assert_eq!(broken["allowed"], false);
        assert!(
            message(&broken).contains("1 of 3 blobs missing in ECR"),
            "{}",
            message(&broken)
        );
    }
}

#[tokio::test]
async fn latency_beyond_the_budget() {
    fault_gives_on_error_decision(
        Fault::Latency(Duration::from_secs(5)),
        "no answer from ECR within",
    )
    .await;
}

#[tokio::test]
async fn http_500_is_retried_then_unknown() {
    fault_gives_on_error_decision(Fault::ServerError, "ECR server error (HTTP 500").await;
}

#[tokio::test]
async fn access_denied_names_the_permission() {
    fault_gives_on_error_decision(
        Fault::AccessDenied,
        "AccessDeniedException (ecr:BatchGetImage)",
    )
    .await;
}

#[tokio::test]
async fn malformed_json_from_ecr() {
    fault_gives_on_error_decision(Fault::MalformedJson, "MalformedResponse").await;
}

#[tokio::test]
async fn connection_reset_mid_response() {
    fault_gives_on_error_decision(Fault::ResetMidResponse, "cannot reach ECR").await;
}

#[tokio::test]
async fn access_denied_is_not_retried() {
    let setup = setup().await;
    let srv = server::start(Options {
        timeout: TIMEOUT,
        endpoint: Some(setup.proxy.url.clone()),
        ..Options::default()
    })
    .await;
    setup.proxy.set(Fault::AccessDenied);
    srv.review("/validate", pod_review(&[("app", &setup.good)]))
        .await;
    assert_eq!(setup.proxy.calls(), 1, "AccessDenied must not be retried");
}

#[tokio::test]
async fn throttling_for_the_first_calls_is_retried_within_the_budget() {
    let setup = setup().await;
    let srv = server::start(Options {
        timeout: Duration::from_secs(3),
        endpoint: Some(setup.proxy.url.clone()),
        ..Options::default()
    })
    .await;
    setup.proxy.set(Fault::Throttle(2));
    let response = srv
        .review("/validate", pod_review(&[("app", &setup.good)]))
        .await;
    assert_eq!(response["allowed"], true, "{response}");
    assert!(
        warnings(&response).is_empty(),
        "retried to a real answer: {response}"
    );
    assert_eq!(
        setup.proxy.calls(),
        4,
        "2 throttled BatchGetImage, 1 good, 1 BatchCheckLayerAvailability"
    );
}

#[tokio::test]
async fn connection_refused() {
    let refused = common::refused_endpoint();
    let srv = server::start(Options {
        timeout: TIMEOUT,
        endpoint: Some(refused),
        ..Options::default()
    })
    .await;
    let response = srv
        .review(
            "/validate",
            pod_review(&[(
                "app",
                "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app:1",
            )]),
        )
        .await;
    assert_eq!(response["allowed"], true);
    assert!(
        warnings(&response)[0].contains("cannot reach ECR"),
        "{response}"
    );
}
