//! [`Registry`] over the OCI Distribution API, for the registries that are not ECR's:
//! Docker Hub, GHCR, Quay, public ECR, registry.k8s.io, a private Harbor or Artifactory.
//!
//! What it asks (docs/registries.md):
//! - a tag: `HEAD /v2/<name>/manifests/<tag>`, whose `Docker-Content-Digest` names the
//!   manifest. Docker Hub counts a manifest GET as a pull and a HEAD not;
//! - a manifest this process does not hold yet: `GET /v2/<name>/manifests/<digest>`.
//!   Manifests are kept by digest (content-addressed, never stale), so a tag that did not
//!   move costs one HEAD;
//! - each blob: `HEAD /v2/<name>/blobs/<digest>`. No batch call exists: a few at a time per
//!   registry ([`IN_FLIGHT_PER_HOST`]).
//!
//! Authentication as a kubelet pulls, anonymous first: a `401` with a Bearer challenge gets a
//! token for `repository:<name>:pull` from the challenge's realm (`oci-client`'s token
//! flow), with the registry's credentials when this process has some; a Basic challenge is
//! answered with them. A registry that wants credentials this process does not have is
//! [`RegistryError::NeedsCredentials`], never a denial. No credential or token is logged.
//!
//! A `429` pauses every request to its host for the `Retry-After` it gives (else
//! [`DEFAULT_PAUSE`]); the engine's budget bounds the wait.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use futures::future::BoxFuture;
use futures::FutureExt;
use oci_client::client::ClientProtocol;
use oci_client::secrets::RegistryAuth;
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, Response, StatusCode};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::oci::{config_too_large, platform_of, verify, MAX_CONFIG_BYTES};
use super::{
    BatchGetImageOutput, BlobState, ConfigPlatforms, FetchedManifest, ImageFailure,
    LayerAvailabilityOutput, Registry, RegistryError,
};
use crate::image::{ImageId, RegistryName, RepositoryKey};
use crate::manifest::{Platform, ACCEPTED_MEDIA_TYPES};
pub use crate::pull_secrets::Login;
use crate::pull_secrets::PullLogin;
use crate::ttl_map::TtlMap;

/// Requests in flight to one registry at most (blob HEADs above all).
pub const IN_FLIGHT_PER_HOST: usize = 8;
/// How long a `429` without `Retry-After` pauses its host.
pub const DEFAULT_PAUSE: Duration = Duration::from_secs(10);
/// The longest `Retry-After` honoured as given.
const MAX_PAUSE: Duration = Duration::from_secs(300);
/// Manifests are a few kilobytes; a bigger answer is refused unread past this.
const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;
/// Manifests kept by digest.
const MANIFESTS_KEPT: u64 = 10_000;
/// Tokens are kept this long when the registry does not say (Docker Hub's last 5 minutes).
const TOKEN_KEPT: Duration = Duration::from_secs(240);
/// Hosts and (host, repository, credentials) scopes kept at most: images name them.
const HOSTS_KEPT: usize = 256;
const SCOPES_KEPT: usize = 4_096;
/// Docker Hub's registry API, for the `docker.io` that references name.
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// How registries are reached.
#[derive(Debug, Clone, Default)]
pub struct DistributionSettings {
    /// Upper bound for one request.
    pub timeout: Duration,
    /// PEM certificates to trust beyond the system's (a private registry's CA).
    pub extra_roots: Vec<Vec<u8>>,
    /// Where a registry's API is reached instead of `https://<host>`, by host as references
    /// name it (a mirror; tests). `docker.io` is reached at `registry-1.docker.io`.
    pub endpoints: HashMap<String, String>,
    /// Credentials by host as references name it.
    pub logins: HashMap<String, Login>,
}

/// What a token is good for: a repository of a host, got with some credentials or none.
type Scope = (String, String, Option<PullLogin>);

/// What a request to a repository carries beyond anonymous.
#[derive(Clone)]
enum Auth {
    Bearer(String),
    Basic(Login),
}

pub struct Distribution {
    http: reqwest::Client,
    tokens: oci_client::Client,
    settings: DistributionSettings,
    /// Per (host, repository, credentials): what to send, until when.
    auth: Mutex<HashMap<Scope, (Auth, Instant)>>,
    manifests: TtlMap<Box<str>, Arc<FetchedManifest>>,
    hosts: Mutex<HashMap<String, Host>>,
}

