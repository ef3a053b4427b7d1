//! Credentials are resolved before the first admission needs them, refreshed ahead of their
//! expiry in the background, and never fetched by an admission: a counting fake provider
//! stands for the default chain (an IRSA or Pod Identity exchange that takes a while).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{self, error::CredentialsError, ProvideCredentials};
use aws_credential_types::Credentials;
use aws_sdk_ecr::config::SharedCredentialsProvider;
use common::seed::{Breakage, Seeder, OCI_MANIFEST};
use common::server;
use ecr_preflight::engine::{Engine, EngineSettings};
use ecr_preflight::findings::Outcome;
use ecr_preflight::registry::credentials::{CredentialKeeper, NO_EXPIRY_REFRESH};
use ecr_preflight::registry::ecr::{EcrApi, EcrSettings};
use ecr_preflight::server::ReadyGate;

/// A credentials provider that takes `delay` (tokio's clock) and counts its calls.
#[derive(Debug)]
struct CountingProvider {
    calls: AtomicUsize,
    delay: Duration,
    /// Lifetime of the credentials handed out; `None` for none at all (an error).
    lifetime: Option<Option<Duration>>,
}

impl CountingProvider {
    fn new(delay: Duration, lifetime: Option<Option<Duration>>) -> Arc<Self> {
        Arc::new(CountingProvider {
            calls: AtomicUsize::new(0),
            delay,
            lifetime,
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    async fn resolve(&self) -> provider::Result {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        match self.lifetime {
            Some(lifetime) => Ok(Credentials::new(
                "testing",
                "testing",
                None,
                lifetime.map(|l| SystemTime::now() + l),
                "counting",
            )),
            None => Err(CredentialsError::not_loaded(
                "no role to assume: the service account has no eks.amazonaws.com/role-arn",
            )),
        }
    }
}

#[derive(Debug, Clone)]
struct Shared(Arc<CountingProvider>);

impl ProvideCredentials for Shared {
    fn provide_credentials<'a>(&'a self) -> provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        provider::future::ProvideCredentials::new(self.0.resolve())
    }
}

fn source(provider: &Arc<CountingProvider>) -> SharedCredentialsProvider {
    SharedCredentialsProvider::new(Shared(provider.clone()))
}

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test(start_paused = true)]
async fn credentials_are_resolved_once_ahead_and_handed_out_without_asking_again() {
    let provider = CountingProvider::new(Duration::from_millis(400), Some(Some(HOUR)));
    let keeper = CredentialKeeper::start(source(&provider));
    let handle = ecr_preflight::registry::credentials::KeptCredentials(keeper.clone());
    let started = tokio::time::Instant::now();
    keeper
        .wait_ready(Duration::from_secs(10))
        .await
        .expect("ready");
    assert_eq!(started.elapsed(), Duration::from_millis(400));
    assert_eq!(provider.calls(), 1);
    let asked = tokio::time::Instant::now();
    for _ in 0..100 {
        handle.provide_credentials().await.expect("credentials");
    }
    assert_eq!(asked.elapsed(), Duration::ZERO, "a call waited");
    assert_eq!(provider.calls(), 1, "a call asked the chain");
    assert_eq!(keeper.problem(), None);
}

