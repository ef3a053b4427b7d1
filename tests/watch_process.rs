//! `ecr-preflight watch` and `report` as processes against the fake API server (through a
//! kubeconfig naming its http:// address, as `kubectl proxy` gives) and the ECR emulator:
//! leader election between two replicas, and report's output and exit codes.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::fake_apiserver::{put_deployment, FakeApiServer};
use common::seed::{Breakage, Seeder, DOCKER_MANIFEST, REGISTRY};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ecr-preflight");

fn command(kubeconfig: &Path, endpoint: &str) -> Command {
    let mut c = Command::new(BIN);
    c.env("KUBECONFIG", kubeconfig)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("ECR_PREFLIGHT_ECR_ENDPOINT_URL", endpoint)
        .env("ECR_PREFLIGHT_PLATFORMS", "linux/amd64")
        .env_remove("POD_NAMESPACE")
        .env_remove("ECR_PREFLIGHT_LEASE_NAMESPACE");
    c
}

struct Replica {
    child: Child,
    metrics: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn replica(kubeconfig: &Path, name: &str) -> Replica {
    let (child, ports) = common::spawn_reporting(
        command(kubeconfig, &common::moto::endpoint())
            .args(["watch", "--metrics-listen", "127.0.0.1:0"])
            .args(["--recheck-interval", "2s", "--lease-duration", "3s"])
            .args(["--lease-namespace", "ops"])
            .env("POD_NAME", name)
            .stdout(Stdio::null()),
        "watching",
        &["metrics"],
    );
    let port = ports[0];
    Replica {
        child,
        metrics: format!("http://127.0.0.1:{port}/metrics"),
    }
}

/// The value of the series `name` (without labels) on `replica`'s /metrics, if it answers.
async fn metric(replica: &Replica, name: &str) -> Option<f64> {
    let text = reqwest::get(&replica.metrics)
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

async fn leader_gauge(r: &Replica) -> Option<u8> {
    metric(r, "ecr_preflight_watch_leader")
        .await
        .map(|v| v as u8)
}

/// Waits (10 s at most) until `replica` reports `gauge` on `ecr_preflight_watch_leader`.
async fn wait_for_leader_gauge(replica: &Replica, gauge: u8, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while leader_gauge(replica).await != Some(gauge) {
        assert!(Instant::now() < deadline, "the replica never {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (10 s at most) until `replica` reports leading on its metrics.
async fn wait_until_leading(replica: &Replica) {
    wait_for_leader_gauge(replica, 1, "reported leading").await;
}

/// Waits (10 s at most) until `replica` serves its metrics and does not lead.
async fn wait_until_following(replica: &Replica) {
    wait_for_leader_gauge(replica, 0, "came up following").await;
}

/// When `replica`'s last full pass ended (its metric; 0 until it answers).
async fn last_pass(replica: &Replica) -> f64 {
    metric(
        replica,
        "ecr_preflight_watch_last_full_verification_timestamp_seconds",
    )
    .await
    .unwrap_or(0.0)
}

/// Waits (30 s at most) until `replica` has ended `n` more full passes.
async fn wait_passes(replica: &Replica, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = last_pass(replica).await;
    let mut ended = 0;
    while ended < n {
        assert!(Instant::now() < deadline, "{ended} of {n} passes ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = last_pass(replica).await;
        if now != seen {
            ended += 1;
            seen = now;
        }
    }
}

fn holder(api: &FakeApiServer) -> String {
    api.objects("Lease")
        .first()
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < limit,
            "{what} did not happen within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_and_the_other_takes_over_when_it_dies() {
    let api = FakeApiServer::start().await;
    // A tag ECR does not have: the leader, and only the leader, posts one Warning.
    let image = format!("{REGISTRY}/{}:gone", common::unique("watch/lease"));
    put_deployment(&api, "shop", "web", &image, "sha256:11");
    let dir = tempfile::tempdir().expect("dir");
    let kubeconfig = api.kubeconfig(dir.path());

    let mut alpha = replica(&kubeconfig, "alpha");
    wait_for("alpha leading", Duration::from_secs(30), || {
        holder(&api).starts_with("alpha-")
    })
    .await;
    let beta = replica(&kubeconfig, "beta");
    wait_for("the Warning", Duration::from_secs(30), || {
        !api.objects("Event").is_empty()
    })
    .await;
    // Beta runs, and alpha has made two more passes meanwhile.
    wait_until_following(&beta).await;
    wait_passes(&alpha, 2).await;
    assert!(holder(&api).starts_with("alpha-"), "{}", holder(&api));
    assert_eq!(leader_gauge(&alpha).await, Some(1));
    assert_eq!(leader_gauge(&beta).await, Some(0));
    let events = api.objects("Event");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["reason"], "ImageUnavailable");
    assert!(events[0]["reportingInstance"]
        .as_str()
        .is_some_and(|i| i.starts_with("alpha-")));
    assert_eq!(events[0]["regarding"]["kind"], "Deployment");
    let lease = &api.objects("Lease")[0];
    assert_eq!(lease["metadata"]["namespace"], "ops");

    // alpha stops renewing (killed): beta takes over once the lease has run out.
    alpha.child.kill().expect("kill alpha");
    let took = wait_for("beta leading", Duration::from_secs(15), || {
        holder(&api).starts_with("beta-")
    })
    .await;
    eprintln!("beta took over {took:?} after alpha was killed (lease 3s)");
    assert!(took <= Duration::from_secs(15), "{took:?}");
    wait_until_leading(&beta).await;
}

/// The threads of process `pid`: name and nice value, from /proc.
fn threads(pid: u32) -> Vec<(String, i64)> {
    let mut found = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
        let dir = task.expect("task").path();
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(dir.join("comm")),
            std::fs::read_to_string(dir.join("stat")),
        ) else {
            continue; // ended meanwhile
        };
        // Fields after the command's closing parenthesis start at the state (field 3);
        // nice is field 19.
        let rest = &stat[stat.rfind(')').expect("stat") + 2..];
        let nice = rest
            .split(' ')
            .nth(16)
            .expect("nice")
            .parse()
            .expect("nice");
        found.push((comm.trim().to_owned(), nice));
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_watch_runs_the_controller_on_a_thread_of_its_own_at_the_lowest_priority() {
    let api = FakeApiServer::start().await;
    let image = format!("{REGISTRY}/{}:gone", common::unique("watch/apart"));
    put_deployment(&api, "shop", "web", &image, "sha256:11");
    let dir = tempfile::tempdir().expect("dir");
    let kubeconfig = api.kubeconfig(dir.path());
    let (child, ports) = common::spawn_reporting(
        command(&kubeconfig, &common::moto::endpoint())
            .args(["serve", "--watch", "--insecure-self-signed"])
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .args(["--recheck-interval", "2s", "--lease-namespace", "ops"])
            .env("POD_NAME", "apart")
            .stdout(Stdio::null()),
        "serving",
        &["webhook", "metrics"],
    );
    let serving = Replica {
        metrics: format!("http://127.0.0.1:{}/metrics", ports[1]),
        child,
    };
    // The controller does its whole work: it leads, verifies and tells.
    wait_until_leading(&serving).await;
    wait_for("the Warning", Duration::from_secs(30), || {
        !api.objects("Event").is_empty()
    })
    .await;
    wait_passes(&serving, 1).await;
    let threads = threads(serving.child.id());
    let nice_of = |name: &str| -> Vec<i64> {
        threads
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, nice)| *nice)
            .collect()
    };
    assert_eq!(nice_of("controller"), [19], "{threads:?}");
    // Admission's worker (and its runtime's blocking pool) keeps the process's priority.
    let admission = nice_of("tokio-rt-worker");
    assert!(
        !admission.is_empty() && admission.iter().all(|n| *n == 0),
        "{threads:?}"
    );
}

fn report(kubeconfig: &Path, endpoint: &str, format: &str) -> Output {
    command(kubeconfig, endpoint)
        .args(["report", "-o", format])
        .output()
        .expect("run report")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_prints_the_inventory_and_exits_like_check() {
    let seeder = Seeder::new(&common::moto::endpoint());
    let repo = common::unique("watch/report");
    let good = seeder
        .image(&repo, "v1", &repo, 2, DOCKER_MANIFEST, Breakage::default())
        .await;
    let api = FakeApiServer::start().await;
    put_deployment(&api, "shop", "web", &good.reference(), &good.digest);
    let dir = tempfile::tempdir().expect("dir");
    let kubeconfig = api.kubeconfig(dir.path());
    let moto = common::moto::endpoint();

    api.put(
        serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1",
        "labels": {"kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}}}),
    );
    let out = report(&kubeconfig, &moto, "json");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let view: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(view["verified_at"].is_string());
    assert_eq!(
        view["workloads"][0]["platforms"],
        serde_json::json!(["linux/amd64 (1 node)"]),
        "the nodes are listed once too"
    );
    let w = &view["workloads"][0];
    assert_eq!(
        (
            w["namespace"].as_str(),
            w["kind"].as_str(),
            w["name"].as_str()
        ),
        (Some("shop"), Some("Deployment"), Some("web"))
    );
    let c = &w["containers"][0];
    assert_eq!(c["outcome"], "ok");
    assert_eq!(c["running_digests"][0], good.digest.as_str());
    assert_eq!(c["drift"], false);
    assert!(c["expires_at"].is_null(), "no policy yet: {c}");

    // A lifecycle rule that expires it in two days: shown with its rule, the exit code unchanged.
    seeder
        .client
        .put_lifecycle_policy()
        .repository_name(&repo)
        .lifecycle_policy_text(
            serde_json::json!({"rules": [{"rulePriority": 3, "description": "two days", "selection": {"tagStatus": "any", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 2}, "action": {"type": "expire"}}]})
                .to_string(),
        )
        .send()
        .await
        .expect("put policy");
    let out = report(&kubeconfig, &moto, "json");
    assert_eq!(out.status.code(), Some(0));
    let view: Value = serde_json::from_slice(&out.stdout).expect("json");
    let c = &view["workloads"][0]["containers"][0];
    assert!(
        c["expires_at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{c}"
    );
    assert_eq!(c["expiry_action"], "expire");
    assert_eq!(c["expiry_rule"]["priority"], 3);
    assert_eq!(c["expiry_rule"]["description"], "two days");
    let out = report(&kubeconfig, &moto, "table");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("EXPIRES") && table.contains("expire (rule 3)"),
        "{table}"
    );
    assert!(
        table.contains("will be expired by lifecycle rule 3 (two days)"),
        "{table}"
    );

    // A CronJob (its Jobs long gone) whose image lost a layer: broken, exit 1.
    let broken = seeder
        .image(
            &repo,
            "nightly",
            &format!("{repo}-n"),
            2,
            DOCKER_MANIFEST,
            Breakage {
                missing_layers: &[0],
                missing_config: false,
            },
        )
        .await;
    api.put(serde_json::json!({"apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"namespace": "shop", "name": "nightly"},
        "spec": {"schedule": "0 3 * * *", "suspend": true, "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "task", "image": broken.reference()}]}}}}}}));
    let out = report(&kubeconfig, &moto, "table");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("NAMESPACE"), "{table}");
    assert!(
        table.contains("CronJob") && table.contains("missing"),
        "{table}"
    );
    assert!(
        table.contains(&broken.layers[0]),
        "the problem names the digest: {table}"
    );

    // ECR cannot be reached: 3.
    let out = report(&kubeconfig, &common::refused_endpoint(), "json");
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The cluster cannot be read: 2, saying so.
    let gone = tempfile::tempdir().expect("dir");
    let unreachable = FakeApiServer::start().await;
    let path = unreachable.kubeconfig(gone.path());
    drop(unreachable);
    let out = report(&path, &moto, "json");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot read the cluster"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = report(&gone.path().join("missing"), &moto, "json");
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_reads_the_pull_secrets_of_the_workloads_when_asked() {
    use base64::Engine as _;
    let registry = common::oci_registry::OciRegistry::start("puller", "s3cret-pass");
    let (_, blobs) = registry.push_image("private/app", "v1").await;
    registry.lose_blob(&blobs[1]);
    let host = registry.url.trim_start_matches("https://").to_owned();
    let api = FakeApiServer::start().await;
    let auth = base64::engine::general_purpose::STANDARD.encode("puller:s3cret-pass");
    let config = serde_json::json!({"auths": {&host: {"auth": auth}}}).to_string();
    api.put(serde_json::json!({"apiVersion": "v1", "kind": "Secret",
        "type": "kubernetes.io/dockerconfigjson", "metadata": {"namespace": "shop", "name": "regcred"},
        "data": {".dockerconfigjson": base64::engine::general_purpose::STANDARD.encode(config)}}));
    api.put(
        serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"namespace": "shop", "name": "web"},
        "spec": {"selector": {}, "template": {"spec": {"imagePullSecrets": [{"name": "regcred"}],
            "containers": [{"name": "app", "image": format!("{host}/private/app:v1")}]}}}}),
    );
    let dir = tempfile::tempdir().expect("dir");
    let kubeconfig = api.kubeconfig(dir.path());
    let ca = registry.ca.display().to_string();
    let run = |extra: &[&str]| {
        command(&kubeconfig, &common::moto::endpoint())
            .args(["report", "-o", "json", "--registry-ca-file", &ca])
            .args(extra)
            .output()
            .expect("run report")
    };
    let outcome = |out: &Output| {
        let view: Value = serde_json::from_slice(&out.stdout).expect("json");
        view["workloads"][0]["containers"][0]["outcome"].clone()
    };
    // Without the Secret, the registry wants credentials: unknown, exit 3.
    let anonymous = run(&[]);
    assert_eq!(outcome(&anonymous), "unknown");
    assert_eq!(anonymous.status.code(), Some(3));
    // With it, the lost blob is found: missing, exit 1.
    let pulled = run(&["--read-pull-secrets"]);
    assert_eq!(
        outcome(&pulled),
        "missing",
        "{}",
        String::from_utf8_lossy(&pulled.stderr)
    );
    assert_eq!(pulled.status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stopped_with_sigterm_gives_the_lease_up() {
    let api = FakeApiServer::start().await;
    let image = format!("{REGISTRY}/{}:gone", common::unique("watch/release"));
    put_deployment(&api, "shop", "web", &image, "sha256:11");
    let dir = tempfile::tempdir().expect("dir");
    let kubeconfig = api.kubeconfig(dir.path());
    let mut alpha = replica(&kubeconfig, "alpha");
    wait_for("alpha leading", Duration::from_secs(30), || {
        holder(&api).starts_with("alpha-")
    })
    .await;
    let beta = replica(&kubeconfig, "beta");
    wait_until_following(&beta).await;
    let status = Command::new("kill")
        .args(["-TERM", &alpha.child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    // Released before the 3 s lease could have run out by itself.
    wait_for("the Lease released", Duration::from_millis(2500), || {
        !holder(&api).starts_with("alpha-")
    })
    .await;
    let exit = alpha.child.wait().expect("alpha exits");
    assert_eq!(exit.code(), Some(0));
    wait_for("beta leading", Duration::from_secs(10), || {
        holder(&api).starts_with("beta-")
    })
    .await;
    wait_until_leading(&beta).await;
}

#[test]
fn bad_controller_flags_are_refused_before_anything_starts() {
    let dir = tempfile::tempdir().expect("dir");
    let kubeconfig = dir.path().join("none");
    for (args, says) in [
        (
            vec!["watch", "--recheck-interval", "500ms"],
            "--recheck-interval",
        ),
        (
            vec!["watch", "--watch-ecr-calls-per-second", "0"],
            "--watch-ecr-calls-per-second",
        ),
        (vec!["watch", "--lease-duration", "1s"], "--lease-duration"),
        (
            vec!["watch", "--registry-requests-per-second", "0"],
            "--registry-requests-per-second",
        ),
        (
            vec!["watch", "--workload-metrics", "maybe"],
            "--workload-metrics",
        ),
        (
            vec!["report", "--watch-ecr-calls-per-second", "NaN"],
            "--watch-ecr-calls-per-second",
        ),
        (
            vec![
                "serve",
                "--watch",
                "--insecure-self-signed",
                "--recheck-interval",
                "0s",
            ],
            "--recheck-interval",
        ),
    ] {
        let out = command(&kubeconfig, &common::refused_endpoint())
            .args(&args)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    // The environment works as the flags do.
    let out = command(&kubeconfig, &common::refused_endpoint())
        .arg("watch")
        .env("ECR_PREFLIGHT_RECHECK_INTERVAL", "10ms")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--recheck-interval"));
}