/// One registry's share: requests in flight, and the pause a `429` asked for.
#[derive(Clone)]
struct Host {
    slots: Arc<Semaphore>,
    paused_until: Option<Instant>,
}

impl Distribution {
    pub fn new(settings: DistributionSettings) -> Result<Self, RegistryError> {
        let roots: Vec<reqwest::Certificate> = settings
            .extra_roots
            .iter()
            .filter_map(|pem| reqwest::Certificate::from_pem(pem).ok())
            .collect();
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .tls_certs_merge(roots)
            .build()
            .map_err(|e| RegistryError::Transport(format!("cannot build the HTTP client: {e}")))?;
        // The token flow asks a registry's `/v2/` for its challenge: over plain HTTP for an
        // endpoint given as http:// (a mirror inside the cluster; tests), HTTPS otherwise.
        let plain: Vec<String> = settings
            .endpoints
            .values()
            .filter_map(|url| url.strip_prefix("http://"))
            .map(|authority| authority.trim_end_matches('/').to_owned())
            .collect();
        let tokens = super::oci::oci_client(
            ClientProtocol::HttpsExcept(plain),
            &settings.extra_roots,
            settings.timeout,
        )?;
        Ok(Distribution {
            http,
            tokens,
            settings,
            auth: Mutex::default(),
            manifests: TtlMap::new(MANIFESTS_KEPT, Duration::from_secs(7 * 86_400)),
            hosts: Mutex::default(),
        })
    }

    /// The API's scheme and authority for `host` as references name it.
    fn base(&self, host: &str) -> String {
        if let Some(url) = self.settings.endpoints.get(host) {
            return url.trim_end_matches('/').to_owned();
        }
        let api = if host == crate::image::DEFAULT_REGISTRY {
            DOCKER_HUB_API
        } else {
            host
        };
        format!("https://{api}")
    }

    fn host(&self, host: &str) -> Host {
        let mut hosts = lock(&self.hosts);
        if !hosts.contains_key(host) && hosts.len() >= HOSTS_KEPT {
            // Hosts come from images: forget those with nothing in flight.
            hosts.retain(|_, h| h.slots.available_permits() < IN_FLIGHT_PER_HOST);
        }
        hosts
            .entry(host.to_owned())
            .or_insert_with(|| Host {
                slots: Arc::new(Semaphore::new(IN_FLIGHT_PER_HOST)),
                paused_until: None,
            })
            .clone()
    }

    fn pause(&self, host: &str, headers: &HeaderMap) {
        let pause = headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(DEFAULT_PAUSE, Duration::from_secs)
            .min(MAX_PAUSE);
        if let Some(h) = lock(&self.hosts).get_mut(host) {
            h.paused_until = Some(Instant::now() + pause);
        }
        tracing::info!(registry = host, pause = ?pause, "registry asks to slow down (HTTP 429)");
    }

    /// Sends one request for `repo`, authenticating once on a `401`.
    async fn send(
        &self,
        repo: &RepositoryKey,
        method: Method,
        path: &str,
        accept: Option<&str>,
    ) -> Result<Response, RegistryError> {
        let host = host_of(repo)?;
        let share = self.host(host);
        let _slot = share
            .slots
            .acquire()
            .await
            .map_err(|_| RegistryError::Transport("shutting down".into()))?;
        if let Some(until) = share.paused_until {
            tokio::time::sleep_until(until).await;
        }
        let url = format!("{}/v2/{}/{path}", self.base(host), repo.repository);
        let scope = (host.to_owned(), repo.repository.clone(), repo.login.clone());
        let known = self.known_auth(&scope);
        let response = self.request(&method, &url, accept, known.as_ref()).await?;
        let response = if response.status() == StatusCode::UNAUTHORIZED {
            let auth = self.authenticate(host, repo, response.headers()).await?;
            let again = self.request(&method, &url, accept, Some(&auth)).await?;
            if again.status() != StatusCode::UNAUTHORIZED {
                self.keep_auth(scope, auth);
            }
            again
        } else {
            response
        };
        match response.status() {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(self.refused(host, repo)),
            StatusCode::TOO_MANY_REQUESTS => {
                self.pause(host, response.headers());
                Err(RegistryError::Throttled(format!("{host}: HTTP 429")))
            }
            s if s.is_server_error() => Err(RegistryError::Server(format!("{host}: HTTP {s}"))),
            _ => Ok(response),
        }
    }

