//! The arguments every subcommand that checks images shares, and the engine they build.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use crate::engine::{CacheSettings, Engine, EngineSettings, DEFAULT_BATCH_WINDOW};
use crate::image::Registries;
use crate::manifest::Platform;
use crate::platforms::ConfigCache;
use crate::registry::credentials::CredentialKeeper;
use crate::registry::distribution::{Distribution, DistributionSettings};
use crate::registry::ecr::{EcrApi, EcrSettings};
use crate::registry::oci::{OciBlobs, RegistryEndpoint};
use crate::registry::{ConfigRoutes, Registry, Routes};

/// What the engine needs; shared by every subcommand that checks images. The defaults of the
/// cache and batching flags are the engine's own ([`CacheSettings::default`],
/// [`DEFAULT_BATCH_WINDOW`]), written there only.
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// Whole-decision budget (e.g. 3s, 1500ms).
    #[arg(long, env = "ECR_PREFLIGHT_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Index children to check, as os/architecture[/variant], comma-separated.
    #[arg(
        long,
        env = "ECR_PREFLIGHT_PLATFORMS",
        value_delimiter = ',',
        default_value = "linux/amd64,linux/arm64,windows/amd64"
    )]
    pub platforms: Vec<Platform>,
    /// Repository prefixes served by ECR pull-through cache rules (e.g. docker-hub/,ecr-public/),
    /// overriding the rules read from ECR: their images' upstream is not known, so a tag ECR
    /// lacks there only warns [default: the rules of DescribePullThroughCacheRules].
    #[arg(
        long,
        env = "ECR_PREFLIGHT_PULL_THROUGH_PREFIXES",
        value_delimiter = ','
    )]
    pub pull_through_prefixes: Vec<String>,
    /// ECR API endpoint override (tests, VPC endpoints). AWS_ENDPOINT_URL_ECR works too.
    #[arg(long, env = "ECR_PREFLIGHT_ECR_ENDPOINT_URL")]
    pub ecr_endpoint_url: Option<String>,
    /// Where the registry API of ECR hosts is reached, for config blobs (tests, VPC
    /// endpoints) [default: the image's own host, over HTTPS].
    #[arg(long, env = "ECR_PREFLIGHT_ECR_REGISTRY_URL")]
    pub ecr_registry_url: Option<String>,
    /// PEM file of certificates to trust for the registry API beyond the system's (a
    /// private CA in front of it).
    #[arg(long, env = "ECR_PREFLIGHT_ECR_REGISTRY_CA_FILE")]
    pub ecr_registry_ca_file: Option<std::path::PathBuf>,
    /// Which registries besides ECR's are checked: all, ecr (ECR's only; any other image is
    /// skipped), or hosts separated by commas (ghcr.io,quay.io; docker.io for Docker Hub).
    /// ECR images are always checked.
    #[arg(long, env = "ECR_PREFLIGHT_REGISTRIES", default_value = "all")]
    pub registries: Registries,
    /// PEM file of certificates to trust for registries other than ECR beyond the system's
    /// (a private registry's CA).
    #[arg(long, env = "ECR_PREFLIGHT_REGISTRY_CA_FILE")]
    pub registry_ca_file: Option<std::path::PathBuf>,
    /// How long tag → digest answers are cached.
    #[arg(long, env = "ECR_PREFLIGHT_TAG_CACHE_TTL", value_parser = parse_flag_duration,
        default_value_t = CacheSettings::default().tag_ttl.into())]
    pub tag_cache_ttl: humantime::Duration,
    /// Most tag → digest entries kept.
    #[arg(long, env = "ECR_PREFLIGHT_TAG_CACHE_SIZE",
        default_value_t = CacheSettings::default().tag_capacity)]
    pub tag_cache_size: u64,
    /// How long manifests (immutable, by digest) are cached.
    #[arg(long, env = "ECR_PREFLIGHT_MANIFEST_CACHE_TTL", value_parser = parse_flag_duration,
        default_value_t = CacheSettings::default().manifest_ttl.into())]
    pub manifest_cache_ttl: humantime::Duration,
    /// Most manifests kept.
    #[arg(long, env = "ECR_PREFLIGHT_MANIFEST_CACHE_SIZE",
        default_value_t = CacheSettings::default().manifest_capacity)]
    pub manifest_cache_size: u64,
    /// How long a blob found AVAILABLE is trusted.
    #[arg(long, env = "ECR_PREFLIGHT_BLOB_CACHE_TTL", value_parser = parse_flag_duration,
        default_value_t = CacheSettings::default().blob_ttl.into())]
    pub blob_cache_ttl: humantime::Duration,
    /// Most AVAILABLE blob entries kept (about 70 bytes each).
    #[arg(long, env = "ECR_PREFLIGHT_BLOB_CACHE_SIZE",
        default_value_t = CacheSettings::default().blob_capacity)]
    pub blob_cache_size: u64,
    /// At most how long ECR lookups that arrive while a call is in flight for their
    /// repository wait for it to return; a lookup that finds none in flight is sent at once.
    #[arg(long, env = "ECR_PREFLIGHT_BATCH_WINDOW", value_parser = parse_flag_duration,
        default_value_t = DEFAULT_BATCH_WINDOW.into())]
    pub batch_window: humantime::Duration,
}

