//! The engine's two ECR calls, sent without the SDK (src/registry/direct.rs), are signed as
//! ECR checks a signature: each request that arrives is signed again here from what arrived
//! (method, path, the headers it says it signed, its body, its `x-amz-date`) and the two
//! signatures must be equal. The SDK's own requests, captured the same way, are the control
//! that this recomputation is right. The emulator checks no signature, so this is where a
//! wrong one would show.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_async::time::StaticTimeSource;
use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use ecr_preflight::image::{ImageId, ImageTarget, RepositoryKey};
use ecr_preflight::registry::ecr::{EcrApi, EcrSettings};
use ecr_preflight::registry::Registry;

const ACCESS_KEY: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const TOKEN: &str = "session-token-example";
/// 2020-01-01T00:00:00Z: years from any real clock, so the skew correction always shows.
const SIGNED_AT: u64 = 1_577_836_800;

#[derive(Clone)]
struct Captured {
    headers: HeaderMap,
    path: String,
    body: Bytes,
}

/// Every request an endpoint was sent, in order.
type Seen = Arc<Mutex<Vec<Captured>>>;

/// A stand-in for ECR's endpoint that keeps every request and answers each with `answer`.
async fn endpoint(answer: fn(&Captured) -> axum::response::Response) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let keep = seen.clone();
    let app = axum::Router::new().fallback(
        move |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
            let keep = keep.clone();
            async move {
                let request = Captured {
                    headers,
                    path: uri.path().to_owned(),
                    body,
                };
                let response = answer(&request);
                keep.lock().unwrap().push(request);
                response
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

/// An endpoint that answers every request with an empty result both operations can read.
async fn capturing_endpoint() -> (String, Seen) {
    endpoint(|_| {
        (
            [("content-type", "application/x-amz-json-1.1")],
            r#"{"images":[],"failures":[],"layers":[]}"#,
        )
            .into_response()
    })
    .await
}

async fn api(endpoint: &str, direct: bool) -> EcrApi {
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(SIGNED_AT);
    let base = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("eu-west-1"))
        .time_source(StaticTimeSource::new(at))
        .credentials_provider(aws_sdk_ecr::config::Credentials::new(
            ACCESS_KEY,
            SECRET,
            Some(TOKEN.to_owned()),
            None,
            "test",
        ))
        .load()
        .await;
    let mut settings = EcrSettings::for_budget(Some(endpoint.to_owned()), Duration::from_secs(3));
    settings.direct = direct;
    EcrApi::new(base, settings)
}

fn repo() -> RepositoryKey {
    match ImageTarget::classify("123456789012.dkr.ecr.us-west-2.amazonaws.com/team/app:1") {
        Ok(ImageTarget::Ecr { repo, .. }) => repo,
        _ => panic!("an ECR reference"),
    }
}

/// Both calls through `api`, and the requests that arrived.
async fn requests_of(direct: bool) -> Vec<Captured> {
    let (endpoint, seen) = capturing_endpoint().await;
    let api = api(&endpoint, direct).await;
    let repo = repo();
    api.batch_get_image(&repo, &[ImageId::Tag("1".into())])
        .await
        .expect("BatchGetImage");
    api.batch_check_layer_availability(&repo, &["sha256:".to_owned() + &"a".repeat(64)])
        .await
        .expect("BatchCheckLayerAvailability");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "one request a call");
    seen
}

/// `Authorization`'s credential scope, signed headers and signature.
fn authorization(request: &Captured) -> (String, Vec<String>, String) {
    let value = request.headers["authorization"].to_str().unwrap();
    let rest = value
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .expect("a SigV4 authorization");
    let field = |name: &str| {
        rest.split(", ")
            .find_map(|part| part.strip_prefix(name))
            .unwrap_or_else(|| panic!("{name} in {value}"))
            .to_owned()
    };
    let signed = field("SignedHeaders=")
        .split(';')
        .map(str::to_owned)
        .collect();
    (field("Credential="), signed, field("Signature="))
}

