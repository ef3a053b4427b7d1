//! TLS for the webhook listener: rustls with TLS 1.2 and 1.3 only, a certificate that can be
//! swapped while connections are open, and a self-signed one for development.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::aws_lc_rs;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use crate::supervise::{self, TaskRestarts};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: PathBuf },
    #[error("{path}: no usable PEM private key found ({reason})")]
    BadKey { path: PathBuf, reason: String },
    #[error("certificate and key do not form a usable pair: {0}")]
    Pair(String),
    #[error("cannot make a self-signed certificate: {0}")]
    SelfSigned(String),
}

/// Installs aws-lc-rs as the process's rustls provider (idempotent).
pub fn install_crypto_provider() {
    let _ = aws_lc_rs::default_provider().install_default();
}

/// Builds a certified key from PEM bytes; `origin` names the files in errors.
pub fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_origin: &Path,
    key_origin: &Path,
) -> Result<CertifiedKey, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_origin.to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::BadKey {
        path: key_origin.to_owned(),
        reason: e.to_string(),
    })?;
    let provider = aws_lc_rs::default_provider();
    let signing_key =
        provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| TlsError::BadKey {
                path: key_origin.to_owned(),
                reason: e.to_string(),
            })?;
    let certified = CertifiedKey::new(certs, signing_key);
    certified
        .keys_match()
        .map_err(|e| TlsError::Pair(e.to_string()))?;
    Ok(certified)
}

/// Reads and validates a certificate and key from files.
pub fn load_files(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| TlsError::Read {
            path: p.to_owned(),
            source,
        })
    };
    certified_key(&read(cert)?, &read(key)?, cert, key)
}

/// A self-signed certificate for `localhost`, `127.0.0.1` and `::1`, as PEM (cert, key).
pub fn self_signed_pem() -> Result<(String, String), TlsError> {
    let names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let generated = rcgen::generate_simple_self_signed(names)
        .map_err(|e| TlsError::SelfSigned(e.to_string()))?;
    Ok((generated.cert.pem(), generated.signing_key.serialize_pem()))
}

/// The serving certificate, replaceable at any time; new handshakes see the new one,
/// open connections keep theirs.
pub struct CertStore {
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CertStore")
    }
}

impl CertStore {
    pub fn new(key: CertifiedKey) -> Arc<Self> {
        Arc::new(CertStore {
            current: RwLock::new(Arc::new(key)),
        })
    }

    pub fn replace(&self, key: CertifiedKey) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// A server config over `store`: TLS 1.3 and 1.2 only, HTTP/2 and HTTP/1.1 by ALPN.
pub fn server_config(store: Arc<CertStore>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Pair(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Reloads the certificate and key whenever their contents change, by polling them every
/// `interval`. Kubelet updates a mounted Secret by swapping the `..data` symlink of its
/// directory, not by writing the files, so contents are compared, not modification events.
/// A pair that does not load (say, read between the two writes of a manual update) keeps
/// the current certificate and is tried again on the next tick.
///
/// Supervised: should it panic, it is counted in `restarts` and started again.
pub fn spawn_reloader(
    store: Arc<CertStore>,
    cert: PathBuf,
    key: PathBuf,
    interval: Duration,
    restarts: &TaskRestarts,
) -> tokio::task::JoinHandle<()> {
    // What is served now is read here, not when the task first runs: a change made in
    // between would otherwise be taken for the current pair and never loaded.
    let served = read_pair(&cert, &key);
    supervise::spawn("certificate-reloader", restarts.clone(), move || {
        reload(
            store.clone(),
            cert.clone(),
            key.clone(),
            interval,
            served.clone(),
        )
    })
}

type Pair = Option<(Vec<u8>, Vec<u8>)>;

fn read_pair(cert: &Path, key: &Path) -> Pair {
    Some((std::fs::read(cert).ok()?, std::fs::read(key).ok()?))
}

async fn reload(
    store: Arc<CertStore>,
    cert: PathBuf,
    key: PathBuf,
    interval: Duration,
    mut last: Pair,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let current = read_pair(&cert, &key);
        if current.is_none() || current == last {
            continue;
        }
        if let Some((cert_pem, key_pem)) = &current {
            match certified_key(cert_pem, key_pem, &cert, &key) {
                Ok(certified) => {
                    store.replace(certified);
                    tracing::info!(cert = %cert.display(), "serving certificate reloaded");
                    last = current;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "new certificate not loaded; keeping the current one")
                }
            }
        }
    }
}
