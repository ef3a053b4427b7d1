//! The `serve` binary as a process: flag checks before binding, and SIGTERM drains and
//! exits 0.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ecr-preflight");

#[test]
fn missing_or_half_tls_configuration_is_a_usage_error() {
    for args in [
        vec![],
        vec!["--tls-cert", "/nonexistent.pem"],
        vec!["--tls-key", "/nonexistent.pem"],
    ] {
        let out = Command::new(BIN)
            .arg("serve")
            .args(&args)
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--tls-"), "{args:?}: {stderr}");
    }
    let out = Command::new(BIN)
        .args([
            "serve",
            "--tls-cert",
            "/nonexistent.pem",
            "--tls-key",
            "/nonexistent.key",
        ])
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent.pem"));
    let out = Command::new(BIN)
        .args(["serve", "--insecure-self-signed", "--mode", "strict"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("strict"));
}

#[test]
fn flags_are_read_from_the_environment() {
    let out = Command::new(BIN)
        .args(["serve", "--insecure-self-signed"])
        .env("ECR_PREFLIGHT_ON_ERROR", "sometimes")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sometimes"));
}

/// `serve` with a self-signed certificate on ports the system picks, test credentials, no
/// output on stdout.
fn serve() -> Command {
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--insecure-self-signed"])
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(Stdio::null());
    command
}

/// Starts `command` (a `serve`) and returns it with the webhook's and the admin listener's
/// ports, as it reports them once bound.
fn start_serving(command: &mut Command) -> (std::process::Child, u16, u16) {
    let (child, ports) = common::spawn_reporting(command, "serving", &["webhook", "metrics"]);
    (child, ports[0], ports[1])
}

/// The ports the `serve` logging to `log` reports (webhook, admin), once it has bound them.
fn ports_in_log(log: &std::path::Path) -> (u16, u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let line = text.lines().find(|l| l.contains("\"serving\""));
        let ports = line.and_then(|l| {
            Some((
                common::reported_port(l, "webhook")?,
                common::reported_port(l, "metrics")?,
            ))
        });
        if let Some(ports) = ports {
            return ports;
        }
        assert!(
            Instant::now() < deadline,
            "never reported its ports: {text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_turns_readiness_off_serves_out_the_delay_and_exits_zero() {
    let (mut child, port, admin) = start_serving(serve().args(["--shutdown-delay", "5s"]));
    // Ready once the webhook's listener is bound and credentials are in: a moment after the
    // admin listener, which starts unready.
    let started = std::time::Instant::now();
    while http_status(admin, "/readyz") != Some(200) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never ready: {:?}",
            http_status(admin, "/readyz")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    // In order: readiness off while the webhook still listens (the delay), then exit 0.
    // A delay far longer than a loaded machine needs to see the first two.
    let mut unready = false;
    while !unready && child.try_wait().expect("try_wait").is_none() {
        unready = http_status(admin, "/readyz") == Some(503);
    }
    assert!(unready, "exited before readiness was seen off");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "the webhook stopped listening before the delay ended"
    );
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "exited before the delay ended"
    );
    let exit = child.wait().expect("wait");
    assert_eq!(exit.code(), Some(0));
}

/// One runtime worker thread by default; the flag or its variable set another count.
#[cfg(target_os = "linux")]
#[test]
fn worker_threads_follow_the_flag_and_the_environment() {
    for (flag, env, expected) in [
        (None, None, 1),
        (Some("1"), None, 1),
        (None, Some("3"), 3),
        (Some("2"), Some("3"), 2),
    ] {
        let mut command = serve();
        if let Some(n) = flag {
            command.args(["--worker-threads", n]);
        }
        if let Some(n) = env {
            command.env("ECR_PREFLIGHT_WORKER_THREADS", n);
        }
        let (mut child, _, _) = start_serving(&mut command);
        // tokio names its worker threads `tokio-rt-worker` (blocking-pool threads differ).
        let workers = std::fs::read_dir(format!("/proc/{}/task", child.id()))
            .expect("tasks")
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|name| name.trim() == "tokio-rt-worker")
            .count();
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(workers, expected, "flag {flag:?}, env {env:?}");
    }
}

/// The status of a plain HTTP GET, with nothing but std.
fn http_status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

