//! A token server for `docker-registry`'s token authentication, as Docker Hub, GHCR and
//! Quay answer: `GET /token?service=…&scope=repository:NAME:pull`, anonymous or with Basic
//! credentials, answers a JWT (ES256, its certificate in the `x5c` header) that the
//! registry trusts through its `rootcertbundle`. Public repositories are pulled by anyone;
//! the others only with the user's password. A token for a scope not granted carries no
//! access, as Docker Hub's do, and the registry refuses it.

use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use rcgen::{CertificateParams, KeyPair, SigningKey};
use serde_json::json;

pub const SERVICE: &str = "test-registry";
pub const ISSUER: &str = "test-token-issuer";

struct Shared {
    key: KeyPair,
    /// The signing certificate, DER.
    der: Vec<u8>,
    user: String,
    password: String,
    /// Repository prefixes anyone may pull.
    public: Vec<String>,
    /// Each token request: (whether it carried credentials, scope).
    requests: Mutex<Vec<(bool, String)>>,
}

pub struct TokenServer {
    /// `http://127.0.0.1:PORT/token`: the realm of the registry's challenge.
    pub realm: String,
    /// The certificate the registry trusts (PEM), for `rootcertbundle`.
    pub cert_pem: String,
    shared: Arc<Shared>,
}

impl TokenServer {
    pub async fn start(user: &str, password: &str, public: &[&str]) -> Self {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec![ISSUER.to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("certificate");
        let shared = Arc::new(Shared {
            der: cert.der().to_vec(),
            key,
            user: user.to_owned(),
            password: password.to_owned(),
            public: public.iter().map(|p| (*p).to_owned()).collect(),
            requests: Mutex::default(),
        });
        let app = axum::Router::new()
            .route("/token", axum::routing::get(token))
            .with_state(shared.clone());
        let addr = super::serve_loopback(app).await;
        TokenServer {
            realm: format!("http://{addr}/token"),
            cert_pem: cert.pem(),
            shared,
        }
    }

    /// Writes the certificate where the registry's `rootcertbundle` names it.
    pub fn write_bundle(&self, path: &Path) {
        std::fs::write(path, &self.cert_pem).expect("bundle");
    }

    /// Each token request so far: (with credentials, scope).
    pub fn requests(&self) -> Vec<(bool, String)> {
        self.shared.requests.lock().expect("lock").clone()
    }
}

#[derive(serde::Deserialize)]
struct TokenQuery {
    #[serde(default)]
    scope: String,
}

async fn token(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
) -> Response {
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    shared
        .requests
        .lock()
        .expect("lock")
        .push((given.is_some(), query.scope.clone()));
    let user = match given {
        Some(pair) if pair == format!("{}:{}", shared.user, shared.password) => {
            Some(shared.user.clone())
        }
        Some(_) => return (StatusCode::UNAUTHORIZED, "bad credentials").into_response(),
        None => None,
    };
    // repository:NAME:pull
    let name = query
        .scope
        .strip_prefix("repository:")
        .and_then(|s| s.rsplit_once(':'))
        .map(|(name, _)| name.to_owned())
        .unwrap_or_default();
    let public = shared.public.iter().any(|p| name.starts_with(p.as_str()));
    let access = if public || user.is_some() {
        json!([{"type": "repository", "name": name, "actions": ["pull"]}])
    } else {
        json!([])
    };
    let jwt = sign(&shared, user.as_deref().unwrap_or_default(), access);
    axum::Json(json!({"token": jwt, "access_token": jwt, "expires_in": 300})).into_response()
}

/// A JWT for `subject` with `access`, signed ES256 with the server's key.
fn sign(shared: &Shared, subject: &str, access: serde_json::Value) -> String {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let header = json!({"typ": "JWT", "alg": "ES256",
        "x5c": [base64::engine::general_purpose::STANDARD.encode(&shared.der)]});
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = json!({"iss": ISSUER, "sub": subject, "aud": SERVICE, "exp": now + 300,
        "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", fastrand::u64(..)), "access": access});
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let der = shared.key.sign(signing_input.as_bytes()).expect("sign");
    format!("{signing_input}.{}", b64(&raw_signature(&der)))
}

/// An ECDSA signature as JWS wants it (r and s, 32 bytes each) from its ASN.1 DER form
/// (`SEQUENCE { INTEGER r, INTEGER s }`).
fn raw_signature(der: &[u8]) -> Vec<u8> {
    // SEQUENCE, its length (short form: at most 72 bytes), then the two INTEGERs.
    let mut rest = &der[2..];
    let mut out = Vec::with_capacity(64);
    for _ in 0..2 {
        assert_eq!(rest[0], 0x02, "an INTEGER");
        let len = rest[1] as usize;
        let value = &rest[2..2 + len];
        let value = &value[value.len().saturating_sub(32)..];
        out.extend(std::iter::repeat_n(0u8, 32 - value.len()));
        out.extend_from_slice(value);
        rest = &rest[2 + len..];
    }
    out
}