    async fn request(
        &self,
        method: &Method,
        url: &str,
        accept: Option<&str>,
        auth: Option<&Auth>,
    ) -> Result<Response, RegistryError> {
        let mut request = self.http.request(method.clone(), url);
        if let Some(accept) = accept {
            request = request.header(ACCEPT, accept);
        }
        request = match auth {
            Some(Auth::Bearer(token)) => request.header(AUTHORIZATION, format!("Bearer {token}")),
            Some(Auth::Basic(login)) => request.basic_auth(&login.user, Some(&login.password)),
            None => request,
        };
        request.send().await.map_err(|e| {
            if e.is_timeout() {
                RegistryError::Timeout
            } else {
                RegistryError::Transport(if e.is_connect() {
                    "connection failed".to_owned()
                } else {
                    "request could not be sent".to_owned()
                })
            }
        })
    }

    /// Why a registry refused: credentials it wants and this process lacks, or ones it
    /// turned down.
    fn refused(&self, host: &str, repo: &RepositoryKey) -> RegistryError {
        if self.login(host, repo).is_some() {
            RegistryError::AccessDenied {
                operation: "pull (the registry refused the credentials given)",
            }
        } else {
            RegistryError::NeedsCredentials {
                registry: host.to_owned(),
            }
        }
    }

    /// The credentials a request for `repo` carries: its pod's pull secret's, else this
    /// process's for the host.
    fn login<'s>(&'s self, host: &str, repo: &'s RepositoryKey) -> Option<&'s Login> {
        match &repo.login {
            Some(pulled) => Some(pulled.login()),
            None => self.settings.logins.get(host),
        }
    }

