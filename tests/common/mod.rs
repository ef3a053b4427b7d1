//! Shared by the integration tests: the ECR emulator, seeding, the in-process server and
//! AdmissionReview fixtures.
#![allow(dead_code)]

pub mod fake_apiserver;
pub mod fault_proxy;
pub mod logs;
pub mod memory_registry;
pub mod moto;
pub mod oci_registry;
pub mod seed;
pub mod server;
pub mod token_server;

use serde_json::{json, Value};

/// A fixture with its `sample/` repositories moved under `prefix/`, so each test owns its
/// repositories in the shared emulator.
pub fn fixture(name: &str, prefix: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.replace("/sample/", &format!("/{prefix}/"))
}

/// The Pod CREATE fixture with its containers replaced by `containers` (name, image) and no
/// init containers.
pub fn pod_review(containers: &[(&str, &str)]) -> String {
    let mut review: Value =
        serde_json::from_str(&fixture("pod-create.json", "sample")).expect("fixture");
    let spec = &mut review["request"]["object"]["spec"];
    spec["containers"] = containers
        .iter()
        .map(|(name, image)| json!({"name": name, "image": image, "imagePullPolicy": "IfNotPresent", "resources": {}}))
        .collect();
    if let Some(spec) = spec.as_object_mut() {
        spec.remove("initContainers");
    }
    review.to_string()
}

/// A unique repository prefix per test, so tests share one emulator without colliding.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The warnings of a response as strings.
pub fn warnings(response: &Value) -> Vec<String> {
    response["warnings"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|w| w.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

pub fn message(response: &Value) -> String {
    response["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The loopback port `name` names in `line` (`webhook=127.0.0.1:8443`, or in a JSON line
/// `"metrics":"127.0.0.1:9090"`), as a process reports the addresses it bound.
pub fn reported_port(line: &str, name: &str) -> Option<u16> {
    let after = line
        .split_once(&format!("{name}="))
        .or_else(|| line.split_once(&format!("\"{name}\":")))?
        .1;
    port_after(after, "127.0.0.1:")
}

/// The port written right after the first `prefix` in `line` (`… listening on 127.0.0.1:41235`).
pub fn port_after(line: &str, prefix: &str) -> Option<u16> {
    let (_, port) = line.split_once(prefix)?;
    let digits: String = port.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Spawns `command` with its standard error piped and reads it until the line that holds
/// `marker` reports the port of each of `names` (the process listens on port 0 and says
/// where): no port is chosen beforehand, so parallel tests cannot race for one. The rest of
/// its standard error is drained in the background.
pub fn spawn_reporting(
    command: &mut std::process::Command,
    marker: &str,
    names: &[&str],
) -> (std::process::Child, Vec<u16>) {
    use std::io::BufRead;
    let mut child = command
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    let (marker, names): (String, Vec<String>) = (
        marker.to_owned(),
        names.iter().map(|n| (*n).to_owned()).collect(),
    );
    std::thread::spawn(move || {
        let mut told = false;
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if !told && line.contains(&marker) {
                let ports: Option<Vec<u16>> =
                    names.iter().map(|n| reported_port(&line, n)).collect();
                if let Some(ports) = ports {
                    let _ = tx.send(ports);
                    told = true;
                }
            }
        }
    });
    let ports = rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the process never reported where it listens");
    (child, ports)
}

/// A loopback port held by a socket that is bound and not listening: connections to it are
/// refused, and no other process can take the port until [`Reserved::listen`] (or the
/// end of the test). Binding a port, dropping it and binding it again later would race
/// with the other test binaries running at the same time.
pub struct Reserved(tokio::net::TcpSocket);

impl Reserved {
    pub fn new() -> Self {
        Self::at("127.0.0.1:0".parse().expect("addr")).expect("bind a loopback port")
    }

    /// Holds `addr`, free again (a server just stopped there); `None` if it is taken.
    pub fn at(addr: std::net::SocketAddr) -> Option<Self> {
        let socket = tokio::net::TcpSocket::new_v4().ok()?;
        socket.bind(addr).ok()?;
        Some(Reserved(socket))
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.0.local_addr().expect("addr")
    }

    /// Starts listening on the port (within a tokio runtime).
    pub fn listen(self) -> tokio::net::TcpListener {
        self.0.listen(1024).expect("listen")
    }
}

/// Waits until something listens on loopback `port`, failing with `what` after `limit`.
pub fn wait_for_listener(port: u16, limit: std::time::Duration, what: &str) {
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < limit,
            "{what} did not start on port {port}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// An endpoint on a loopback port that refuses connections: ECR unreachable. The port is
/// held for the whole process, so nothing else ever answers there.
pub fn refused_endpoint() -> String {
    static HELD: std::sync::OnceLock<Reserved> = std::sync::OnceLock::new();
    format!("http://{}", HELD.get_or_init(Reserved::new).addr())
}

/// This process's resident memory, (VmRSS, VmHWM) in KiB: for the benchmarks.
pub fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The controller's settings for tests that drive a verifier: `rate` background calls a
/// second, a pass every `interval`, no leader election, no workload series.
pub fn watch_settings(
    rate: f64,
    interval: std::time::Duration,
) -> ecr_preflight::watch::WatchSettings {
    ecr_preflight::watch::WatchSettings {
        recheck_interval: interval,
        calls_per_second: rate,
        registry_requests_per_second: ecr_preflight::watch::DEFAULT_REGISTRY_REQUESTS_PER_SECOND,
        namespaces: ecr_preflight::watch::Namespaces::default(),
        workload_metrics: false,
        leader_election: false,
        lease_namespace: "default".into(),
        lease_duration: std::time::Duration::from_secs(15),
        identity: "test".into(),
        expiry: ecr_preflight::watch::ExpirySettings::default(),
        read_pull_secrets: false,
    }
}

/// Serves `app` over plain HTTP on a loopback port the system picks; its address.
pub async fn serve_loopback(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}
