//! The OCI Distribution API behind the registry seam, against Debian's `docker-registry`
//! on loopback (TLS): a tag resolved with a HEAD and its manifest read by digest, blobs
//! asked one HEAD each, a blob lost from storage, a tag removed, and a registry that wants
//! credentials, anonymous and with them.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::oci_registry::OciRegistry;
use ecr_preflight::image::{ImageId, RegistryName, RepositoryKey};
use ecr_preflight::registry::distribution::{Distribution, DistributionSettings, Login};
use ecr_preflight::registry::{BlobState, Registry, RegistryError};

use common::oci_registry::OCI_MANIFEST;

/// A loopback listener and its http:// URL.
async fn loopback() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    (listener, url)
}

/// The client for the made-up host `registry.test`, reached at `url` over plain HTTP.
fn over_http(url: String, logins: HashMap<String, Login>, timeout: Duration) -> Distribution {
    ecr_preflight::server::tls::install_crypto_provider();
    Distribution::new(DistributionSettings {
        timeout,
        endpoints: [("registry.test".to_owned(), url)].into(),
        logins,
        ..DistributionSettings::default()
    })
    .expect("client")
}

/// The registry's API for the made-up host `registry.test`, trusting its certificate.
fn distribution(registry: &OciRegistry, logins: HashMap<String, Login>) -> Distribution {
    ecr_preflight::server::tls::install_crypto_provider();
    Distribution::new(DistributionSettings {
        timeout: Duration::from_secs(5),
        extra_roots: vec![std::fs::read(&registry.ca).expect("ca")],
        endpoints: [("registry.test".to_owned(), registry.url.clone())].into(),
        logins,
    })
    .expect("client")
}

/// [`distribution`] with the user `puller` and `password` for `registry.test`.
fn with_password(registry: &OciRegistry, password: &str) -> Distribution {
    let login = Login {
        user: "puller".into(),
        password: password.into(),
    };
    distribution(registry, [("registry.test".to_owned(), login)].into())
}

/// Tag `v1` of `repo` resolves to `digest` and every one of `blobs` is there.
async fn assert_intact(api: &Distribution, repo: &RepositoryKey, digest: &str, blobs: &[String]) {
    let got = api
        .batch_get_image(repo, &[ImageId::Tag("v1".into())])
        .await
        .expect("answer");
    assert_eq!(got.images[0].digest.as_deref(), Some(digest));
    let checked = api
        .batch_check_layer_availability(repo, blobs)
        .await
        .expect("answer");
    assert!(
        checked
            .blobs
            .iter()
            .all(|(_, s)| *s == BlobState::Available),
        "{checked:?}"
    );
}