    fn known_auth(&self, scope: &Scope) -> Option<Auth> {
        let auth = lock(&self.auth);
        auth.get(scope)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(auth, _)| auth.clone())
    }

    fn keep_auth(&self, scope: Scope, auth: Auth) {
        let mut kept = lock(&self.auth);
        if kept.len() >= SCOPES_KEPT {
            let now = Instant::now();
            kept.retain(|_, (_, until)| *until > now);
            if kept.len() >= SCOPES_KEPT {
                kept.clear();
            }
        }
        kept.insert(scope, (auth, Instant::now() + TOKEN_KEPT));
    }

    /// Answers the registry's challenge: a Bearer token from its realm (anonymous, or with
    /// this host's credentials), or Basic with them.
    async fn authenticate(
        &self,
        host: &str,
        repo: &RepositoryKey,
        headers: &HeaderMap,
    ) -> Result<Auth, RegistryError> {
        let challenge = headers
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let login = self.login(host, repo);
        if challenge
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("basic")
        {
            return login
                .map(|l| Auth::Basic(l.clone()))
                .ok_or_else(|| self.refused(host, repo));
        }
        let credentials = match login {
            Some(l) => RegistryAuth::Basic(l.user.clone(), l.password.clone()),
            None => RegistryAuth::Anonymous,
        };
        let api = self.base(host);
        let authority = api.split_once("://").map_or(api.as_str(), |(_, a)| a);
        let reference = oci_client::Reference::with_tag(
            authority.to_owned(),
            repo.repository.clone(),
            "latest".to_owned(),
        );
        match self
            .tokens
            .auth(
                &reference,
                &credentials,
                oci_client::RegistryOperation::Pull,
            )
            .await
        {
            Ok(Some(token)) => Ok(Auth::Bearer(token)),
            Ok(None) | Err(oci_client::errors::OciDistributionError::AuthenticationFailure(_)) => {
                Err(self.refused(host, repo))
            }
            Err(e) => Err(token_failure(host, &e)),
        }
    }

    /// The manifest a tag or digest names, read by digest unless held.
    async fn manifest(
        &self,
        repo: &RepositoryKey,
        id: &ImageId,
    ) -> Result<Result<FetchedManifest, ImageFailure>, RegistryError> {
        let (tag, digest) = match id {
            ImageId::Digest(d) => (None, d.clone()),
            ImageId::Tag(t) => {
                let head = self
                    .send(
                        repo,
                        Method::HEAD,
                        &format!("manifests/{t}"),
                        Some(&accept()),
                    )
                    .await?;
                if head.status() == StatusCode::NOT_FOUND {
                    return Ok(Err(not_found(Some(t), None)));
                }
                let digest = head
                    .headers()
                    .get("docker-content-digest")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                match digest {
                    Some(d) => (Some(t.clone()), d),
                    // A registry that does not say the digest: the manifest is read by tag.
                    None => return self.fetch(repo, Some(t), t).await,
                }
            }
        };
        let key = format!("{}/{}@{digest}", repo.registry, repo.repository);
        if let Some(held) = self.manifests.get(key.as_str()) {
            return Ok(Ok(FetchedManifest {
                tag,
                ..(*held).clone()
            }));
        }
        let fetched = self.fetch(repo, tag.as_ref(), &digest).await?;
        if let Ok(m) = &fetched {
            if m.digest.as_deref() == Some(digest.as_str()) {
                self.manifests.insert(
                    key.into_boxed_str(),
                    Arc::new(FetchedManifest {
                        tag: None,
                        ..m.clone()
                    }),
                );
            }
        }
        Ok(fetched)
    }

    /// `GET /v2/<name>/manifests/<reference>`, the body bounded and checked against the
    /// digest it was asked by.
    async fn fetch(
        &self,
        repo: &RepositoryKey,
        tag: Option<&String>,
        reference: &str,
    ) -> Result<Result<FetchedManifest, ImageFailure>, RegistryError> {
        let response = self
            .send(
                repo,
                Method::GET,
                &format!("manifests/{reference}"),
                Some(&accept()),
            )
            .await?;
        let status = response.status();
        let media_type = header(response.headers(), CONTENT_TYPE.as_str());
        let body = bounded_body(response).await?;
        if status == StatusCode::NOT_FOUND {
            if body.contains("NAME_UNKNOWN") {
                return Err(RegistryError::RepositoryNotFound {
                    registry: repo.registry.to_string(),
                    repository: repo.repository.clone(),
                });
            }
            let digest = reference
                .starts_with("sha256:")
                .then(|| reference.to_owned());
            return Ok(Err(not_found(tag, digest.as_ref())));
        }
        if !status.is_success() {
            // Never the body: a pod may name any host as its registry, and an answer
            // repeated in a warning would let it read what that host serves. Only the
            // distribution error code, when the answer has one.
            return Err(RegistryError::Service {
                code: format!("HTTP {}", status.as_u16()),
                message: error_code(&body).map_or_else(
                    || "the registry refused the manifest".to_owned(),
                    |code| format!("the registry answered {code}"),
                ),
            });
        }
        let digest = crate::manifest::sha256_digest(body.as_bytes());
        if reference.starts_with("sha256:") && digest != reference {
            return Err(RegistryError::Service {
                code: "DigestMismatch".into(),
                message: format!("the manifest served for {reference} has digest {digest}"),
            });
        }
        Ok(Ok(FetchedManifest {
            tag: tag.cloned(),
            digest: Some(digest),
            media_type,
            manifest: body,
        }))
    }

    /// A config blob's content (`GET /v2/<name>/blobs/<digest>`, the redirect to the blob
    /// store followed), bounded and checked against its digest.
    async fn config(&self, repo: &RepositoryKey, digest: &str) -> Result<Vec<u8>, RegistryError> {
        let response = self
            .send(repo, Method::GET, &format!("blobs/{digest}"), None)
            .await?;
        if !response.status().is_success() {
            return Err(RegistryError::Service {
                code: format!("HTTP {}", response.status().as_u16()),
                message: format!("config blob {digest} could not be read"),
            });
        }
        let body = read_bounded(response, MAX_CONFIG_BYTES, || config_too_large(digest)).await?;
        verify(digest, &body)?;
        Ok(body)
    }

    async fn blob(&self, repo: &RepositoryKey, digest: &str) -> Result<BlobState, RegistryError> {
        let response = self
            .send(repo, Method::HEAD, &format!("blobs/{digest}"), None)
            .await?;
        Ok(match response.status() {
            s if s.is_success() => BlobState::Available,
            StatusCode::NOT_FOUND => BlobState::Missing,
            _ => BlobState::Invalid,
        })
    }
}

