//! The warm-path benchmark's baseline: a bare axum + rustls server that reads the body and
//! returns a fixed allowed AdmissionReview, over the same TLS and connection settings as
//! the webhook (rustls with aws-lc-rs, HTTP/1.1 and HTTP/2, TCP_NODELAY).
//!
//! Usage: baseline_server PORT

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio_rustls::TlsAcceptor;

const ALLOWED: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"7f1c2a90-1d3e-4c7b-9a0e-1c2d3e4f5a11","allowed":true,"status":{}}}"#;

async fn validate(body: Bytes) -> impl IntoResponse {
    // Read the body as the webhook must, then answer without looking at it.
    std::hint::black_box(body.len());
    ([(header::CONTENT_TYPE, "application/json")], ALLOWED)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ecr_preflight::server::tls::install_crypto_provider();
    let port: u16 = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "9443".into())
        .parse()?;
    let (cert, key) = ecr_preflight::server::tls::self_signed_pem()?;
    let certified = ecr_preflight::server::tls::certified_key(
        cert.as_bytes(),
        key.as_bytes(),
        "cert".as_ref(),
        "key".as_ref(),
    )?;
    let tls = ecr_preflight::server::tls::server_config(
        ecr_preflight::server::tls::CertStore::new(certified),
    )?;
    let acceptor = TlsAcceptor::from(tls);
    let app = Router::new().route("/validate", post(validate));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        let (acceptor, app, builder) = (acceptor.clone(), app.clone(), builder.clone());
        tokio::spawn(async move {
            if let Ok(tls) = acceptor.accept(tcp).await {
                let _ = builder
                    .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app))
                    .await;
            }
        });
    }
}