fn repo(name: &str) -> RepositoryKey {
    RepositoryKey::new(RegistryName::Distribution("registry.test".into()), name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_resolves_to_its_manifest_and_each_blob_is_asked_for() {
    let registry = OciRegistry::start_open();
    let (digest, blobs) = registry.push_image("team/app", "v1").await;
    let api = distribution(&registry, HashMap::new());
    let app = repo("team/app");

    let got = api
        .batch_get_image(
            &app,
            &[ImageId::Tag("v1".into()), ImageId::Tag("v9".into())],
        )
        .await
        .expect("answer");
    assert_eq!(got.images.len(), 1, "{got:?}");
    assert_eq!(got.images[0].tag.as_deref(), Some("v1"));
    assert_eq!(got.images[0].digest.as_deref(), Some(digest.as_str()));
    assert_eq!(got.images[0].media_type.as_deref(), Some(OCI_MANIFEST));
    assert_eq!(got.failures.len(), 1, "{got:?}");
    assert_eq!(got.failures[0].tag.as_deref(), Some("v9"));
    assert_eq!(got.failures[0].code, "ImageNotFound");

    // A tag that did not move costs one HEAD: its manifest is held by digest.
    let before = registry.requests_since(0, 2).len();
    let again = api
        .batch_get_image(&app, &[ImageId::Tag("v1".into())])
        .await
        .expect("answer");
    assert_eq!(again.images[0].manifest, got.images[0].manifest);
    assert_eq!(
        registry.requests_since(before, 1),
        [("HEAD".to_owned(), "/v2/team/app/manifests/v1".to_owned())]
    );

    // By digest too, and the same answer.
    let by_digest = api
        .batch_get_image(&app, &[ImageId::Digest(digest.clone())])
        .await
        .expect("answer");
    assert_eq!(by_digest.images[0].manifest, got.images[0].manifest);

    let checked = api
        .batch_check_layer_availability(&app, &blobs)
        .await
        .expect("answer");
    assert_eq!(checked.blobs.len(), 3);
    assert!(
        checked
            .blobs
            .iter()
            .all(|(_, s)| *s == BlobState::Available),
        "{checked:?}"
    );

    // A blob lost from storage is missing; the others stay available.
    registry.lose_blob(&blobs[2]);
    let checked = api
        .batch_check_layer_availability(&app, &blobs)
        .await
        .expect("answer");
    let states: HashMap<&String, BlobState> = checked.blobs.iter().map(|(d, s)| (d, *s)).collect();
    assert_eq!(states[&blobs[2]], BlobState::Missing, "{checked:?}");
    assert_eq!(states[&blobs[0]], BlobState::Available);

    // A tag removed is not found.
    registry.untag("team/app", "v1");
    let gone = api
        .batch_get_image(&app, &[ImageId::Tag("v1".into())])
        .await
        .expect("answer");
    assert!(gone.images.is_empty(), "{gone:?}");
    assert_eq!(gone.failures[0].code, "ImageNotFound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_wants_credentials_is_asked_anonymously_first_then_with_them() {
    let registry = OciRegistry::start("puller", "s3cret-pass");
    let (digest, blobs) = registry.push_image("private/app", "v1").await;
    let app = repo("private/app");

    let anonymous = distribution(&registry, HashMap::new());
    let refused = anonymous
        .batch_get_image(&app, &[ImageId::Tag("v1".into())])
        .await
        .expect_err("anonymous is refused");
    assert_eq!(
        refused,
        RegistryError::NeedsCredentials {
            registry: "registry.test".into()
        }
    );
    assert!(
        refused.to_string().contains("needs credentials"),
        "{refused}"
    );

    let login = Login {
        user: "puller".into(),
        password: "s3cret-pass".into(),
    };
    assert!(
        !format!("{login:?}").contains("s3cret"),
        "never the password"
    );
    let with_login = with_password(&registry, "s3cret-pass");
    assert_intact(&with_login, &app, &digest, &blobs).await;

    let wrong = with_password(&registry, "wrong");
    let denied = wrong
        .batch_get_image(&app, &[ImageId::Tag("v1".into())])
        .await
        .expect_err("wrong credentials are refused");
    assert!(
        matches!(denied, RegistryError::AccessDenied { .. }),
        "{denied:?}"
    );
}

#[tokio::test]
async fn an_ecr_key_is_refused_with_a_clear_error() {
    let registry = OciRegistry::start_open();
    let api = distribution(&registry, HashMap::new());
    let ecr = ecr_preflight::image::ImageTarget::classify(
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/app:v1",
    )
    .expect("reference");
    let ecr_preflight::image::ImageTarget::Ecr { repo, id } = ecr else {
        panic!("an ECR image");
    };
    let err = api
        .batch_get_image(&repo, &[id])
        .await
        .expect_err("not this registry's");
    assert!(err.to_string().contains("Amazon ECR registry"), "{err}");
}

/// A registry that answers its first request with `429` and `Retry-After: 1`, then `404`:
/// the arrival time of each request.
async fn slowing_registry() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<std::time::Instant>>>,
) {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let arrivals = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = arrivals.clone();
    let app = axum::Router::new().fallback(move || {
        let seen = seen.clone();
        async move {
            let mut seen = seen.lock().expect("lock");
            seen.push(std::time::Instant::now());
            if seen.len() == 1 {
                (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")]).into_response()
            } else {
                StatusCode::NOT_FOUND.into_response()
            }
        }
    });
    let (listener, url) = loopback().await;
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, arrivals)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_pauses_its_registry_for_the_retry_after_it_gives() {
    let (url, arrivals) = slowing_registry().await;
    let api = over_http(url, HashMap::new(), Duration::from_secs(5));
    let app = repo("app");
    let tag = [ImageId::Tag("v1".into())];
    let throttled = api
        .batch_get_image(&app, &tag)
        .await
        .expect_err("throttled");
    assert!(
        matches!(&throttled, RegistryError::Throttled(why) if why.contains("registry.test")),
        "{throttled:?}"
    );
    let answered = api.batch_get_image(&app, &tag).await.expect("answer");
    assert_eq!(answered.failures[0].code, "ImageNotFound");
    let arrivals = arrivals.lock().expect("lock");
    assert_eq!(
        arrivals.len(),
        2,
        "one request each, the second after the pause"
    );
    // A lower bound only: a slow machine makes it longer, never shorter.
    assert!(
        arrivals[1] - arrivals[0] >= Duration::from_secs(1),
        "asked again {:?} after a Retry-After of 1 s",
        arrivals[1] - arrivals[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_hangs_is_a_timeout_within_the_request_bound() {
    // Accepts connections and never answers.
    let (listener, url) = loopback().await;
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let api = over_http(url, HashMap::new(), Duration::from_millis(300));
    let err = api
        .batch_check_layer_availability(&repo("app"), &[format!("sha256:{}", "a".repeat(64))])
        .await
        .expect_err("no answer");
    assert_eq!(err, RegistryError::Timeout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_arch_images_platform_is_read_from_its_config_blob() {
    use ecr_preflight::registry::ConfigPlatforms;
    let registry = OciRegistry::start_open();
    let (_, blobs) = registry.push_image("team/app", "v1").await;
    let api = distribution(&registry, HashMap::new());
    let app = repo("team/app");
    let platform = api
        .config_platform("registry.test", &app, &blobs[0])
        .await
        .expect("platform");
    assert_eq!(platform.to_string(), "linux/amd64");
    // A registry serving other content for the digest is caught.
    registry.corrupt(&blobs[0], br#"{"architecture":"arm64","os":"linux"}"#);
    let err = api
        .config_platform("registry.test", &app, &blobs[0])
        .await
        .expect_err("not the blob its digest names");
    assert!(err.to_string().contains("DigestMismatch"), "{err}");
}

/// A registry that answers as Docker Hub, GHCR and Quay do: `401` with a Bearer challenge
/// naming its token service, which hands a token for `repository:<name>:pull` (to anyone, or
/// only to `puller` when `private`); with the token, `404` for any manifest. Every request
/// as (method, path, Authorization).
async fn token_registry(
    private: bool,
) -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<(String, String, String)>>>,
) {
    use axum::http::{HeaderMap, Method, StatusCode, Uri};
    use axum::response::IntoResponse;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (listener, base) = loopback().await;
    let realm = format!("{base}/token");
    let log = seen.clone();
    let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap| {
        let (log, realm) = (log.clone(), realm.clone());
        async move {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            log.lock()
                .expect("lock")
                .push((method.to_string(), uri.to_string(), auth.clone()));
            if uri.path() == "/token" {
                let query = uri.query().unwrap_or_default();
                assert!(
                    query.contains("scope=repository%3Aapp%3Apull")
                        || query.contains("scope=repository:app:pull"),
                    "{query}"
                );
                // "puller:s3cret-pass"
                if private && auth != "Basic cHVsbGVyOnMzY3JldC1wYXNz" {
                    return StatusCode::UNAUTHORIZED.into_response();
                }
                return axum::Json(serde_json::json!({"token": "t0ken", "expires_in": 300}))
                    .into_response();
            }
            if auth != "Bearer t0ken" {
                let challenge =
                    format!(r#"Bearer realm="{realm}",service="fake",scope="repository:app:pull""#);
                return (StatusCode::UNAUTHORIZED, [("www-authenticate", challenge)])
                    .into_response();
            }
            StatusCode::NOT_FOUND.into_response()
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bearer_challenge_is_answered_with_a_token_anonymous_first() {
    ecr_preflight::server::tls::install_crypto_provider();
    let (url, seen) = token_registry(false).await;
    let api = over_http(url, HashMap::new(), Duration::from_secs(5));
    let tag = [ImageId::Tag("v1".into())];
    let got = api
        .batch_get_image(&repo("app"), &tag)
        .await
        .expect("answer");
    assert_eq!(got.failures[0].code, "ImageNotFound", "{got:?}");
    // The token is kept: a second look is one request.
    let before = seen.lock().expect("lock").len();
    api.batch_get_image(&repo("app"), &tag)
        .await
        .expect("answer");
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), before + 1, "{seen:?}");
    assert_eq!(seen[before].2, "Bearer t0ken");
    let token_requests: Vec<_> = seen.iter().filter(|r| r.1.starts_with("/token")).collect();
    assert_eq!(token_requests.len(), 1, "{seen:?}");
    assert_eq!(token_requests[0].2, "", "anonymous first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_token_service_gets_the_credentials_and_without_them_needs_them() {
    let (url, _) = token_registry(true).await;
    let anonymous = over_http(url.clone(), HashMap::new(), Duration::from_secs(5));
    let tag = [ImageId::Tag("v1".into())];
    let refused = anonymous
        .batch_get_image(&repo("app"), &tag)
        .await
        .expect_err("no credentials");
    assert!(
        matches!(refused, RegistryError::NeedsCredentials { .. }),
        "{refused:?}"
    );
    let login = Login {
        user: "puller".into(),
        password: "s3cret-pass".into(),
    };
    let with_login = over_http(
        url,
        [("registry.test".to_owned(), login)].into(),
        Duration::from_secs(5),
    );
    let got = with_login
        .batch_get_image(&repo("app"), &tag)
        .await
        .expect("answer");
    assert_eq!(got.failures[0].code, "ImageNotFound", "{got:?}");
}

/// A pod may name any host as its registry: what that host answers is never repeated in an
/// error (only the status and a distribution error code).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_host_answers_is_never_repeated() {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let app = axum::Router::new().fallback(|| async {
        (
            StatusCode::IM_A_TEAPOT,
            [("docker-content-digest", "sha256:0")],
            "secret-instance-credentials",
        )
            .into_response()
    });
    let (listener, url) = loopback().await;
    tokio::spawn(async move { axum::serve(listener, app).await });
    let api = over_http(url, HashMap::new(), Duration::from_secs(5));
    let digest = ImageId::Digest(format!("sha256:{}", "a".repeat(64)));
    for id in [ImageId::Tag("v1".into()), digest] {
        let err = api
            .batch_get_image(&repo("app"), &[id])
            .await
            .expect_err("refused");
        assert!(!format!("{err} {err:?}").contains("secret"), "{err:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_with_token_authentication_is_asked_as_a_kubelet_would() {
    // docker-registry trusting JWTs from a token server, as Docker Hub, GHCR and Quay work:
    // `library/` anyone may pull, `private/` only with the user's password.
    let mut registry = OciRegistry::start_open();
    let (digest, blobs) = registry.push_image("library/app", "v1").await;
    let (private_digest, private_blobs) = registry.push_image("private/app", "v1").await;
    let tokens =
        common::token_server::TokenServer::start("puller", "s3cret-pass", &["library/"]).await;
    registry.require_tokens(&tokens);

    // Anonymous: a token for the public repository, used for the tag, the manifest and
    // every blob; asked for once.
    let anonymous = distribution(&registry, HashMap::new());
    let public = repo("library/app");
    assert_intact(&anonymous, &public, &digest, &blobs).await;
    assert_eq!(
        tokens.requests(),
        vec![(false, "repository:library/app:pull".to_owned())],
        "one anonymous token for the repository"
    );

    // The private repository: the anonymous token carries no access, and the registry
    // refuses it: needs credentials, never a denial.
    let private = repo("private/app");
    let refused = anonymous
        .batch_get_image(&private, &[ImageId::Tag("v1".into())])
        .await
        .expect_err("the registry refuses a token without access");
    assert!(
        matches!(refused, RegistryError::NeedsCredentials { .. }),
        "{refused:?}"
    );

    // With the password: the token service is asked with it, and its token opens the
    // repository.
    let with_login = with_password(&registry, "s3cret-pass");
    assert_intact(&with_login, &private, &private_digest, &private_blobs).await;
    assert!(
        tokens
            .requests()
            .contains(&(true, "repository:private/app:pull".to_owned())),
        "{:?}",
        tokens.requests()
    );

    // A wrong password: the token service turns it down: refused, not "needs credentials".
    let wrong = with_password(&registry, "wrong");
    let denied = wrong
        .batch_get_image(&private, &[ImageId::Tag("v1".into())])
        .await
        .expect_err("wrong credentials");
    assert!(
        matches!(denied, RegistryError::AccessDenied { .. }),
        "{denied:?}"
    );
}