/// When `request` says it was signed (`x-amz-date`, e.g. 20200101T000000Z).
fn signed_at(request: &Captured) -> SystemTime {
    let d = request.headers["x-amz-date"].to_str().unwrap();
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &d[0..4],
        &d[4..6],
        &d[6..8],
        &d[9..11],
        &d[11..13],
        &d[13..15]
    );
    let at = aws_sdk_ecr::primitives::DateTime::from_str(
        &rfc3339,
        aws_sdk_ecr::primitives::DateTimeFormat::DateTime,
    )
    .unwrap();
    SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(at.secs()).unwrap())
}

/// The signature ECR would compute for `request` as it arrived, in `region`.
fn expected_signature(request: &Captured, region: &str, signed: &[String]) -> String {
    let identity = aws_sdk_ecr::config::Credentials::new(
        ACCESS_KEY,
        SECRET,
        Some(TOKEN.to_owned()),
        None,
        "test",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("ecr")
        .time(signed_at(request))
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    // The signer adds the date and the token itself.
    let headers: Vec<(&str, &str)> = signed
        .iter()
        .filter(|name| !matches!(name.as_str(), "x-amz-date" | "x-amz-security-token"))
        .map(|name| {
            let value = request.headers[name.as_str()].to_str().unwrap();
            (name.as_str(), value)
        })
        .collect();
    let host = request.headers["host"].to_str().unwrap();
    let url = format!("http://{host}{}", request.path);
    let signable = SignableRequest::new(
        "POST",
        &url,
        headers.into_iter(),
        SignableBody::Bytes(&request.body),
    )
    .unwrap();
    sign(signable, &params).unwrap().signature().to_owned()
}

/// Every request's signature is the one computed from what arrived.
fn assert_signed(requests: &[Captured]) {
    for request in requests {
        let (scope, signed, signature) = authorization(request);
        let day = &request.headers["x-amz-date"].to_str().unwrap()[..8];
        assert_eq!(
            scope,
            format!("AKIDEXAMPLE/{day}/us-west-2/ecr/aws4_request"),
            "signed for the image's region and for ECR"
        );
        for needed in [
            "content-type",
            "host",
            "x-amz-date",
            "x-amz-security-token",
            "x-amz-target",
        ] {
            assert!(signed.iter().any(|s| s == needed), "{needed} in {signed:?}");
        }
        assert_eq!(request.headers["x-amz-security-token"], TOKEN);
        assert_eq!(
            expected_signature(request, "us-west-2", &signed),
            signature,
            "{:?}",
            request.headers
        );
        // A changed body or region would not verify: the check can fail.
        let mut tampered = request.clone();
        tampered.body = Bytes::from(format!("{} ", String::from_utf8_lossy(&request.body)));
        assert_ne!(
            expected_signature(&tampered, "us-west-2", &signed),
            signature
        );
        assert_ne!(expected_signature(request, "us-east-1", &signed), signature);
    }
}

#[tokio::test]
async fn the_sdk_requests_verify_which_shows_the_check_is_right() {
    assert_signed(&requests_of(false).await);
}

#[tokio::test]
async fn the_direct_requests_verify_as_the_sdk_ones_do() {
    let requests = requests_of(true).await;
    assert_signed(&requests);
    let targets: Vec<_> = requests
        .iter()
        .map(|r| r.headers["x-amz-target"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        targets,
        [
            "AmazonEC2ContainerRegistry_V20150921.BatchGetImage",
            "AmazonEC2ContainerRegistry_V20150921.BatchCheckLayerAvailability"
        ]
    );
    assert_eq!(
        requests[0].headers["content-type"],
        "application/x-amz-json-1.1"
    );
    // Dated by the configuration's clock; then, the endpoint's answer having said its own
    // clock is hours away, by that one (as the SDK does), within the second of the `Date`.
    assert_eq!(requests[0].headers["x-amz-date"], "20200101T000000Z");
    let second = signed_at(&requests[1]);
    let now = SystemTime::now();
    let apart = now.duration_since(second).unwrap_or_else(|e| e.duration());
    assert!(apart < Duration::from_secs(60), "{:?}", requests[1].headers);
}

#[tokio::test]
async fn the_direct_bodies_say_what_the_sdk_bodies_say() {
    let direct = requests_of(true).await;
    let sdk = requests_of(false).await;
    for (ours, theirs) in direct.iter().zip(&sdk) {
        let ours: serde_json::Value = serde_json::from_slice(&ours.body).unwrap();
        let theirs: serde_json::Value = serde_json::from_slice(&theirs.body).unwrap();
        assert_eq!(ours, theirs);
    }
}

/// The endpoint named by `AWS_ENDPOINT_URL_ECR`, when nothing else names one, is where the
/// direct calls go, as the SDK's calls do. (Set once in this test binary; no other test
/// here reads it: they name their endpoint.)
#[tokio::test]
async fn the_direct_calls_follow_aws_endpoint_url_ecr() {
    let (endpoint, seen) = capturing_endpoint().await;
    std::env::set_var("AWS_ENDPOINT_URL_ECR", &endpoint);
    let base = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("eu-west-1"))
        .credentials_provider(aws_sdk_ecr::config::Credentials::new(
            ACCESS_KEY, SECRET, None, None, "test",
        ))
        .load()
        .await;
    // The configuration reads the variable when the clients are made.
    let api = EcrApi::new(base, EcrSettings::for_budget(None, Duration::from_secs(3)));
    std::env::remove_var("AWS_ENDPOINT_URL_ECR");
    api.batch_get_image(&repo(), &[ImageId::Tag("1".into())])
        .await
        .expect("BatchGetImage at the environment's endpoint");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].headers["x-amz-target"],
        "AmazonEC2ContainerRegistry_V20150921.BatchGetImage"
    );
}

