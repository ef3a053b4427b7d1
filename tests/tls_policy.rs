//! The webhook port speaks only TLS 1.2 and 1.3: a TLS 1.1 client and plain HTTP are refused.

mod common;

use std::time::Duration;

use common::server::{self, Options};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A minimal TLS 1.1 ClientHello: one cipher suite (TLS_RSA_WITH_AES_128_CBC_SHA), no
/// extensions.
fn tls11_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x02]; // client_version TLS 1.1
    body.extend([0x42; 32]); // random
    body.push(0); // session id
    body.extend([0x00, 0x02, 0x00, 0x2f]); // cipher suites
    body.extend([0x01, 0x00]); // compression: null
    let mut handshake = vec![0x01, 0x00, 0x00, u8::try_from(body.len()).expect("small")];
    handshake.extend(body);
    let mut record = vec![
        0x16,
        0x03,
        0x02,
        0x00,
        u8::try_from(handshake.len()).expect("small"),
    ];
    record.extend(handshake);
    record
}

async fn exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the server neither answered nor closed");
    answer
}

#[tokio::test]
async fn tls_1_1_is_refused_with_a_fatal_alert() {
    let srv = server::start(Options::default()).await;
    let answer = exchange(
        srv.running.webhook_addr.expect("webhook listener"),
        &tls11_client_hello(),
    )
    .await;
    // An alert record (21), never a ServerHello (a handshake record, 22).
    assert_eq!(answer.first(), Some(&0x15), "{answer:02x?}");
    assert_eq!(answer.get(5), Some(&2), "a fatal alert: {answer:02x?}");
    // handshake_failure (40) or protocol_version (70): no TLS 1.1 session either way.
    assert!(matches!(answer.get(6), Some(40 | 70)), "{answer:02x?}");
    assert_eq!(answer.len(), 7, "nothing but the alert: {answer:02x?}");
}

#[tokio::test]
async fn plain_http_on_the_webhook_port_is_refused() {
    let srv = server::start(Options::default()).await;
    let answer = exchange(
        srv.running.webhook_addr.expect("webhook listener"),
        b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
    )
    .await;
    let text = String::from_utf8_lossy(&answer);
    assert!(!text.contains("HTTP/1.1"), "answered plain HTTP: {text}");
    // The server is unharmed.
    let response = srv
        .review("/validate", common::fixture("configmap-create.json", "x"))
        .await;
    assert_eq!(response["allowed"], true);
}