impl EngineArgs {
    fn cache_settings(&self) -> CacheSettings {
        CacheSettings {
            manifest_capacity: self.manifest_cache_size,
            manifest_ttl: *self.manifest_cache_ttl,
            tag_capacity: self.tag_cache_size,
            tag_ttl: *self.tag_cache_ttl,
            blob_capacity: self.blob_cache_size,
            blob_ttl: *self.blob_cache_ttl,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.timeout < Duration::from_millis(100) {
            return Err("--timeout must be at least 100ms".into());
        }
        if *self.batch_window > Duration::from_millis(100) {
            return Err(
                "--batch-window must be at most 100ms: lookups behind a slow call wait that long"
                    .into(),
            );
        }
        if self.platforms.is_empty() {
            return Err("--platforms must name at least one platform".into());
        }
        if let Some(path) = &self.registry_ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| format!("cannot read --registry-ca-file {}: {e}", path.display()))?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                return Err(format!(
                    "--registry-ca-file {} holds no PEM certificate",
                    path.display()
                ));
            }
        }
        Ok(())
    }

    /// The engine over the AWS SDK (credentials from the default chain, resolving from now
    /// on), with SDK timeouts derived from the decision budget.
    pub async fn build_engine(&self) -> Built {
        let settings = EcrSettings::for_budget(self.ecr_endpoint_url.clone(), self.timeout);
        let ecr = Arc::new(EcrApi::from_default_chain(settings, None, None).await);
        let credentials = ecr.credentials();
        let other = self.distribution();
        let registry = routed(ecr.clone(), other.clone());
        Built {
            engine: Engine::new(registry.clone(), self.engine_settings()),
            registry,
            ecr,
            other,
            credentials,
        }
    }

    /// A client (connections, tokens, manifests held) for the registries other than ECR's:
    /// those `--registries` names, and the upstreams of ECR's pull-through caches (checked
    /// whatever it names). `None` when it cannot be built.
    pub fn distribution(&self) -> Option<Arc<Distribution>> {
        let extra_roots = self
            .registry_ca_file
            .as_ref()
            .and_then(|path| std::fs::read(path).ok())
            .into_iter()
            .collect();
        let settings = DistributionSettings {
            timeout: self.timeout,
            extra_roots,
            ..DistributionSettings::default()
        };
        match Distribution::new(settings) {
            Ok(other) => Some(Arc::new(other)),
            Err(e) => {
                tracing::error!(error = %e, "cannot build the client of registries other than ECR; their images are not checked");
                None
            }
        }
    }

    /// The config blobs' platforms: ECR's read through its registry API with ECR's
    /// credentials, the others' through `other`.
    pub fn config_platforms(
        &self,
        ecr: &Arc<EcrApi>,
        other: Option<Arc<Distribution>>,
    ) -> anyhow::Result<Arc<ConfigCache>> {
        let extra_roots = match &self.ecr_registry_ca_file {
            Some(path) => vec![std::fs::read(path).map_err(|e| {
                anyhow::anyhow!("cannot read --ecr-registry-ca-file {}: {e}", path.display())
            })?],
            None => Vec::new(),
        };
        let endpoint = RegistryEndpoint {
            url: self.ecr_registry_url.clone(),
            extra_roots,
            timeout: self.timeout,
        };
        let ecr_blobs = Arc::new(OciBlobs::new(ecr.clone(), endpoint));
        Ok(Arc::new(ConfigCache::new(match other {
            Some(other) => Arc::new(ConfigRoutes {
                ecr: ecr_blobs,
                other,
            }),
            None => ecr_blobs,
        })))
    }

    pub fn engine_settings(&self) -> EngineSettings {
        EngineSettings {
            platforms: self.platforms.clone(),
            pull_through_prefixes: self.pull_through_prefixes.clone(),
            cache: self.cache_settings(),
            batch_window: *self.batch_window,
            registries: self.registries.clone(),
        }
    }
}

/// `ecr` for ECR's images and, when there is one, `other` for the other registries'.
pub fn routed(ecr: Arc<EcrApi>, other: Option<Arc<Distribution>>) -> Arc<dyn Registry> {
    match other {
        Some(other) => Arc::new(Routes { ecr, other }),
        None => ecr,
    }
}

/// What [`EngineArgs::build_engine`] builds.
pub struct Built {
    pub engine: Engine,
    /// The SDK registry the engine calls, for the controller's engine to share.
    pub registry: Arc<dyn Registry>,
    /// The same, as itself: for the registry API's credentials.
    pub ecr: Arc<EcrApi>,
    /// The other registries' client the engine calls, for their config blobs too.
    pub other: Option<Arc<Distribution>>,
    /// The keeper of its credentials.
    pub credentials: Option<Arc<CredentialKeeper>>,
}

/// Accepts `3s`, `1500ms`, `1m30s` and Go's `1m0s`, as the API server writes durations.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// [`parse_duration`] for flags whose default is a `Duration` of the engine's: `humantime`'s
/// type, so that clap can show the default (`1m` for 60 s, `1day` for 24 h).
fn parse_flag_duration(s: &str) -> Result<humantime::Duration, String> {
    parse_duration(s).map(Into::into)
}