impl Registry for Distribution {
    fn batch_get_image<'a>(
        &'a self,
        repo: &'a RepositoryKey,
        ids: &'a [ImageId],
    ) -> BoxFuture<'a, Result<BatchGetImageOutput, RegistryError>> {
        async move {
            // At most IN_FLIGHT_PER_HOST of them at a time: each request takes a slot of its
            // host.
            let answers = join_all(ids.iter().map(|id| self.manifest(repo, id))).await;
            let mut out = BatchGetImageOutput::default();
            for answer in answers {
                match answer? {
                    Ok(manifest) => out.images.push(manifest),
                    Err(failure) => out.failures.push(failure),
                }
            }
            Ok(out)
        }
        .boxed()
    }

    fn batch_check_layer_availability<'a>(
        &'a self,
        repo: &'a RepositoryKey,
        digests: &'a [String],
    ) -> BoxFuture<'a, Result<LayerAvailabilityOutput, RegistryError>> {
        async move {
            let answers = join_all(digests.iter().map(|d| self.blob(repo, d))).await;
            let mut blobs = Vec::with_capacity(answers.len());
            for (digest, state) in digests.iter().zip(answers) {
                blobs.push((digest.clone(), state?));
            }
            Ok(LayerAvailabilityOutput {
                blobs,
                ..LayerAvailabilityOutput::default()
            })
        }
        .boxed()
    }
}

impl ConfigPlatforms for Distribution {
    fn config_platform<'a>(
        &'a self,
        _host: &'a str,
        repo: &'a RepositoryKey,
        digest: &'a str,
    ) -> BoxFuture<'a, Result<Platform, RegistryError>> {
        async move { platform_of(&self.config(repo, digest).await?) }.boxed()
    }
}

fn host_of(repo: &RepositoryKey) -> Result<&str, RegistryError> {
    match &repo.registry {
        RegistryName::Distribution(host) => Ok(host),
        RegistryName::Ecr(_) => Err(RegistryError::Service {
            code: "NotDistribution".to_owned(),
            message: format!(
                "{} is an Amazon ECR registry, asked through ECR's API",
                repo.registry
            ),
        }),
    }
}

fn accept() -> String {
    ACCEPTED_MEDIA_TYPES.join(", ")
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned())
}

fn not_found(tag: Option<&String>, digest: Option<&String>) -> ImageFailure {
    ImageFailure {
        tag: tag.cloned(),
        digest: digest.cloned(),
        code: "ImageNotFound".to_owned(),
        reason: "the registry has no such manifest".to_owned(),
    }
}

/// A manifest's body: at most [`MAX_MANIFEST_BYTES`], UTF-8.
async fn bounded_body(response: Response) -> Result<String, RegistryError> {
    let body = read_bounded(response, MAX_MANIFEST_BYTES, || RegistryError::Service {
        code: "ManifestTooLarge".into(),
        message: format!("a manifest over {MAX_MANIFEST_BYTES} bytes"),
    })
    .await?;
    String::from_utf8(body).map_err(|_| RegistryError::Service {
        code: "MalformedResponse".into(),
        message: "the manifest is not UTF-8".into(),
    })
}

/// The body of `response`, refused with `too_large()` once past `limit` bytes (unread beyond).
async fn read_bounded(
    mut response: Response,
    limit: usize,
    too_large: impl FnOnce() -> RegistryError,
) -> Result<Vec<u8>, RegistryError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|_| RegistryError::Transport("the answer was cut short".into()))?
    {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Why the token service gave no token, in words of this crate's: never its answer's body
/// (the challenge names the service, so a registry may point it anywhere).
fn token_failure(host: &str, e: &oci_client::errors::OciDistributionError) -> RegistryError {
    use oci_client::errors::OciDistributionError as E;
    let why = match e {
        E::RequestError(r) if r.is_timeout() => return RegistryError::Timeout,
        E::RequestError(_) => "could not be reached".to_owned(),
        E::ServerError { code, .. } => format!("answered HTTP {code}"),
        E::RegistryTokenDecodeError(_) => "answered with something that is not a token".to_owned(),
        _ => "gave no token".to_owned(),
    };
    RegistryError::Transport(format!("the token service of {host} {why}"))
}

/// The first error code of a distribution error answer (`{"errors":[{"code":"DENIED"}]}`),
/// when it is one: upper-case letters and underscores only.
fn error_code(body: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        code: String,
    }
    let answer: Answer = serde_json::from_str(body).ok()?;
    let code = answer.errors.into_iter().next()?.code;
    (!code.is_empty()
        && code.len() <= 40
        && code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'))
    .then_some(code)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
