//! [`Registry`] over the AWS SDK for ECR. One SDK client per (region, FIPS, dual-stack): the
//! configured region's made at start-up, any other on first use, each reused. Credentials
//! come from the default chain through a [`CredentialKeeper`], resolved at start-up and
//! refreshed in the background. Every ECR call, the engine's two included, goes through
//! the SDK (docs/performance.md 7b–7d: a hand-written client for the two was measured,
//! kept for a while, and removed).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_ecr::config::http::HttpResponse;
use aws_sdk_ecr::config::{
    retry::RetryConfig, timeout::TimeoutConfig, IdentityCache, Region, SharedCredentialsProvider,
};
use aws_sdk_ecr::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ecr::types::ImageIdentifier;
use aws_sdk_ecr::Client;
use base64::Engine as _;
use futures::future::BoxFuture;
use futures::FutureExt;

mod lifecycle;
mod pull_through;

use super::credentials::{CredentialKeeper, KeptCredentials};
use super::{
    BatchGetImageOutput, FetchedManifest, ImageFailure, LayerAvailabilityOutput, LayerDetail,
    LayerFailure, LifecycleFacts, Registry, RegistryError,
};
use crate::image::{EcrRegistry, ImageId, RepositoryKey};
use crate::manifest::ACCEPTED_MEDIA_TYPES;

/// How the SDK clients are made.
#[derive(Debug, Clone)]
pub struct EcrSettings {
    /// Endpoint override (emulator, VPC endpoint). `AWS_ENDPOINT_URL_ECR` is honoured by the
    /// SDK itself when this is unset.
    pub endpoint_url: Option<String>,
    /// Upper bound for one call, retries included.
    pub operation_timeout: Duration,
    /// Upper bound for establishing a connection.
    pub connect_timeout: Duration,
    /// Attempts per call inside the SDK (1 = none): the engine retries by itself, within
    /// each request's budget.
    pub max_attempts: u32,
}

impl EcrSettings {
    /// For the engine, which retries by itself within each request's budget: calls bounded
    /// by the budget, connections by a third of it, no retries inside the SDK.
    pub fn for_budget(endpoint_url: Option<String>, budget: Duration) -> Self {
        EcrSettings {
            endpoint_url,
            operation_timeout: budget,
            connect_timeout: (budget / 3).max(Duration::from_millis(100)),
            max_attempts: 1,
        }
    }
}

/// The AWS SDK implementation of the registry seam.
pub struct EcrApi {
    base: aws_config::SdkConfig,
    settings: EcrSettings,
    clients: Mutex<Clients>,
    /// Counts evicted clients, once an engine has handed its counter.
    evictions: std::sync::OnceLock<prometheus_client::metrics::counter::Counter>,
    /// `None` when the configuration has no credentials provider at all.
    credentials: Option<Arc<CredentialKeeper>>,
}

impl EcrApi {
    /// Loads the default AWS configuration chain (env, profile, web identity, Pod Identity,
    /// IMDS), with the named profile and region when given. Credentials start resolving at
    /// once, in the background (see [`EcrApi::credentials`]).
    pub async fn from_default_chain(
        settings: EcrSettings,
        profile: Option<&str>,
        region: Option<String>,
    ) -> Self {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(profile) = profile {
            loader = loader.profile_name(profile);
        }
        if let Some(region) = region {
            loader = loader.region(aws_config::Region::new(region));
        }
        EcrApi::new(loader.load().await, settings)
    }

    /// The registry over `base`, whose credentials provider is handed to a keeper that
    /// starts resolving at once (so this needs a tokio runtime). The SDK client of `base`'s
    /// region is built here, once.
    pub fn new(mut base: aws_config::SdkConfig, settings: EcrSettings) -> Self {
        let credentials = base.credentials_provider().map(CredentialKeeper::start);
        if let Some(keeper) = &credentials {
            base = base
                .into_builder()
                .credentials_provider(SharedCredentialsProvider::new(KeptCredentials(
                    keeper.clone(),
                )))
                .build();
        }
        let api = EcrApi {
            base,
            settings,
            clients: Mutex::default(),
            evictions: std::sync::OnceLock::new(),
            credentials,
        };
        if let Some(region) = api.region() {
            api.client(&region, false, false);
        }
        api
    }

