//! The serving certificate is reloaded when kubelet swaps a mounted Secret's `..data`
//! symlink: new handshakes get the new certificate, open connections keep working.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::memory_registry::MemoryRegistry;
use ecr_preflight::engine::{Engine, EngineSettings};
use ecr_preflight::server;
use ecr_preflight::server::tls::{self, CertStore};

/// Writes a certificate generation the way kubelet lays out a Secret volume.
fn write_generation(dir: &Path, name: &str, cert: &str, key: &str) {
    let generation = dir.join(name);
    std::fs::create_dir(&generation).expect("mkdir");
    std::fs::write(generation.join("tls.crt"), cert).expect("cert");
    std::fs::write(generation.join("tls.key"), key).expect("key");
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(name, &tmp).expect("symlink");
    // The atomic swap kubelet does.
    std::fs::rename(&tmp, dir.join("..data")).expect("swap ..data");
}

#[tokio::test]
async fn a_swapped_secret_is_served_without_restart_and_open_connections_survive() {
    tls::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert1, key1) = tls::self_signed_pem().expect("gen1");
    let (cert2, key2) = tls::self_signed_pem().expect("gen2");
    write_generation(dir.path(), "..2026_11_26_01", &cert1, &key1);
    for file in ["tls.crt", "tls.key"] {
        std::os::unix::fs::symlink(format!("..data/{file}"), dir.path().join(file)).expect("link");
    }
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let store = CertStore::new(tls::load_files(&cert_path, &key_path).expect("load"));
    tls::spawn_reloader(
        store.clone(),
        cert_path,
        key_path,
        Duration::from_millis(100),
        &Default::default(),
    );

    let engine = Arc::new(Engine::new(
        Arc::new(MemoryRegistry::default()),
        EngineSettings::new(vec!["linux/amd64".parse().expect("p")]),
    ));
    let running = server::start_webhook(engine, common::server::loopback_config(store))
        .await
        .expect("start");
    let url = format!(
        "https://localhost:{}/validate",
        running.webhook_addr.expect("webhook listener").port()
    );
    let body = common::fixture("configmap-create.json", "x");
    let old_client = common::server::client(&cert1, true);
    let new_client = common::server::client(&cert2, true);
    let post = |client: &reqwest::Client| client.post(&url).body(body.clone()).send();

    assert_eq!(post(&old_client).await.expect("gen1 served").status(), 200);
    assert!(post(&new_client).await.is_err(), "gen2 is not served yet");

    write_generation(dir.path(), "..2026_11_26_02", &cert2, &key2);
    let started = Instant::now();
    loop {
        if let Ok(r) = post(&new_client).await {
            assert_eq!(r.status(), 200);
            break;
        }
        // Reloads are checked every 100 ms: the bound only tells a missed reload from a
        // slow machine.
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "new certificate not served after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The old client trusts only gen1: this succeeds only over its still-open connection.
    assert_eq!(
        post(&old_client)
            .await
            .expect("open connection survives")
            .status(),
        200
    );
    let fresh_old = common::server::client(&cert1, true);
    assert!(post(&fresh_old).await.is_err(), "a new handshake gets gen2");
}

#[tokio::test]
async fn a_half_written_pair_keeps_the_current_certificate() {
    let (logs, _guard) = common::logs::capture("ecr_preflight=warn");
    tls::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert1, key1) = tls::self_signed_pem().expect("gen1");
    let (cert2, key2) = tls::self_signed_pem().expect("gen2");
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_path, &cert1).expect("cert");
    std::fs::write(&key_path, &key1).expect("key");
    let store = CertStore::new(tls::load_files(&cert_path, &key_path).expect("load"));
    let before = store.current();
    tls::spawn_reloader(
        store.clone(),
        cert_path.clone(),
        key_path.clone(),
        Duration::from_millis(50),
        &Default::default(),
    );
    // A new certificate with the old key: not a pair. Waits until the reloader has read
    // it and refused it (its warning), not for a time that a reloader that never ran
    // would pass too.
    std::fs::write(&cert_path, &cert2).expect("cert");
    let started = Instant::now();
    while logs.count("new certificate not loaded") == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the half-written pair was never looked at: {:?}",
            logs.lines()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(Arc::ptr_eq(&before, &store.current()));
    // The pair completed, it is loaded.
    std::fs::write(&key_path, &key2).expect("key");
    let started = Instant::now();
    while Arc::ptr_eq(&before, &store.current()) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the completed pair was never loaded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
