//! [`ConfigPlatforms`] over the OCI Distribution API, with the maintained `oci-client`
//! crate: `GET /v2/<repository>/blobs/<digest>` on the image's registry (or on
//! `--ecr-registry-url`), authenticated with the Basic credentials of ECR's
//! GetAuthorizationToken (kept until five minutes before they expire), the redirect to the
//! blob store followed, the body bounded and checked against its digest.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use super::ecr::{EcrApi, RegistryLogin};
use super::{ConfigPlatforms, RegistryError};
use crate::image::{EcrRegistry, RepositoryKey};
use crate::manifest::Platform;

/// Config blobs are a few kilobytes; a bigger answer is refused unread past this.
pub(super) const MAX_CONFIG_BYTES: usize = 1024 * 1024;
/// Credentials are renewed this long before they expire.
const RENEW_BEFORE: i64 = 300;
/// Without an expiry, credentials are kept this long (ECR's last 12 hours).
const KEEP_WITHOUT_EXPIRY: i64 = 3600;
/// Credentials that come already expired (a skewed clock) are kept this long.
const EXPIRED_KEPT: i64 = 60;

/// Where the registry API is reached.
#[derive(Debug, Clone, Default)]
pub struct RegistryEndpoint {
    /// `--ecr-registry-url`: every ECR registry's API at this URL (tests, VPC endpoints);
    /// `None`: at the image's own host, over HTTPS.
    pub url: Option<String>,
    /// PEM certificates to trust beyond the system's (a private CA).
    pub extra_roots: Vec<Vec<u8>>,
    pub timeout: Duration,
}

/// Registries (account and region) whose login and client are kept at most.
const MAX_LOGINS: usize = 32;

pub struct OciBlobs {
    ecr: Arc<EcrApi>,
    endpoint: RegistryEndpoint,
    /// One client per registry and login: a new login starts a new client, so that no
    /// stale credentials stay in the client's own store.
    clients: Mutex<HashMap<EcrRegistry, (Arc<Client>, i64)>>,
}

impl OciBlobs {
    pub fn new(ecr: Arc<EcrApi>, endpoint: RegistryEndpoint) -> Self {
        OciBlobs {
            ecr,
            endpoint,
            clients: Mutex::default(),
        }
    }

    /// The host and protocol the registry API of `host` is reached at.
    fn target(&self, host: &str) -> (String, ClientProtocol) {
        match self.endpoint.url.as_deref() {
            Some(url) => match url.split_once("://") {
                Some(("http", rest)) => {
                    (rest.trim_end_matches('/').to_owned(), ClientProtocol::Http)
                }
                Some((_, rest)) => (rest.trim_end_matches('/').to_owned(), ClientProtocol::Https),
                None => (url.trim_end_matches('/').to_owned(), ClientProtocol::Https),
            },
            None => (host.to_owned(), ClientProtocol::Https),
        }
    }

    /// The client holding valid credentials for `registry` at `target`.
    async fn client(
        &self,
        registry: &EcrRegistry,
        target: &str,
        protocol: ClientProtocol,
    ) -> Result<Arc<Client>, RegistryError> {
        // Unix seconds, as the login's expiry is given.
        let now = jiff::Timestamp::now().as_second();
        if let Some((client, until)) = self.lock().get(registry) {
            if *until > now {
                return Ok(client.clone());
            }
        }
        let login = self.ecr.login(registry).await?;
        let client = Arc::new(self.new_client(protocol)?);
        let RegistryLogin {
            user,
            password,
            expires_at,
        } = login;
        client
            .store_auth_if_needed(target, &RegistryAuth::Basic(user, password))
            .await;
        let until = match expires_at {
            Some(e) if e - RENEW_BEFORE > now => e - RENEW_BEFORE,
            // Already (nearly) expired as given: used briefly, then asked for again.
            Some(_) => now + EXPIRED_KEPT,
            None => now + KEEP_WITHOUT_EXPIRY,
        };
        let mut clients = self.lock();
        if clients.len() >= MAX_LOGINS {
            // Registries are named by images: keep the map bounded, the expired and then
            // the soonest to expire going first.
            clients.retain(|_, (_, until)| *until > now);
            if clients.len() >= MAX_LOGINS {
                let soonest = clients
                    .iter()
                    .min_by_key(|(_, (_, until))| *until)
                    .map(|(r, _)| r.clone());
                if let Some(soonest) = soonest {
                    clients.remove(&soonest);
                }
            }
        }
        clients.insert(registry.clone(), (client.clone(), until));
        Ok(client)
    }