    /// The same registry (configuration, credentials keeper) with SDK clients of its own,
    /// hence connection pools of its own: for the controller, whose runtime must not drive
    /// admission's connections (see `watch::start_apart`). The SDK gives each client its own
    /// HTTP client when the configuration names none, as the default chain's does not.
    pub fn apart(&self) -> EcrApi {
        let api = EcrApi {
            base: self.base.clone(),
            settings: self.settings.clone(),
            clients: Mutex::default(),
            evictions: std::sync::OnceLock::new(),
            credentials: self.credentials.clone(),
        };
        if let Some(region) = api.region() {
            api.client(&region, false, false);
        }
        api
    }

    /// The keeper of this registry's credentials: `serve` turns ready once it has them.
    pub fn credentials(&self) -> Option<Arc<CredentialKeeper>> {
        self.credentials.clone()
    }

    /// The region of the loaded AWS configuration, if it names one.
    pub fn region(&self) -> Option<String> {
        self.base.region().map(|r| r.to_string())
    }

    /// The SDK client for `repo`'s registry; an error for a registry that is not ECR's
    /// (the engine sends those elsewhere, so this is a mistake, said as one).
    fn client_of(&self, repo: &RepositoryKey) -> Result<Client, RegistryError> {
        let registry = repo.registry.ecr().ok_or_else(|| RegistryError::Service {
            code: "NotEcr".to_owned(),
            message: format!("{} is not an Amazon ECR registry", repo.registry),
        })?;
        Ok(self.ecr_client(registry))
    }

    fn ecr_client(&self, registry: &EcrRegistry) -> Client {
        self.client(&registry.region, registry.fips, registry.dual_stack)
    }

    /// The SDK client for a region and endpoint flavour, made on first use and kept while it
    /// is among the [`MAX_CLIENTS`] used last.
    fn client(&self, region: &str, fips: bool, dual_stack: bool) -> Client {
        let key = (region.to_owned(), fips, dual_stack);
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(client) = clients.get(&key) {
            return client;
        }
        let client = self.build_client(region, fips, dual_stack);
        if clients.insert(key, client.clone()) {
            if let Some(counter) = self.evictions.get() {
                counter.inc();
            }
        }
        client
    }

    /// SDK clients made so far and evicted since start (least recently used first).
    pub fn clients(&self) -> (usize, u64) {
        let clients = self
            .clients
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        (clients.map.len(), clients.evicted)
    }

    fn build_client(&self, region: &str, fips: bool, dual_stack: bool) -> Client {
        let mut builder = aws_sdk_ecr::config::Builder::from(&self.base);
        if !region.is_empty() {
            builder = builder.region(Region::new(region.to_owned()));
        }
        if self.credentials.is_some() {
            // The keeper answers from memory and refreshes ahead of expiry itself.
            builder = builder.identity_cache(IdentityCache::no_cache());
        }
        builder = builder
            .use_fips(fips)
            .use_dual_stack(dual_stack)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(self.settings.connect_timeout)
                    .operation_timeout(self.settings.operation_timeout)
                    .build(),
            )
            .retry_config(
                RetryConfig::standard().with_max_attempts(self.settings.max_attempts.max(1)),
            );
        if let Some(url) = &self.settings.endpoint_url {
            builder = builder.endpoint_url(url);
        }
        Client::from_conf(builder.build())
    }
}

/// SDK clients kept at most. Images name a region each (only known ones pass the reference
/// check), and a cluster pulls from a handful: beyond this the least recently used goes.
pub const MAX_CLIENTS: usize = 16;

/// The SDK clients by (region, FIPS, dual-stack), each with when it was last used.
#[derive(Default)]
struct Clients {
    map: HashMap<(String, bool, bool), (Client, u64)>,
    tick: u64,
    evicted: u64,
}

impl Clients {
    fn get(&mut self, key: &(String, bool, bool)) -> Option<Client> {
        self.tick += 1;
        let tick = self.tick;
        self.map.get_mut(key).map(|(client, used)| {
            *used = tick;
            client.clone()
        })
    }

    /// Keeps `client`; true when another was evicted for it.
    fn insert(&mut self, key: (String, bool, bool), client: Client) -> bool {
        let mut evicted = false;
        if self.map.len() >= MAX_CLIENTS {
            let oldest = self
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.map.remove(&oldest);
                self.evicted += 1;
                evicted = true;
            }
        }
        self.tick += 1;
        self.map.insert(key, (client, self.tick));
        evicted
    }
}

/// Registry API credentials from GetAuthorizationToken: user, password, and when they
/// expire (Unix seconds).
#[derive(Clone)]
pub struct RegistryLogin {
    pub user: String,
    pub password: String,
    pub expires_at: Option<i64>,
}