/// An endpoint that refuses, as ECR does, a request dated more than five minutes away
/// from its own clock (HTTP 400 `InvalidSignatureException`, with its `Date`), and answers
/// the rest.
async fn clock_checking_endpoint() -> (String, Seen) {
    endpoint(|request| {
        let apart = SystemTime::now()
            .duration_since(signed_at(request))
            .unwrap_or_else(|e| e.duration());
        let json = [("content-type", "application/x-amz-json-1.1")];
        if apart <= Duration::from_secs(300) {
            return (json, r#"{"images":[],"failures":[]}"#).into_response();
        }
        let kind = "InvalidSignatureException";
        let body = format!(r#"{{"__type":"{kind}","message":"Signature expired"}}"#);
        let mut answer = (axum::http::StatusCode::BAD_REQUEST, json, body).into_response();
        answer
            .headers_mut()
            .insert("x-amzn-errortype", kind.parse().unwrap());
        answer
    })
    .await
}

/// A node whose clock is years off: the first request is refused for its date, and the
/// same call signs again by ECR's clock and gets its answer; the next call is dated right
/// from the start.
#[tokio::test]
async fn a_request_refused_for_its_date_is_signed_again_by_ecrs_clock() {
    let (endpoint, seen) = clock_checking_endpoint().await;
    let api = api(&endpoint, true).await;
    api.batch_get_image(&repo(), &[ImageId::Tag("1".into())])
        .await
        .expect("answered after signing again");
    api.batch_get_image(&repo(), &[ImageId::Tag("2".into())])
        .await
        .expect("answered at once");
    let seen = seen.lock().unwrap().clone();
    let dates: Vec<_> = seen
        .iter()
        .map(|r| r.headers["x-amz-date"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(seen.len(), 3, "{dates:?}");
    assert_eq!(dates[0], "20200101T000000Z");
    assert_signed(&seen);
}