/// Runs `serve --log-format json` with `env`, posts one Pod review whose body and process
/// environment hold secrets, stops the server with SIGTERM and returns what it logged.
async fn logs_of_one_review(env: &[(&str, &str)]) -> String {
    let log = tempfile::NamedTempFile::new().expect("log file");
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--insecure-self-signed",
            "--shutdown-delay",
            "0s",
            "--log-format",
            "json",
        ])
        // The review's nginx is Docker Hub's, out of reach here: skipped, not asked for.
        .args(["--registries", "ecr"])
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .env("AWS_ACCESS_KEY_ID", "AKIAEXAMPLELOGCHECK")
        .env("AWS_SECRET_ACCESS_KEY", "very-secret-key-value")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log.reopen().expect("reopen")))
        .spawn()
        .expect("spawn");
    let (port, _) = ports_in_log(log.path());
    let review = serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "log-check-uid", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE",
        "namespace": "shop", "name": "p",
        "userInfo": {"username": "alice", "extra": {"token": ["bearer-token-in-review"]}},
        "object": {"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "app", "image": "nginx:1.27", "env": [{"name": "DB_PASSWORD", "value": "password-in-spec"}]}]}}}});
    let client = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .expect("client");
    let response = client
        .post(format!("https://127.0.0.1:{port}/validate"))
        .json(&review)
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 200);
    let signalled = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    assert_eq!(child.wait().expect("wait").code(), Some(0));
    // The client's idle keep-alive connection is still open: the drain ended it (after at
    // most the request budget plus a second) instead of waiting for the client, which keeps
    // idle connections for 90 s. The bound only tells a hang from that, on a loaded machine.
    assert!(
        signalled.elapsed() < Duration::from_secs(60),
        "still running {:?} after SIGTERM: the idle connection held the drain",
        signalled.elapsed()
    );
    drop(client);
    // Exiting flushed the batched log lines.
    std::fs::read_to_string(log.path()).expect("logs")
}

/// The decision log line names the request, never its body or the process's credentials.
#[tokio::test]
async fn logs_carry_decisions_but_no_bodies_or_credentials() {
    let logs = logs_of_one_review(&[]).await;
    let decision = logs
        .lines()
        .find(|l| l.contains("admission decision"))
        .unwrap_or_else(|| panic!("no decision line in {logs}"));
    let line: serde_json::Value = serde_json::from_str(decision).expect("a JSON log line");
    assert_eq!(line["uid"], "log-check-uid");
    assert_eq!(line["decision"], "allowed");
    assert_eq!(line["target"], "ecr_preflight::decision");
    for secret in [
        "password-in-spec",
        "bearer-token-in-review",
        "very-secret-key-value",
        "AKIAEXAMPLELOGCHECK",
    ] {
        assert!(
            !logs.contains(secret),
            "{secret} leaked into the logs:\n{logs}"
        );
    }
    for line in logs.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
    }
}

/// `ECR_PREFLIGHT_LOG` filters decision lines by their target, like any other log line.
#[tokio::test]
async fn the_log_filter_silences_decision_lines() {
    let logs =
        logs_of_one_review(&[("ECR_PREFLIGHT_LOG", "info,ecr_preflight::decision=off")]).await;
    assert!(logs.contains("\"serving\""), "no startup line in {logs}");
    assert!(!logs.contains("admission decision"), "{logs}");
}

#[test]
fn serve_watch_without_a_kubernetes_configuration_is_an_error_at_start_up() {
    let home = tempfile::tempdir().expect("home");
    let without_cluster = |flag: &str| {
        serve()
            .arg(flag)
            .env("KUBECONFIG", home.path().join("no-such-kubeconfig"))
            .env("HOME", home.path())
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBERNETES_SERVICE_PORT")
            .stderr(Stdio::piped())
            .output()
            .expect("run serve")
    };
    let out = without_cluster("--watch");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--watch: the controller cannot start")
            && err.contains("run serve without --watch"),
        "{err}"
    );
    // Pull secrets are read through the API server too: no configuration, no start.
    let out = without_cluster("--read-pull-secrets");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--read-pull-secrets: no Kubernetes configuration found"),
        "{err}"
    );
}