impl std::fmt::Debug for RegistryLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("RegistryLogin")
            .field("user", &self.user)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl EcrApi {
    /// Basic credentials for the registry API of `registry` (GetAuthorizationToken).
    pub async fn login(&self, registry: &EcrRegistry) -> Result<RegistryLogin, RegistryError> {
        let repo = RepositoryKey::new(registry.clone(), String::new());
        let out = self
            .ecr_client(registry)
            .get_authorization_token()
            .send()
            .await
            .map_err(self.failed(&repo, "ecr:GetAuthorizationToken"))?;
        let malformed = |why: &str| RegistryError::Service {
            code: "MalformedAuthorizationToken".to_owned(),
            message: why.to_owned(),
        };
        let data = out
            .authorization_data()
            .first()
            .ok_or_else(|| malformed("GetAuthorizationToken answered no authorization data"))?;
        let token = data
            .authorization_token()
            .ok_or_else(|| malformed("no authorization token"))?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(token)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| malformed("the authorization token is not base64 text"))?;
        let (user, password) = decoded
            .split_once(':')
            .ok_or_else(|| malformed("the authorization token is not user:password"))?;
        Ok(RegistryLogin {
            user: user.to_owned(),
            password: password.to_owned(),
            expires_at: data.expires_at().map(|t| t.secs()),
        })
    }
}

impl Registry for EcrApi {
    fn count_client_evictions(&self, evicted: prometheus_client::metrics::counter::Counter) {
        let _ = self.evictions.set(evicted);
    }

    fn lifecycle(&self) -> Option<&dyn LifecycleFacts> {
        Some(self)
    }

    fn pull_through_rules<'a>(
        &'a self,
        registry: &'a EcrRegistry,
    ) -> BoxFuture<'a, Result<Vec<super::PullThroughRule>, RegistryError>> {
        self.describe_pull_through_rules(registry).boxed()
    }

    fn batch_get_image<'a>(
        &'a self,
        repo: &'a RepositoryKey,
        ids: &'a [ImageId],
    ) -> BoxFuture<'a, Result<BatchGetImageOutput, RegistryError>> {
        async move {
            let image_ids = ids.iter().map(identifier).collect();
            let out = self
                .client_of(repo)?
                .batch_get_image()
                .set_registry_id(registry_id(repo))
                .repository_name(&repo.repository)
                .set_image_ids(Some(image_ids))
                .set_accepted_media_types(Some(
                    ACCEPTED_MEDIA_TYPES.iter().map(|s| s.to_string()).collect(),
                ))
                .send()
                .await
                .map_err(self.failed(repo, "ecr:BatchGetImage"))?;
            let images = out
                .images()
                .iter()
                .filter_map(|image| {
                    let id = image.image_id();
                    Some(FetchedManifest {
                        tag: id.and_then(|i| i.image_tag()).map(str::to_owned),
                        digest: id.and_then(|i| i.image_digest()).map(str::to_owned),
                        media_type: image.image_manifest_media_type().map(str::to_owned),
                        manifest: image.image_manifest()?.to_owned(),
                    })
                })
                .collect();
            let failures = out
                .failures()
                .iter()
                .map(|f| {
                    let id = f.image_id();
                    ImageFailure {
                        tag: id.and_then(|i| i.image_tag()).map(str::to_owned),
                        digest: id.and_then(|i| i.image_digest()).map(str::to_owned),
                        code: f
                            .failure_code()
                            .map_or("Unknown", |c| c.as_str())
                            .to_owned(),
                        reason: f.failure_reason().unwrap_or_default().to_owned(),
                    }
                })
                .collect();
            Ok(BatchGetImageOutput { images, failures })
        }
        .boxed()
    }

    fn batch_check_layer_availability<'a>(
        &'a self,
        repo: &'a RepositoryKey,
        digests: &'a [String],
    ) -> BoxFuture<'a, Result<LayerAvailabilityOutput, RegistryError>> {
        async move {
            let out = self
                .client_of(repo)?
                .batch_check_layer_availability()
                .set_registry_id(registry_id(repo))
                .repository_name(&repo.repository)
                .set_layer_digests(Some(digests.to_vec()))
                .send()
                .await
                .map_err(self.failed(repo, "ecr:BatchCheckLayerAvailability"))?;
            let layers = out
                .layers()
                .iter()
                .filter_map(|layer| {
                    Some(LayerDetail {
                        layer_digest: layer.layer_digest()?.to_owned(),
                        layer_availability: layer
                            .layer_availability()
                            .map_or("UNKNOWN", |a| a.as_str())
                            .to_owned(),
                        layer_size: layer.layer_size(),
                        media_type: layer.media_type().map(str::to_owned),
                    })
                })
                .collect();
            let failures = out
                .failures()
                .iter()
                .filter_map(|failure| {
                    Some(LayerFailure {
                        layer_digest: failure.layer_digest()?.to_owned(),
                        failure_code: failure
                            .failure_code()
                            .map_or("Unknown", |c| c.as_str())
                            .to_owned(),
                        failure_reason: failure.failure_reason().unwrap_or_default().to_owned(),
                    })
                })
                .collect();
            Ok(LayerAvailabilityOutput::from_answer(layers, failures))
        }
        .boxed()
    }
}

