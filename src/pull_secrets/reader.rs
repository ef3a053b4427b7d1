//! Reads pull secrets from the API server (`get` on Secrets), each at most once per
//! [`SECRET_TTL`] however many pods name it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

use super::Keyring;

/// How long a Secret read is kept: a rotated credential is used within this.
pub const SECRET_TTL: Duration = Duration::from_secs(60);
/// How long a Secret that could not be read is remembered as such: a Secret created just
/// after the pod that names it is read again soon.
const FAILED_TTL: Duration = Duration::from_secs(5);
/// Secrets kept at most (namespace and name come from pods).
pub const SECRETS_KEPT: u64 = 4_096;

/// One Secret as read: its credentials, and whether it could not be read.
#[derive(Clone)]
struct Read {
    keyring: Arc<Keyring>,
    failed: bool,
}

struct KeepFailuresBriefly;

impl moka::Expiry<(String, String), Read> for KeepFailuresBriefly {
    fn expire_after_create(
        &self,
        _key: &(String, String),
        read: &Read,
        _created: Instant,
    ) -> Option<Duration> {
        Some(if read.failed { FAILED_TTL } else { SECRET_TTL })
    }
}

/// The pull secrets of pods, read through the API server.
#[derive(Clone)]
pub struct SecretReader {
    client: kube::Client,
    kept: moka::future::Cache<(String, String), Read>,
}

impl std::fmt::Debug for SecretReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretReader")
            .field("kept", &self.kept.entry_count())
            .finish_non_exhaustive()
    }
}

impl SecretReader {
    pub fn new(client: kube::Client) -> Self {
        SecretReader {
            client,
            kept: moka::future::Cache::builder()
                .max_capacity(SECRETS_KEPT)
                .expire_after(KeepFailuresBriefly)
                .build(),
        }
    }

    /// The credentials of the Secrets `names` in `namespace`, joined. A Secret that cannot
    /// be read (absent, forbidden, not a pull secret) adds none; why is logged with its
    /// name, never its content. Concurrent reads of one Secret make one request.
    pub async fn keyring(&self, namespace: &str, names: &[&str]) -> Keyring {
        let reads = names.iter().map(|name| {
            let key = (namespace.to_owned(), (*name).to_owned());
            self.kept.get_with(key, self.read(namespace, name))
        });
        let mut keyring = Keyring::default();
        for read in futures::future::join_all(reads).await {
            keyring.extend(&read.keyring);
        }
        keyring
    }

    async fn read(&self, namespace: &str, name: &str) -> Read {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let outcome = match api.get(name).await {
            Ok(secret) => {
                let data = secret
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect();
                Keyring::from_secret(secret.type_.as_deref().unwrap_or("Opaque"), &data)
            }
            Err(kube::Error::Api(status)) if status.code == 403 => Err(
                "forbidden: this service account may not get Secrets there (the chart's readPullSecrets grants it)".to_owned(),
            ),
            Err(kube::Error::Api(status)) if status.code == 404 => Err("not found".to_owned()),
            Err(e) => Err(format!("cannot be read: {}", kube_reason(&e))),
        };
        match outcome {
            Ok(keyring) => Read {
                keyring: Arc::new(keyring),
                failed: false,
            },
            Err(why) => {
                tracing::warn!(namespace, secret = name, reason = %why, "pull secret not used");
                Read {
                    keyring: Arc::default(),
                    failed: true,
                }
            }
        }
    }
}

/// A kube error's kind, without a response body that could echo what was sent.
fn kube_reason(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => format!("HTTP {}", status.code),
        kube::Error::HyperError(_) | kube::Error::Service(_) => {
            "the API server did not answer".into()
        }
        _ => "unexpected answer from the API server".into(),
    }
}