#[tokio::test(start_paused = true)]
async fn credentials_are_refreshed_in_the_background_before_they_expire() {
    let provider = CountingProvider::new(Duration::ZERO, Some(Some(HOUR)));
    let keeper = CredentialKeeper::start(source(&provider));
    keeper
        .wait_ready(Duration::from_secs(1))
        .await
        .expect("ready");
    // Refreshed 5 minutes before the hour is up, not at the hour, not before.
    tokio::time::sleep(Duration::from_secs(54 * 60)).await;
    assert_eq!(provider.calls(), 1);
    tokio::time::sleep(Duration::from_secs(2 * 60)).await;
    assert_eq!(provider.calls(), 2, "not refreshed ahead of expiry");
    // Credentials without an expiry are read again every 15 minutes.
    let static_provider = CountingProvider::new(Duration::ZERO, Some(None));
    let keeper = CredentialKeeper::start(source(&static_provider));
    keeper
        .wait_ready(Duration::from_secs(1))
        .await
        .expect("ready");
    tokio::time::sleep(NO_EXPIRY_REFRESH * 2 + Duration::from_secs(1)).await;
    assert_eq!(static_provider.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_missing_role_ends_the_wait_with_the_reason_and_is_retried_with_back_off() {
    let provider = CountingProvider::new(Duration::ZERO, None);
    let keeper = CredentialKeeper::start(source(&provider));
    let why = keeper
        .wait_ready(Duration::from_secs(10))
        .await
        .expect_err("no credentials");
    assert!(why.contains("no role to assume"), "{why}");
    // Retries after 1, 2, 4 s (then 8, 16, ... at most 60): 4 attempts within the 10 s.
    assert_eq!(provider.calls(), 4);
    assert!(keeper
        .problem()
        .is_some_and(|p| p.starts_with("no AWS credentials: ")));
}

/// With no credentials, the outcome is `unknown` and says why, without a call reaching ECR.
#[tokio::test]
async fn lookups_without_credentials_are_unknown_and_say_why() {
    let provider = CountingProvider::new(Duration::ZERO, None);
    let base = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(common::seed::REGION))
        .credentials_provider(source(&provider))
        .load()
        .await;
    // Nothing listens there: a call that reached for it would fail differently.
    let settings = EcrSettings::for_budget(
        Some("http://127.0.0.1:9".to_owned()),
        Duration::from_secs(2),
    );
    let engine = Engine::new(
        Arc::new(EcrApi::new(base, settings)),
        EngineSettings::new(vec!["linux/amd64".parse().expect("p")]),
    );
    let image = format!("{}/team/app:1", common::seed::REGISTRY);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let reports = engine.check(&[image], deadline).await;
    assert_eq!(reports[0].outcome(), Outcome::Unknown);
    let text = format!("{:?}", reports[0]);
    assert!(text.contains("no AWS credentials"), "{text}");
    assert!(text.contains("no role to assume"), "{text}");
}

/// The webhook turns ready only once the credentials are in hand, and its admissions never
/// ask the chain. (Times here only bound the waits.)
#[tokio::test]
async fn the_webhook_is_ready_only_with_credentials_in_hand() {
    let provider = CountingProvider::new(Duration::from_millis(500), Some(Some(HOUR)));
    let base = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(common::seed::REGION))
        .credentials_provider(source(&provider))
        .load()
        .await;
    let settings = EcrSettings::for_budget(Some(common::moto::endpoint()), Duration::from_secs(3));
    let registry = EcrApi::new(base, settings);
    let keeper = registry.credentials().expect("a keeper");
    let engine = Arc::new(Engine::new(
        Arc::new(registry),
        EngineSettings::new(vec!["linux/amd64".parse().expect("p")]),
    ));
    let gate_keeper = keeper.clone();
    let gate: ReadyGate = Box::pin(async move {
        let _ = gate_keeper.wait_ready(Duration::from_secs(30)).await;
    });
    let srv = server::start_with(engine, &server::Options::default(), Some(gate)).await;
    let readyz = format!("{}/readyz", srv.admin_url);
    let mut states = Vec::new();
    for _ in 0..200 {
        let status = srv
            .client
            .get(&readyz)
            .send()
            .await
            .expect("readyz")
            .status();
        states.push((status.as_u16(), keeper.problem().is_none()));
        if status.is_success() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        states.first(),
        Some(&(503, false)),
        "ready before credentials"
    );
    assert_eq!(states.last(), Some(&(200, true)), "never ready: {states:?}");
    assert!(
        states
            .iter()
            .all(|(status, creds)| *status != 200 || *creds),
        "ready without credentials: {states:?}"
    );
    // Admissions use the credentials in hand.
    let s = Seeder::new(&common::moto::endpoint());
    let run = common::unique("creds");
    let image = s
        .image(
            &format!("{run}/app"),
            "1",
            &run,
            2,
            OCI_MANIFEST,
            Breakage::default(),
        )
        .await;
    for _ in 0..5 {
        let body = common::pod_review(&[("app", &image.reference())]);
        let response = srv.review("/validate", body).await;
        assert_eq!(response["allowed"], true, "{response}");
    }
    assert_eq!(provider.calls(), 1, "an admission asked the chain");
    srv.running.shutdown();
}
