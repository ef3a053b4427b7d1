//! ECR pull-through caches, discovered: the webhook over HTTPS reads the account's rules
//! (DescribePullThroughCacheRules, which the emulator lacks: the fault proxy answers it as
//! ECR would and forwards every other call to the emulator), and checks an image ECR has
//! not cached yet at the upstream its rule fills it from (Debian's `docker-registry` on
//! loopback, TLS).

mod common;

use std::sync::Arc;

use common::fault_proxy::FaultProxy;
use common::oci_registry::OciRegistry;
use common::seed::REGISTRY;
use ecr_preflight::decision::OnError;
use ecr_preflight::engine::{Engine, EngineSettings};
use ecr_preflight::platforms::ConfigCache;
use ecr_preflight::pull_secrets::Keyring;
use ecr_preflight::registry::Routes;
use serde_json::{json, Value};

const RULES: &str = "DescribePullThroughCacheRules";
const SECRET_ARN: &str =
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:ecr-pullthroughcache/hub-AbCdEf";

/// The webhook with ECR behind `proxy`, trusting `upstreams`' certificates. `--registries`
/// is left at `ecr`: an upstream is checked whatever it names.
async fn webhook(
    proxy: &FaultProxy,
    upstreams: &[&OciRegistry],
    prefixes: &[&str],
    on_error: OnError,
) -> common::server::TestServer {
    let options = common::server::Options {
        endpoint: Some(proxy.url.clone()),
        on_error,
        ..common::server::Options::default()
    };
    let ecr = common::server::registry(options.endpoint.clone(), options.timeout).await;
    let other = common::oci_registry::trusting(upstreams, options.timeout);
    let engine = Engine::new(
        Arc::new(Routes {
            ecr: Arc::new(ecr),
            other: Arc::new(other),
        }),
        EngineSettings {
            pull_through_prefixes: prefixes.iter().map(|p| (*p).to_owned()).collect(),
            ..EngineSettings::new(vec!["linux/amd64".parse().expect("platform")])
        },
    );
    common::server::start_with(Arc::new(engine), &options, None).await
}

async fn review(server: &common::server::TestServer, image: &str) -> Value {
    server
        .review("/validate", common::pod_review(&[("app", image)]))
        .await
}

fn host(registry: &OciRegistry) -> String {
    registry.url.trim_start_matches("https://").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_ecr_has_not_cached_is_checked_at_its_upstream() {
    let upstream = OciRegistry::start_open();
    upstream.push_image("team/app", "v1").await;
    let (_, broken) = upstream.push_image("team/broken", "v2").await;
    upstream.lose_blob(&broken[2]);
    let private = OciRegistry::start("puller", "s3cret-pass");
    private.push_image("team/app", "v1").await;
    let proxy = FaultProxy::start(&common::moto::endpoint()).await;
    let hub = common::unique("hub");
    let locked = common::unique("locked");
    proxy.answer(
        RULES,
        json!({"pullThroughCacheRules": [
            {"ecrRepositoryPrefix": hub, "upstreamRegistryUrl": host(&upstream), "registryId": "123456789012"},
            {"ecrRepositoryPrefix": locked, "upstreamRegistryUrl": host(&private),
             "credentialArn": SECRET_ARN, "registryId": "123456789012"},
        ]}),
    );
    let server = webhook(&proxy, &[&upstream, &private], &[], OnError::Allow).await;

    // The upstream has it, intact: admitted without a word.
    let image = format!("{REGISTRY}/{hub}/team/app:v1");
    let ok = review(&server, &image).await;
    assert_eq!(ok["allowed"], true, "{ok}");
    assert!(ok["warnings"].is_null(), "{ok}");
    // Its platform, for the platform check: the upstream's config blob says.
    let configs = ConfigCache::new(Arc::new(common::oci_registry::trusting(
        &[&upstream],
        std::time::Duration::from_secs(3),
    )));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
    let platforms = server
        .engine
        .platforms_of(Some(&configs), &image, &Keyring::default(), deadline)
        .await;
    assert_eq!(
        platforms.map(|p| p.map(|p| p.iter().map(ToString::to_string).collect::<Vec<_>>())),
        Some(Ok(vec!["linux/amd64".to_owned()]))
    );

    // A blob the upstream lost: the first pull would fail. Denied, naming the upstream.
    let image = format!("{REGISTRY}/{hub}/team/broken:v2");
    let denied = review(&server, &image).await;
    assert_eq!(denied["allowed"], false, "{denied}");
    assert_eq!(
        denied["status"]["message"],
        format!(
            "container app: {image}: 1 of 3 blobs missing in its pull-through upstream {}/team/broken:v2 (not cached in ECR yet): {}",
            host(&upstream),
            broken[2]
        )
    );

    // A tag the upstream does not have: a real not_found, denied (no longer a warning that
    // the cache fills it on first pull).
    let image = format!("{REGISTRY}/{hub}/team/app:v9");
    let denied = review(&server, &image).await;
    assert_eq!(denied["allowed"], false, "{denied}");
    assert_eq!(
        denied["status"]["message"],
        format!(
            "container app: {image}: tag not found in its pull-through upstream {}/team/app:v9 (not cached in ECR yet)",
            host(&upstream)
        )
    );

    // An upstream that needs the credentials ECR keeps in Secrets Manager: unknown, with
    // that reason (--on-error allow: admitted with a warning; deny: the whole line).
    let image = format!("{REGISTRY}/{locked}/team/app:v1");
    let unknown = review(&server, &image).await;
    assert_eq!(unknown["allowed"], true, "{unknown}");
    let warnings = unknown["warnings"].to_string();
    assert!(warnings.contains("not cached in ECR yet"), "{warnings}");
    let strict = webhook(&proxy, &[&upstream, &private], &[], OnError::Deny).await;
    let denied = review(&strict, &image).await;
    assert_eq!(
        denied["status"]["message"],
        format!(
            "container app: {image}: not cached in ECR yet, and its pull-through upstream {}/team/app:v1 could not be asked: it needs the credentials ECR keeps in Secrets Manager ({SECRET_ARN}), which ecr-preflight does not read",
            host(&private)
        )
    );

    // A repository no rule covers is ECR's alone: not found there, denied as before.
    let image = format!("{REGISTRY}/{}/app:v1", common::unique("plain"));
    let plain = review(&server, &image).await;
    assert_eq!(plain["allowed"], false, "{plain}");
    assert!(
        plain["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("not found in registry 123456789012")),
        "{plain}"
    );
    // The rules were read once for all these reviews (and once by the second webhook).
    assert_eq!(proxy.calls_of(RULES), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_through_prefixes_override_the_rules() {
    let upstream = OciRegistry::start_open();
    let proxy = FaultProxy::start(&common::moto::endpoint()).await;
    let hub = common::unique("hub");
    proxy.answer(
        RULES,
        json!({"pullThroughCacheRules": [
            {"ecrRepositoryPrefix": hub, "upstreamRegistryUrl": host(&upstream)}]}),
    );
    let server = webhook(&proxy, &[&upstream], &[&format!("{hub}/")], OnError::Allow).await;
    // The flag names the prefix: the upstream is not known, so a tag ECR lacks only warns
    // that the cache fills it on first pull; the rules are not read.
    let answer = review(&server, &format!("{REGISTRY}/{hub}/team/app:v9")).await;
    assert_eq!(answer["allowed"], true, "{answer}");
    assert!(
        answer["warnings"]
            .to_string()
            .contains("filled on first pull"),
        "{answer}"
    );
    assert_eq!(proxy.calls_of(RULES), 0);
}
