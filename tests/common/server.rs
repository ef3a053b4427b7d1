//! The real webhook, started in-process on TLS with a test certificate, and an HTTPS client
//! that trusts it.

use std::sync::Arc;
use std::time::Duration;

use ecr_preflight::admission::DecisionLog;
use ecr_preflight::admission::{OwnedObjects, Policy};
use ecr_preflight::decision::{Mode, OnError};
use ecr_preflight::engine::{Engine, EngineSettings};
use ecr_preflight::registry::ecr::{EcrApi, EcrSettings};
use ecr_preflight::server::tls::{self, CertStore};
use ecr_preflight::server::{self, Running, WebhookConfig};

pub struct TestServer {
    pub url: String,
    pub admin_url: String,
    pub client: reqwest::Client,
    /// The PEM certificate the server presents.
    pub cert_pem: String,
    /// The server's engine, for its call counters and caches.
    pub engine: Arc<Engine>,
    pub running: Running,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub mode: Mode,
    pub on_error: OnError,
    pub owned_objects: OwnedObjects,
    pub timeout: Duration,
    pub platforms: Vec<&'static str>,
    pub pull_through_prefixes: Vec<String>,
    /// ECR endpoint; the emulator's when `None`.
    pub endpoint: Option<String>,
    pub limits: server::Limits,
    pub batch_window: Duration,
    /// The pods' pull secrets (`--read-pull-secrets`).
    pub pull_secrets: Option<ecr_preflight::pull_secrets::SecretReader>,
    /// `/mutate` (`--pin-digests`).
    pub pin_digests: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mode: Mode::Enforce,
            on_error: OnError::Allow,
            owned_objects: OwnedObjects::Audit,
            timeout: Duration::from_secs(3),
            platforms: vec!["linux/amd64", "linux/arm64"],
            pull_through_prefixes: Vec::new(),
            endpoint: None,
            limits: server::Limits::default(),
            batch_window: ecr_preflight::engine::DEFAULT_BATCH_WINDOW,
            pull_secrets: None,
            pin_digests: false,
        }
    }
}

/// The SDK registry against `endpoint` (the emulator's when `None`), with the emulator's
/// static test credentials.
pub async fn registry(endpoint: Option<String>, timeout: Duration) -> EcrApi {
    let endpoint = endpoint.unwrap_or_else(super::moto::endpoint);
    let base = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(super::seed::REGION))
        .credentials_provider(aws_sdk_ecr::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .load()
        .await;
    let settings = EcrSettings::for_budget(Some(endpoint), timeout);
    EcrApi::new(base, settings)
}

pub async fn engine(options: &Options) -> Engine {
    let registry = registry(options.endpoint.clone(), options.timeout).await;
    Engine::new(
        Arc::new(registry),
        EngineSettings {
            platforms: options
                .platforms
                .iter()
                .map(|p| p.parse().expect("platform"))
                .collect(),
            pull_through_prefixes: options.pull_through_prefixes.clone(),
            batch_window: options.batch_window,
            ..EngineSettings::new(Vec::new())
        },
    )
}

pub async fn start(options: Options) -> TestServer {
    let engine = Arc::new(engine(&options).await);
    start_with(engine, &options, None).await
}

/// The webhook on `engine` (options other than the engine's from `options`), turning ready
/// after `ready_when` if given.
pub async fn start_with(
    engine: Arc<Engine>,
    options: &Options,
    ready_when: Option<server::ReadyGate>,
) -> TestServer {
    tls::install_crypto_provider();
    let (cert_pem, key_pem) = tls::self_signed_pem().expect("test certificate");
    let key = tls::certified_key(
        cert_pem.as_bytes(),
        key_pem.as_bytes(),
        "cert".as_ref(),
        "key".as_ref(),
    )
    .expect("key");
    let config = WebhookConfig {
        policy: Policy {
            mode: options.mode,
            on_error: options.on_error,
            owned_objects: options.owned_objects,
        },
        timeout: options.timeout,
        limits: options.limits,
        ready_when,
        pull_secrets: options.pull_secrets.clone(),
        pin_digests: options.pin_digests,
        ..loopback_config(CertStore::new(key))
    };
    let running = server::start_webhook(engine.clone(), config)
        .await
        .expect("start");
    let client = client(&cert_pem, false);
    TestServer {
        url: format!(
            "https://localhost:{}",
            running.webhook_addr.expect("webhook listener").port()
        ),
        admin_url: format!("http://127.0.0.1:{}", running.metrics_addr.port()),
        client,
        cert_pem,
        engine,
        running,
    }
}

/// The webhook on loopback ports chosen by the system, in enforce mode, serving `certificates`.
pub fn loopback_config(certificates: Arc<CertStore>) -> WebhookConfig {
    WebhookConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        metrics_listen: "127.0.0.1:0".parse().expect("addr"),
        policy: Policy {
            mode: Mode::Enforce,
            on_error: OnError::Allow,
            owned_objects: OwnedObjects::Audit,
        },
        timeout: Duration::from_secs(3),
        certificates,
        limits: server::Limits::default(),
        decision_log: DecisionLog::Tracing,
        ready_when: None,
        controller: None,
        config_platforms: None,
        pull_secrets: None,
        pin_digests: false,
    }
}

/// An HTTPS client trusting only `cert_pem`; HTTP/1.1 only when `http1_only`.
pub fn client(cert_pem: &str, http1_only: bool) -> reqwest::Client {
    let cert = reqwest::Certificate::from_pem(cert_pem.as_bytes()).expect("cert");
    let mut builder = reqwest::Client::builder()
        .tls_certs_only([cert])
        .timeout(Duration::from_secs(30));
    if http1_only {
        builder = builder.http1_only();
    }
    builder.build().expect("client")
}

impl TestServer {
    /// POSTs a body to `path` and returns the status and the body as text.
    pub async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, String) {
        let response = self
            .client
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }

    /// POSTs a review and returns its `response` object.
    pub async fn review(&self, path: &str, body: String) -> serde_json::Value {
        let (status, text) = self.post(path, body).await;
        assert_eq!(status, 200, "{text}");
        let review: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(review["kind"], "AdmissionReview");
        review["response"].clone()
    }
}