/// The registry id to send: none when the account is not known (the caller's own).
fn identifier(id: &ImageId) -> ImageIdentifier {
    match id {
        ImageId::Tag(t) => ImageIdentifier::builder().image_tag(t).build(),
        ImageId::Digest(d) => ImageIdentifier::builder().image_digest(d).build(),
    }
}

fn registry_id(repo: &RepositoryKey) -> Option<String> {
    repo.registry
        .ecr()
        .and_then(EcrRegistry::registry_id)
        .map(str::to_owned)
}

/// Types an SDK error by its service code or failure kind. A call that never reached ECR
/// while the keeper has no valid credentials failed for that reason: said so, rather than
/// "request could not be sent".
impl EcrApi {
    /// The typed error of a failed call of `operation` on `repo`.
    fn failed<'a, E>(
        &'a self,
        repo: &'a RepositoryKey,
        operation: &'static str,
    ) -> impl FnOnce(SdkError<E, HttpResponse>) -> RegistryError + 'a
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        move |e| map_error(e, repo, operation, self.credentials.as_deref())
    }
}

fn map_error<E>(
    err: SdkError<E, HttpResponse>,
    repo: &RepositoryKey,
    operation: &'static str,
    credentials: Option<&CredentialKeeper>,
) -> RegistryError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let reached_ecr = matches!(
        err,
        SdkError::ServiceError(_) | SdkError::ResponseError(_) | SdkError::TimeoutError(_)
    );
    if !reached_ecr {
        if let Some(problem) = credentials.and_then(CredentialKeeper::problem) {
            return RegistryError::Credentials(problem);
        }
    }
    match &err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            let Some(code) = e.code() else {
                // No error code: the body was not an ECR answer (cut short, not JSON).
                return RegistryError::Service {
                    code: "MalformedResponse".to_owned(),
                    message: format!(
                        "ECR's answer could not be read (HTTP {})",
                        service.raw().status().as_u16()
                    ),
                };
            };
            let status = service.raw().status().as_u16();
            of_ecr_code(
                code,
                status,
                e.message().unwrap_or_default(),
                repo,
                operation,
            )
        }
        SdkError::TimeoutError(_) => RegistryError::Timeout,
        SdkError::DispatchFailure(d) if d.is_timeout() => RegistryError::Timeout,
        SdkError::DispatchFailure(d) => RegistryError::Transport(if d.is_io() {
            "connection failed".to_owned()
        } else {
            "request could not be sent".to_owned()
        }),
        SdkError::ResponseError(r) => match r.raw().status().as_u16() {
            status @ 500.. => RegistryError::Server(format!("HTTP {status}")),
            _ => RegistryError::Service {
                code: "MalformedResponse".to_owned(),
                message: "ECR answered with a response that could not be read".to_owned(),
            },
        },
        _ => RegistryError::Service {
            code: "Unknown".to_owned(),
            message: err.to_string().chars().take(200).collect(),
        },
    }
}

/// The typed error of an answer of HTTP `status` with ECR error `code`, for a call of
/// `operation` on `repo`.
fn of_ecr_code(
    code: &str,
    status: u16,
    message: &str,
    repo: &RepositoryKey,
    operation: &'static str,
) -> RegistryError {
    match code {
        "RepositoryNotFoundException" => RegistryError::RepositoryNotFound {
            registry: repo.registry.to_string(),
            repository: repo.repository.clone(),
        },
        "AccessDeniedException"
        | "AccessDenied"
        | "UnrecognizedClientException"
        | "ExpiredTokenException" => RegistryError::AccessDenied { operation },
        "ThrottlingException" | "TooManyRequestsException" | "LimitExceededException" => {
            RegistryError::Throttled(code.to_owned())
        }
        _ if status == 429 => RegistryError::Throttled(format!("HTTP 429 {code}")),
        _ if status >= 500 => RegistryError::Server(format!("HTTP {status} {code}")),
        _ => RegistryError::Service {
            code: code.to_owned(),
            message: message.chars().take(200).collect(),
        },
    }
}
