//! The ECR API emulator (`moto_server`) for integration tests.
//!
//! `ECR_PREFLIGHT_TEST_ECR_ENDPOINT` names a running one (scripts/test.sh starts one for the
//! whole suite). Without it, each test binary starts its own on a free loopback port, found
//! through `MOTO_SERVER`, `.venv-test/bin/moto_server` or `PATH`, and a watchdog shell ends it
//! when the test process exits.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

pub fn endpoint() -> String {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT
        .get_or_init(|| match std::env::var("ECR_PREFLIGHT_TEST_ECR_ENDPOINT") {
            Ok(url) if !url.is_empty() => url,
            _ => spawn(),
        })
        .clone()
}

fn moto_binary() -> PathBuf {
    if let Ok(path) = std::env::var("MOTO_SERVER") {
        return PathBuf::from(path);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-test/bin/moto_server");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("moto_server")
}

fn spawn() -> String {
    let port = super::free_port();
    let script = format!(
        "\"$0\" -H 127.0.0.1 -p {port} >/dev/null 2>&1 & m=$!; while kill -0 {pid} 2>/dev/null; do sleep 1; done; kill $m",
        pid = std::process::id()
    );
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(moto_binary())
        .stdin(Stdio::null())
        .spawn()
        .expect("start moto_server (install it: python3 -m venv .venv-test && .venv-test/bin/pip install 'moto[server]')");
    // Reap the watchdog when it exits with the test process.
    std::thread::spawn(move || child.wait());
    super::wait_for_listener(port, Duration::from_secs(30), "moto_server");
    format!("http://127.0.0.1:{port}")
}