    fn new_client(&self, protocol: ClientProtocol) -> Result<Client, RegistryError> {
        oci_client(protocol, &self.endpoint.extra_roots, self.endpoint.timeout)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<EcrRegistry, (Arc<Client>, i64)>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn fetch(
        &self,
        host: &str,
        repo: &RepositoryKey,
        digest: &str,
    ) -> Result<Vec<u8>, RegistryError> {
        let (target, protocol) = self.target(host);
        let registry = repo.registry.ecr().ok_or_else(|| RegistryError::Service {
            code: "NotEcr".to_owned(),
            message: format!("{} is not an Amazon ECR registry", repo.registry),
        })?;
        let client = self.client(registry, &target, protocol).await?;
        let reference = Reference::with_digest(target, repo.repository.clone(), digest.to_owned());
        let descriptor = OciDescriptor {
            digest: digest.to_owned(),
            ..OciDescriptor::default()
        };
        let mut stream = client
            .pull_blob_stream(&reference, &descriptor)
            .await
            .map_err(blob_error)?;
        let mut body = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| stream_error(&e.to_string()))?;
            if body.len() + chunk.len() > MAX_CONFIG_BYTES {
                return Err(config_too_large(digest));
            }
            body.extend_from_slice(&chunk);
        }
        verify(digest, &body)?;
        Ok(body)
    }
}

/// A config blob bigger than [`MAX_CONFIG_BYTES`].
pub(super) fn config_too_large(digest: &str) -> RegistryError {
    RegistryError::Service {
        code: "ConfigTooLarge".to_owned(),
        message: format!("config blob {digest} is larger than {MAX_CONFIG_BYTES} bytes"),
    }
}

/// The body is the blob its digest names.
pub(super) fn verify(digest: &str, body: &[u8]) -> Result<(), RegistryError> {
    let actual = crate::manifest::sha256_digest(body);
    if digest.eq_ignore_ascii_case(&actual) {
        return Ok(());
    }
    Err(RegistryError::Service {
        code: "DigestMismatch".to_owned(),
        message: format!(
            "the registry answered for config blob {digest} with content whose digest is {actual}"
        ),
    })
}

fn api_error(code: &str, message: String) -> RegistryError {
    RegistryError::Service {
        code: code.to_owned(),
        message: message.chars().take(300).collect(),
    }
}

/// A failure while the body streams in: the client's own digest checks say so in words.
fn stream_error(message: &str) -> RegistryError {
    if message.to_ascii_lowercase().contains("digest") {
        api_error("DigestMismatch", message.to_owned())
    } else {
        api_error(
            "RegistryUnreachable",
            format!("reading the blob: {message}"),
        )
    }
}

fn blob_error(e: oci_client::errors::OciDistributionError) -> RegistryError {
    use oci_client::errors::OciDistributionError as E;
    match e {
        E::AuthenticationFailure(m) | E::UnauthorizedError { url: m } => api_error(
            "Unauthorized",
            format!("the registry API refused the credentials: {m}"),
        ),
        E::RequestError(e) if e.is_timeout() => api_error(
            "RegistryTimeout",
            "the registry API did not answer in time".to_owned(),
        ),
        E::RequestError(e) => api_error(
            "RegistryUnreachable",
            format!("cannot reach the registry API: {e}"),
        ),
        E::DigestError(e) => api_error("DigestMismatch", e.to_string()),
        other => api_error("RegistryApi", other.to_string()),
    }
}

/// The platform a config blob names.
pub fn platform_of(config: &[u8]) -> Result<Platform, RegistryError> {
    #[derive(serde::Deserialize)]
    struct Config {
        os: Option<String>,
        architecture: Option<String>,
        variant: Option<String>,
    }
    let bad = |why: String| RegistryError::Service {
        code: "MalformedConfig".to_owned(),
        message: why,
    };
    let config: Config =
        serde_json::from_slice(config).map_err(|e| bad(format!("config blob is not JSON: {e}")))?;
    match (config.os, config.architecture) {
        (Some(os), Some(architecture)) if !os.is_empty() && !architecture.is_empty() => {
            Ok(Platform {
                os,
                architecture,
                variant: config.variant.filter(|v| !v.is_empty()),
            })
        }
        _ => Err(bad("config blob names no os and architecture".to_owned())),
    }
}

impl ConfigPlatforms for OciBlobs {
    fn config_platform<'a>(
        &'a self,
        host: &'a str,
        repo: &'a RepositoryKey,
        digest: &'a str,
    ) -> BoxFuture<'a, Result<Platform, RegistryError>> {
        async move { platform_of(&self.fetch(host, repo, digest).await?) }.boxed()
    }
}

/// An `oci-client` client over `protocol`, trusting `extra_roots` (PEM) beside the system's,
/// each request bounded by `timeout`.
pub(super) fn oci_client(
    protocol: ClientProtocol,
    extra_roots: &[Vec<u8>],
    timeout: Duration,
) -> Result<Client, RegistryError> {
    let config = ClientConfig {
        protocol,
        extra_root_certificates: extra_roots
            .iter()
            .map(|pem| Certificate {
                encoding: CertificateEncoding::Pem,
                data: pem.clone(),
            })
            .collect(),
        read_timeout: Some(timeout),
        connect_timeout: Some(timeout),
        ..ClientConfig::default()
    };
    Client::try_from(config).map_err(|e| api_error("RegistryClient", e.to_string()))
}
