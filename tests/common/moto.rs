//! The ECR API emulator (`moto_server`) for integration tests.
//!
//! `ECR_PREFLIGHT_TEST_ECR_ENDPOINT` names a running one (scripts/test.sh starts one for the
//! whole suite). Without it, each test binary starts its own on a loopback port moto picks,
//! found through `MOTO_SERVER`, `.venv-test/bin/moto_server` or `PATH`, and a watchdog shell ends it
//! when the test process exits.

use std::io::{BufRead, BufReader};
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

/// Starts moto_server on a port of its choosing (`-p 0`) and reads the port from the line
/// it prints once listening, so that no other test binary can take the port between a
/// choice and the bind.
fn spawn() -> String {
    let script = format!(
        "\"$0\" -H 127.0.0.1 -p 0 2>&1 & m=$!; while kill -0 {pid} 2>/dev/null; do sleep 1; done; kill $m",
        pid = std::process::id()
    );
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(moto_binary())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start moto_server (install it: python3 -m venv .venv-test && .venv-test/bin/pip install 'moto[server]')");
    let output = child.stdout.take().expect("stdout");
    let (found, port) = std::sync::mpsc::channel();
    // Reads the port, then keeps draining moto's request log so that it never blocks on a
    // full pipe; reaps the watchdog when it exits with the test process.
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines().map_while(Result::ok) {
            if let Some(port) = super::port_after(&line, "Running on http://127.0.0.1:") {
                let _ = found.send(port);
            }
        }
        let _ = child.wait();
    });
    let port = port
        .recv_timeout(Duration::from_secs(30))
        .expect("moto_server did not say where it listens within 30 s");
    format!("http://127.0.0.1:{port}")
}
