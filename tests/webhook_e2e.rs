//! The webhook end to end: real HTTPS, real AdmissionReview JSON, the ECR API emulator.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::seed::{Breakage, Seeder, DOCKER_MANIFEST, OCI_MANIFEST, REGISTRY};
use common::server::{self, Options};
use common::{fixture, message, pod_review, unique, warnings};
use ecr_preflight::admission::OwnedObjects;
use ecr_preflight::decision::{Mode, OnError};

fn seeder() -> Seeder {
    Seeder::new(&common::moto::endpoint())
}

const INTACT: Breakage = Breakage {
    missing_layers: &[],
    missing_config: false,
};

#[tokio::test]
async fn intact_docker_and_oci_images_are_allowed() {
    let s = seeder();
    let repo = unique("intact");
    let docker = s
        .image(
            &format!("{repo}/docker"),
            "1.0",
            "docker",
            3,
            DOCKER_MANIFEST,
            INTACT,
        )
        .await;
    let oci = s
        .image(
            &format!("{repo}/oci"),
            "1.0",
            "oci",
            2,
            OCI_MANIFEST,
            INTACT,
        )
        .await;
    let srv = server::start(Options::default()).await;
    let body = pod_review(&[("docker", &docker.reference()), ("oci", &oci.reference())]);
    let response = srv.review("/validate", body).await;
    assert_eq!(response["uid"], "0c9a8d74-9cb7-44dd-b98e-09fd62def201");
    assert_eq!(response["allowed"], true, "{response}");
    assert!(warnings(&response).is_empty());
    assert!(response.get("auditAnnotations").is_none());
}

#[tokio::test]
async fn a_missing_layer_is_denied_naming_container_image_and_digest() {
    let s = seeder();
    let repo = unique("onemissing");
    let image = s
        .image(
            &repo,
            "1.4",
            "broken",
            4,
            DOCKER_MANIFEST,
            Breakage {
                missing_layers: &[2],
                missing_config: false,
            },
        )
        .await;
    let srv = server::start(Options::default()).await;
    let response = srv
        .review("/validate", pod_review(&[("app", &image.reference())]))
        .await;
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 403);
    let expected = format!(
        "container app: {}: 1 of 5 blobs missing in ECR: {}",
        image.reference(),
        image.layers[2]
    );
    assert_eq!(message(&response), expected);
    assert!(response["auditAnnotations"]["problems"]
        .as_str()
        .is_some_and(|p| p.contains("1 of 5 blobs missing")));
}

#[tokio::test]
async fn a_missing_config_blob_is_denied() {
    let s = seeder();
    let image = s
        .image(
            &unique("noconfig"),
            "1",
            "noconfig",
            2,
            OCI_MANIFEST,
            Breakage {
                missing_layers: &[],
                missing_config: true,
            },
        )
        .await;
    let srv = server::start(Options::default()).await;
    let response = srv
        .review("/validate", pod_review(&[("app", &image.reference())]))
        .await;
    assert_eq!(response["allowed"], false);
    assert!(
        message(&response).ends_with(&format!("1 of 3 blobs missing in ECR: {}", image.config)),
        "{response}"
    );
}

#[tokio::test]
async fn missing_tag_and_missing_repository_are_denied() {
    let s = seeder();
    let repo = unique("notag");
    let image = s.image(&repo, "1.0", "x", 1, OCI_MANIFEST, INTACT).await;
    let srv = server::start(Options::default()).await;
    let tag = format!("{REGISTRY}/{repo}:9.9");
    let missing_repo = format!("{REGISTRY}/{repo}-absent/app:1");
    let body = pod_review(&[
        ("app", &tag),
        ("other", &missing_repo),
        ("fine", &image.reference()),
    ]);
    let response = srv.review("/validate", body).await;
    assert_eq!(response["allowed"], false);
    let lines: Vec<String> = message(&response).lines().map(str::to_owned).collect();
    assert_eq!(
        lines,
        vec![
            format!("container app: {tag}: tag not found in ECR"),
            format!("container other: {missing_repo}: repository {repo}-absent/app not found in registry 123456789012 (us-east-1)"),
        ]
    );
}

#[tokio::test]
async fn a_missing_digest_is_not_found() {
    let repo = unique("nodigest");
    seeder()
        .image(&repo, "1.0", "x", 1, OCI_MANIFEST, INTACT)
        .await;
    let srv = server::start(Options::default()).await;
    let image = format!("{REGISTRY}/{repo}@sha256:{}", "0".repeat(64));
    let response = srv
        .review("/validate", pod_review(&[("app", &image)]))
        .await;
    assert_eq!(response["allowed"], false);
    assert_eq!(
        message(&response),
        format!("container app: {image}: digest not found in ECR")
    );
}

#[tokio::test]
async fn multi_arch_index_with_attestation_checks_only_wanted_platforms() {
    let s = seeder();
    let repo = unique("index");
    let broken_arm = Breakage {
        missing_layers: &[1],
        missing_config: false,
    };
    let (index, children) = s
        .index(
            &repo,
            "1.0",
            "multi",
            &[
                ("amd64", INTACT),
                ("arm64", broken_arm),
                ("s390x", broken_arm),
            ],
        )
        .await;
    let body = pod_review(&[("app", &index.reference())]);

    // amd64 only: the broken arm64 and s390x children and the attestation are not checked.
    let srv = server::start(Options {
        platforms: vec!["linux/amd64"],
        ..Options::default()
    })
    .await;
    let response = srv.review("/validate", body.clone()).await;
    assert_eq!(response["allowed"], true, "{response}");

    let srv = server::start(Options::default()).await;
    let response = srv.review("/validate", body.clone()).await;
    assert_eq!(response["allowed"], false);
    let arm = &children[1];
    assert_eq!(
        message(&response),
        format!(
            "container app: {} (linux/arm64): 1 of 3 blobs missing in ECR: {}",
            index.reference(),
            arm.layers[1]
        )
    );

    let srv = server::start(Options {
        platforms: vec!["windows/amd64", "linux/ppc64le"],
        ..Options::default()
    })
    .await;
    let response = srv.review("/validate", body).await;
    assert_eq!(response["allowed"], false);
    assert_eq!(
        message(&response),
        format!(
            "container app: {}: no manifest for windows/amd64, linux/ppc64le",
            index.reference()
        )
    );
}

#[tokio::test]
async fn tag_at_digest_checks_the_digest() {
    let s = seeder();
    let repo = unique("tagdigest");
    let good = s
        .image(&repo, "good", "good", 2, OCI_MANIFEST, INTACT)
        .await;
    let bad = s
        .image(
            &repo,
            "bad",
            "bad",
            2,
            OCI_MANIFEST,
            Breakage {
                missing_layers: &[0],
                missing_config: false,
            },
        )
        .await;
    let srv = server::start(Options::default()).await;
    // The tag names the broken image, the digest the intact one: the digest wins.
    let image = format!("{REGISTRY}/{repo}:bad@{}", good.digest);
    let response = srv
        .review("/validate", pod_review(&[("app", &image)]))
        .await;
    assert_eq!(response["allowed"], true, "{response}");
    let image = format!("{REGISTRY}/{repo}:good@{}", bad.digest);
    let response = srv
        .review("/validate", pod_review(&[("app", &image)]))
        .await;
    assert_eq!(response["allowed"], false);
    assert!(message(&response).contains(&bad.layers[0]));
}

#[tokio::test]
async fn more_than_a_hundred_blobs_are_all_checked() {
    let s = seeder();
    let image = s
        .image(
            &unique("big"),
            "1",
            "big",
            150,
            OCI_MANIFEST,
            Breakage {
                missing_layers: &[7, 120],
                missing_config: false,
            },
        )
        .await;
    let srv = server::start(Options::default()).await;
    let response = srv
        .review("/validate", pod_review(&[("app", &image.reference())]))
        .await;
    assert_eq!(response["allowed"], false);
    assert_eq!(
        message(&response),
        format!(
            "container app: {}: 2 of 151 blobs missing in ECR: {}, {}",
            image.reference(),
            image.layers[7],
            image.layers[120]
        )
    );
}

/// Seeds the images of the Pod fixtures under `prefix`, with `app:1.4` broken.
async fn seed_pod_fixture(prefix: &str) {
    let s = seeder();
    let broken = Breakage {
        missing_layers: &[0],
        missing_config: false,
    };
    s.image(
        &format!("{prefix}/app"),
        "1.4",
        "app",
        1,
        OCI_MANIFEST,
        broken,
    )
    .await;
    s.image(
        &format!("{prefix}/worker"),
        "2.0",
        "worker",
        1,
        OCI_MANIFEST,
        INTACT,
    )
    .await;
    s.image(
        &format!("{prefix}/proxy"),
        "1.0",
        "proxy",
        1,
        OCI_MANIFEST,
        INTACT,
    )
    .await;
}

/// Seeds every image of the Deployment fixtures under `prefix`, with `app:1.4` broken.
async fn seed_deployment(prefix: &str, app_broken: bool) {
    let s = seeder();
    let broken = Breakage {
        missing_layers: &[0],
        missing_config: false,
    };
    s.image(
        &format!("{prefix}/app"),
        "1.4",
        "app",
        2,
        OCI_MANIFEST,
        if app_broken { broken } else { INTACT },
    )
    .await;
    s.image(
        &format!("{prefix}/app"),
        "1.4-metrics",
        "metrics",
        1,
        OCI_MANIFEST,
        INTACT,
    )
    .await;
    s.image(
        &format!("{prefix}/app"),
        "1.5",
        "app15",
        1,
        OCI_MANIFEST,
        broken,
    )
    .await;
    s.image(
        &format!("{prefix}/worker"),
        "2.0",
        "worker",
        2,
        DOCKER_MANIFEST,
        INTACT,
    )
    .await;
}

#[tokio::test]
async fn update_that_keeps_a_broken_image_is_allowed_but_a_new_broken_image_is_denied() {
    let prefix = unique("update");
    seed_deployment(&prefix, true).await;
    let srv = server::start(Options::default()).await;
    let create = srv
        .review("/validate", fixture("deployment-create.json", &prefix))
        .await;
    assert_eq!(
        create["allowed"], false,
        "creating with the broken app:1.4 is denied"
    );
    let scale = srv
        .review(
            "/validate",
            fixture("deployment-update-scale.json", &prefix),
        )
        .await;
    assert_eq!(scale["allowed"], true, "a scale keeps app:1.4: {scale}");
    assert!(warnings(&scale).is_empty());
    let bump = srv
        .review(
            "/validate",
            fixture("deployment-update-image.json", &prefix),
        )
        .await;
    assert_eq!(bump["allowed"], false);
    assert!(
        message(&bump).starts_with(&format!(
            "container app: {REGISTRY}/{prefix}/app:1.5: 1 of 2 blobs missing"
        )),
        "{bump}"
    );
}

#[tokio::test]
async fn owned_pod_is_only_recorded_unless_owned_objects_enforce() {
    let prefix = unique("owned");
    seed_pod_fixture(&prefix).await;
    let body = fixture("pod-owned-create.json", &prefix);

    let srv = server::start(Options::default()).await;
    let response = srv.review("/validate", body.clone()).await;
    assert_eq!(response["allowed"], true);
    assert!(warnings(&response).is_empty());
    assert_eq!(response["auditAnnotations"]["decision"], "allowed");
    assert_eq!(response["auditAnnotations"]["mode"], "audit");
    assert!(response["auditAnnotations"]["problems"]
        .as_str()
        .is_some_and(|p| p.contains("container app:")));

    let srv = server::start(Options {
        owned_objects: OwnedObjects::Enforce,
        ..Options::default()
    })
    .await;
    let response = srv.review("/validate", body.clone()).await;
    assert_eq!(response["allowed"], false);

    // The unowned Pod with the same images is denied by default.
    let srv = server::start(Options::default()).await;
    let response = srv
        .review("/validate", fixture("pod-create.json", &prefix))
        .await;
    assert_eq!(response["allowed"], false);
    assert!(message(&response).starts_with("container app:"));
}

#[tokio::test]
async fn each_mode_by_flag_and_by_path() {
    let s = seeder();
    let image = s
        .image(
            &unique("modes"),
            "1",
            "m",
            2,
            OCI_MANIFEST,
            Breakage {
                missing_layers: &[1],
                missing_config: false,
            },
        )
        .await;
    let body = pod_review(&[("app", &image.reference())]);
    for server_mode in [Mode::Enforce, Mode::Warn, Mode::Audit] {
        let srv = server::start(Options {
            mode: server_mode,
            ..Options::default()
        })
        .await;
        for (path, mode) in [
            ("/validate", server_mode),
            ("/validate/enforce", Mode::Enforce),
            ("/validate/warn", Mode::Warn),
            ("/validate/audit", Mode::Audit),
        ] {
            let response = srv.review(path, body.clone()).await;
            let w = warnings(&response);
            match mode {
                Mode::Enforce => {
                    assert_eq!(response["allowed"], false, "{path}");
                    assert!(message(&response).contains("1 of 3 blobs missing in ECR"));
                }
                Mode::Warn => {
                    assert_eq!(response["allowed"], true, "{path}");
                    assert_eq!(w.len(), 1);
                    assert!(
                        w[0].starts_with("container app:")
                            && w[0].contains("1 of 3 blobs missing in ECR: sha256:"),
                        "{w:?}"
                    );
                    assert!(w[0].chars().count() <= 256);
                }
                Mode::Audit => {
                    assert_eq!(response["allowed"], true, "{path}");
                    assert!(w.is_empty());
                    assert_eq!(response["auditAnnotations"]["mode"], "audit");
                }
            }
        }
    }
}

#[tokio::test]
async fn dry_run_is_answered_the_same_way() {
    let prefix = unique("dryrun");
    seed_pod_fixture(&prefix).await;
    let srv = server::start(Options::default()).await;
    let real = srv
        .review("/validate", fixture("pod-create.json", &prefix))
        .await;
    let dry = srv
        .review("/validate", fixture("pod-create-dryrun.json", &prefix))
        .await;
    assert_eq!(real["allowed"], false);
    assert_eq!(dry["allowed"], false);
    assert_eq!(message(&real), message(&dry));
}

#[tokio::test]
async fn objects_without_new_ecr_images_are_allowed_untouched() {
    let srv = server::start(Options::default()).await;
    // Nothing is seeded under this prefix: any ECR lookup would find nothing and deny.
    let prefix = unique("untouched");
    for name in [
        "pod-delete.json",
        "configmap-create.json",
        "pod-mirror-create.json",
        "pod-public-images-create.json",
    ] {
        let response = srv.review("/validate", fixture(name, &prefix)).await;
        assert_eq!(response["allowed"], true, "{name}: {response}");
        assert!(warnings(&response).is_empty(), "{name}");
    }
    let eph = srv
        .review(
            "/validate",
            fixture("pod-ephemeralcontainers-update.json", &prefix),
        )
        .await;
    assert_eq!(
        eph["allowed"], false,
        "only the new debug container is checked, and it is missing"
    );
    assert_eq!(
        message(&eph),
        format!("ephemeral container debugger: {REGISTRY}/{prefix}/debug:1.0: repository {prefix}/debug not found in registry 123456789012 (us-east-1)")
    );
}

#[tokio::test]
async fn every_workload_kind_is_checked() {
    let prefix = unique("kinds");
    let srv = server::start(Options::default()).await;
    let s = seeder();
    let broken = Breakage {
        missing_layers: &[0],
        missing_config: false,
    };
    for repo in ["app", "worker", "db", "agent", "report", "legacy"] {
        s.image(
            &format!("{prefix}/{repo}"),
            "placeholder",
            repo,
            1,
            OCI_MANIFEST,
            INTACT,
        )
        .await;
    }
    for (file, image) in [
        ("statefulset-create.json", "db:16"),
        ("daemonset-create.json", "agent:3.1"),
        ("job-create.json", "worker:2.0"),
        ("cronjob-create.json", "report:0.9"),
        ("replicationcontroller-create.json", "legacy:1.0"),
    ] {
        let (repo, tag) = image.split_once(':').expect("image");
        let response = srv.review("/validate", fixture(file, &prefix)).await;
        assert_eq!(
            response["allowed"], false,
            "{file}: tag {tag} not pushed yet"
        );
        assert!(
            message(&response).contains(&format!("{prefix}/{repo}:{tag}: tag not found")),
            "{file}: {response}"
        );
        s.image(
            &format!("{prefix}/{repo}"),
            tag,
            &format!("{file}-{tag}"),
            1,
            OCI_MANIFEST,
            INTACT,
        )
        .await;
    }
    s.image(
        &format!("{prefix}/worker"),
        "2.0",
        "worker",
        1,
        OCI_MANIFEST,
        INTACT,
    )
    .await;
    for file in [
        "statefulset-create.json",
        "daemonset-create.json",
        "job-create.json",
        "cronjob-create.json",
        "replicationcontroller-create.json",
    ] {
        let response = srv.review("/validate", fixture(file, &prefix)).await;
        assert_eq!(response["allowed"], true, "{file}: {response}");
    }
    s.image(
        &format!("{prefix}/app"),
        "1.4",
        "rs",
        1,
        OCI_MANIFEST,
        broken,
    )
    .await;
    let rs = srv
        .review(
            "/validate",
            fixture("replicaset-owned-create.json", &prefix),
        )
        .await;
    assert_eq!(rs["allowed"], true, "owned ReplicaSet is recorded only");
    assert!(rs["auditAnnotations"]["problems"]
        .as_str()
        .is_some_and(|p| p.contains("1 of 2 blobs missing")));
}

#[tokio::test]
async fn pull_through_repository_not_yet_filled_only_warns() {
    let srv = server::start(Options {
        pull_through_prefixes: vec!["docker-hub/".into()],
        ..Options::default()
    })
    .await;
    let image = format!("{REGISTRY}/docker-hub/{}/nginx:1.27", unique("ptc"));
    let response = srv
        .review("/validate", pod_review(&[("web", &image)]))
        .await;
    assert_eq!(response["allowed"], true);
    let w = warnings(&response);
    assert_eq!(w.len(), 1);
    assert!(
        w[0].contains("not found in registry") && w[0].contains("pull-through"),
        "{w:?}"
    );
}

#[tokio::test]
async fn invalid_reference_is_a_problem_of_its_own() {
    let srv = server::start(Options::default()).await;
    let response = srv
        .review(
            "/validate",
            pod_review(&[("app", "Registry.io/UPPER/case:tag")]),
        )
        .await;
    assert_eq!(response["allowed"], false);
    assert!(
        message(&response)
            .starts_with("container app: invalid image reference \"Registry.io/UPPER/case:tag\""),
        "{response}"
    );
}

/// A TCP listener that accepts and never answers: ECR hanging. It counts the connections
/// it accepted, so a test can wait until a request is stuck on ECR instead of sleeping.
struct Blackhole {
    url: String,
    accepted: Arc<AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

async fn blackhole() -> Blackhole {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    Blackhole {
        url,
        accepted,
        _task: task,
    }
}

impl Blackhole {
    /// Returns once `n` connections (ECR calls) have arrived; a hang guard, not a timing.
    async fn wait_for_calls(&self, n: usize) {
        let arrived = async {
            while self.accepted.load(Ordering::SeqCst) < n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), arrived)
            .await
            .expect("the ECR calls never arrived");
    }
}

/// A webhook whose ECR endpoint accepts connections and never answers, with `timeout`.
async fn with_hanging_registry(timeout: Duration) -> (server::TestServer, Blackhole) {
    let hanging = blackhole().await;
    let srv = server::start(Options {
        timeout,
        endpoint: Some(hanging.url.clone()),
        ..Options::default()
    })
    .await;
    (srv, hanging)
}

#[tokio::test]
async fn unreachable_ecr_yields_the_on_error_decision_inside_the_budget() {
    let hanging = blackhole().await;
    let image = format!("{REGISTRY}/team/app:1.4");
    let body = pod_review(&[("app", &image)]);
    for endpoint in [hanging.url.clone(), common::refused_endpoint()] {
        for (on_error, allowed) in [(OnError::Allow, true), (OnError::Deny, false)] {
            let timeout = Duration::from_millis(1500);
            let srv = server::start(Options {
                on_error,
                timeout,
                endpoint: Some(endpoint.clone()),
                ..Options::default()
            })
            .await;
            // That the answer comes at the deadline is shown under the paused clock
            // (engine_seam.rs); here, that it is the on-error decision with its reason.
            let response = srv.review("/validate", body.clone()).await;
            assert_eq!(response["allowed"], allowed, "{endpoint}: {response}");
            let text = if allowed {
                warnings(&response).join("\n")
            } else {
                message(&response)
            };
            assert!(
                text.starts_with(&format!(
                    "container app: ECR could not be asked about {image}:"
                )),
                "{text}"
            );
        }
    }
}

#[tokio::test]
async fn the_api_server_timeout_parameter_shortens_the_budget() {
    let (srv, _hanging) = with_hanging_registry(Duration::from_secs(3)).await;
    let response = srv
        .review(
            "/validate?timeout=1s",
            pod_review(&[("app", &format!("{REGISTRY}/team/app:1"))]),
        )
        .await;
    assert_eq!(response["allowed"], true);
    // The budget the engine had is in the reason: timeout=1s leaves 0.5s, not --timeout's 3s.
    let warning = &warnings(&response)[0];
    let budget_ms: u64 = warning
        .split("no answer from ECR within ")
        .nth(1)
        .and_then(|rest| rest.strip_suffix("ms"))
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("no budget in milliseconds in {warning:?}"));
    assert!(budget_ms <= 500, "{warning}");
}

#[tokio::test]
async fn bad_requests_get_clear_http_errors() {
    let srv = server::start(Options::default()).await;
    let (status, text) = srv.post("/validate", "{not json").await;
    assert_eq!(status, 400);
    assert!(
        text.starts_with("malformed AdmissionReview:") && text.trim_end().lines().count() == 1,
        "{text}"
    );
    let (status, text) = srv
        .post(
            "/validate",
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
        )
        .await;
    assert_eq!(
        (status, text.trim_end()),
        (400, "AdmissionReview has no request")
    );
    let (status, _) = srv.post("/validate", vec![b' '; 9 * 1024 * 1024]).await;
    assert_eq!(status, 413);
    let (status, _) = srv.post("/validate/strict", pod_review(&[])).await;
    assert_eq!(status, 404);
    let (status, text) = srv.post("/validate", "[1,2,3]").await;
    assert_eq!(status, 400, "{text}");
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let (status, _) = srv.post("/validate", deep).await;
    assert_eq!(status, 400);
    // The server is still serving.
    let response = srv
        .review("/validate", fixture("configmap-create.json", "x"))
        .await;
    assert_eq!(response["allowed"], true);
}

#[tokio::test]
async fn http1_keep_alive_and_http2_both_work() {
    let srv = server::start(Options::default()).await;
    let body = fixture("configmap-create.json", "x");
    for (client, version) in [
        (
            server::client(&srv.cert_pem, true),
            reqwest::Version::HTTP_11,
        ),
        (
            server::client(&srv.cert_pem, false),
            reqwest::Version::HTTP_2,
        ),
    ] {
        // Several requests over the client's pooled keep-alive connection.
        for _ in 0..5 {
            let response = client
                .post(format!("{}/validate", srv.url))
                .body(body.clone())
                .send()
                .await
                .expect("send");
            assert_eq!(response.version(), version);
            assert_eq!(response.status(), 200);
            let review: serde_json::Value = response.json().await.expect("json");
            assert_eq!(review["response"]["allowed"], true);
        }
    }
}

/// One HTTP/2 stream still waiting on ECR must not hold up the others on its connection.
#[tokio::test]
async fn a_waiting_http2_stream_does_not_hold_up_the_others_on_its_connection() {
    // A budget far longer than the quick streams can take, however loaded the machine; the
    // waiting stream is answered (unknown, allowed with a warning) when it ends.
    let (srv, hanging) = with_hanging_registry(Duration::from_secs(10)).await;
    let client = server::client(&srv.cert_pem, false);
    let url = format!("{}/validate", srv.url);
    let send = |body: String| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let response = client.post(url).body(body).send().await.expect("send");
            assert_eq!(response.version(), reqwest::Version::HTTP_2);
            assert_eq!(response.status(), 200);
            response.json::<serde_json::Value>().await.expect("json")
        }
    };
    // The connection first, then a stream that waits on the unanswering registry.
    send(fixture("configmap-create.json", "first")).await;
    let slow = tokio::spawn(send(pod_review(&[(
        "app",
        &format!("{REGISTRY}/team/app:1"),
    )])));
    hanging.wait_for_calls(1).await;
    let quick: Vec<_> = (0..20)
        .map(|i| send(fixture("configmap-create.json", &format!("q{i}"))))
        .collect();
    for review in futures::future::join_all(quick).await {
        assert_eq!(review["response"]["allowed"], true);
    }
    assert!(!slow.is_finished(), "the waiting stream was answered early");
    let slow = slow.await.expect("join");
    assert_eq!(slow["response"]["allowed"], true, "{slow}");
    assert!(!warnings(&slow["response"]).is_empty(), "{slow}");
}

#[tokio::test]
async fn health_and_readiness_and_draining() {
    let (srv, hanging) = with_hanging_registry(Duration::from_millis(1500)).await;
    let admin = reqwest::Client::new();
    let get = |path: &'static str| {
        let admin = admin.clone();
        let url = format!("{}{path}", srv.admin_url);
        async move { admin.get(url).send().await.map(|r| r.status().as_u16()) }
    };
    assert_eq!(get("/healthz").await.ok(), Some(200));
    assert_eq!(get("/readyz").await.ok(), Some(200));
    assert_eq!(get("/metrics").await.ok(), Some(200));
    // Requests in flight when shutdown starts still get their answers, over HTTP/1.1 and
    // over HTTP/2 (whose streams run inside their connection's task).
    let in_flight: Vec<_> = [true, false]
        .into_iter()
        .map(|http1_only| {
            let client = server::client(&srv.cert_pem, http1_only);
            let url = format!("{}/validate", srv.url);
            // Two repositories: two ECR calls, one per request, to wait for.
            let image = format!("{REGISTRY}/team/h{}:1", u8::from(http1_only));
            tokio::spawn(async move {
                let response = client
                    .post(url)
                    .body(pod_review(&[("app", &image)]))
                    .send()
                    .await
                    .expect("send");
                (response.version(), response.status().as_u16())
            })
        })
        .collect();
    hanging.wait_for_calls(2).await;
    srv.running.shutdown();
    assert!(!srv.running.health.is_ready());
    let answers: Vec<_> = futures::future::join_all(in_flight)
        .await
        .into_iter()
        .map(|joined| joined.expect("join"))
        .collect();
    assert_eq!(
        answers,
        [
            (reqwest::Version::HTTP_11, 200),
            (reqwest::Version::HTTP_2, 200)
        ]
    );
    srv.running.wait().await;
}

#[tokio::test]
async fn a_client_that_stalls_in_its_headers_is_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let limits = ecr_preflight::server::Limits {
        header_read_timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let srv = server::start(Options {
        limits,
        ..Options::default()
    })
    .await;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(srv.cert_pem.as_bytes()) {
        roots.add(cert.expect("cert")).expect("root");
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(srv.running.webhook_addr.expect("webhook listener"))
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = connector.connect(name, tcp).await.expect("handshake");
    tls.write_all(b"POST /validate HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let mut buf = Vec::new();
    // The server closes the connection (possibly with a 408) instead of waiting forever.
    let read = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "still connected after 5 s");
    // A lower bound only: a loaded machine makes the close later, never earlier, so this
    // cannot fail but for a server that closes before its header timeout.
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(400),
        "closed too early: {elapsed:?}"
    );
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
}

/// The value of the sample whose name and labels are exactly `series` on `/metrics`.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_count_real_admissions() {
    let s = seeder();
    let repo = unique("metrics");
    let good = s
        .image(
            &format!("{repo}/good"),
            "1",
            "good",
            2,
            OCI_MANIFEST,
            INTACT,
        )
        .await;
    let bad = s
        .image(
            &format!("{repo}/bad"),
            "1",
            "bad",
            3,
            OCI_MANIFEST,
            Breakage {
                missing_layers: &[0, 2],
                missing_config: false,
            },
        )
        .await;
    let srv = server::start(Options::default()).await;
    assert_eq!(
        srv.review("/validate", pod_review(&[("app", &good.reference())]))
            .await["allowed"],
        true
    );
    assert_eq!(
        srv.review("/validate", pod_review(&[("app", &good.reference())]))
            .await["allowed"],
        true
    );
    assert_eq!(
        srv.review(
            "/validate",
            pod_review(&[("app", &bad.reference()), ("web", "nginx:1.27")])
        )
        .await["allowed"],
        false
    );
    assert_eq!(
        srv.review(
            "/validate/warn",
            fixture("deployment-update-scale.json", &repo)
        )
        .await["allowed"],
        true
    );
    assert_eq!(srv.post("/validate", "{").await.0, 400);

    let response = reqwest::get(format!("{}/metrics", srv.admin_url))
        .await
        .expect("scrape");
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let text = response.text().await.expect("body");
    let expect = |series: &str, value: f64| {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}")
    };
    expect(
        r#"ecr_preflight_admission_requests_total{kind="Pod",operation="CREATE",decision="allowed"}"#,
        2.0,
    );
    expect(
        r#"ecr_preflight_admission_requests_total{kind="Pod",operation="CREATE",decision="denied"}"#,
        1.0,
    );
    expect(
        r#"ecr_preflight_admission_requests_total{kind="Deployment",operation="UPDATE",decision="allowed"}"#,
        1.0,
    );
    expect(
        r#"ecr_preflight_admission_requests_total{kind="other",operation="other",decision="error"}"#,
        1.0,
    );
    expect("ecr_preflight_admission_duration_seconds_count", 5.0);
    expect(r#"ecr_preflight_images_checked_total{result="ok"}"#, 2.0);
    expect(
        r#"ecr_preflight_images_checked_total{result="missing"}"#,
        1.0,
    );
    expect(
        r#"ecr_preflight_images_checked_total{result="skipped"}"#,
        1.0,
    );
    expect("ecr_preflight_missing_blobs_total", 2.0);
    // good and bad: one lookup and one blob check each; the second good admission is cached.
    expect(
        r#"ecr_preflight_ecr_requests_total{source="admission",operation="BatchGetImage",outcome="success"}"#,
        2.0,
    );
    expect(
        r#"ecr_preflight_ecr_requests_total{source="admission",operation="BatchCheckLayerAvailability",outcome="success"}"#,
        2.0,
    );
    expect(
        r#"ecr_preflight_ecr_request_duration_seconds_count{operation="BatchGetImage"}"#,
        2.0,
    );
    expect(
        r#"ecr_preflight_cache_requests_total{cache="image",result="hit"}"#,
        1.0,
    );
    expect(r#"ecr_preflight_build_info{version="0.1.0"}"#, 1.0);
    assert!(text.trim_end().ends_with("# EOF"));
    // Bounded labels: no image, namespace or object name anywhere in the metrics.
    assert!(!text.contains(&repo) && !text.contains("shop") && !text.contains("nginx"));
}

#[tokio::test]
async fn each_cache_lookup_counts_once() {
    let s = seeder();
    let repo = unique("cachecount");
    // A config blob and two layers: three blobs.
    let image = s
        .image(&format!("{repo}/app"), "1", "cc", 2, OCI_MANIFEST, INTACT)
        .await;
    let srv = server::start(Options::default()).await;
    for reference in [image.reference(), image.reference(), image.by_digest()] {
        let response = srv
            .review("/validate", pod_review(&[("app", &reference)]))
            .await;
        assert_eq!(response["allowed"], true, "{response}");
    }
    let text = reqwest::get(format!("{}/metrics", srv.admin_url))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    let count = |cache: &str, result: &str| {
        let series =
            format!(r#"ecr_preflight_cache_requests_total{{cache="{cache}",result="{result}"}}"#);
        sample(&text, &series).unwrap_or_else(|| panic!("{series} in\n{text}"))
    };
    // By tag, cold: the image, its tag and its three blobs each missed once (the manifest is
    // not looked up: its digest is not known yet). By tag again: the image is known intact.
    // By digest: a new reference, whose manifest and blobs are cached.
    assert_eq!((count("image", "hit"), count("image", "miss")), (1.0, 2.0));
    assert_eq!((count("tag", "hit"), count("tag", "miss")), (0.0, 1.0));
    assert_eq!(
        (count("manifest", "hit"), count("manifest", "miss")),
        (1.0, 0.0)
    );
    assert_eq!((count("blob", "hit"), count("blob", "miss")), (3.0, 3.0));
}

#[tokio::test]
async fn connections_past_the_limit_wait_until_one_closes() {
    let limits = ecr_preflight::server::Limits {
        max_connections: 2,
        ..Default::default()
    };
    let srv = server::start(Options {
        limits,
        ..Options::default()
    })
    .await;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(srv.cert_pem.as_bytes()) {
        roots.add(cert.expect("cert")).expect("root");
    }
    let config = std::sync::Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let connect = || {
        let connector = tokio_rustls::TlsConnector::from(config.clone());
        let addr = srv.running.webhook_addr.expect("webhook listener");
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.expect("tcp");
            let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
            connector.connect(name, tcp).await
        }
    };
    let first = connect().await.expect("first");
    let _second = connect().await.expect("second");
    let third = tokio::spawn(connect());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !third.is_finished(),
        "a third connection was served past the limit of 2"
    );
    drop(first);
    let third = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .expect("served once a slot frees");
    assert!(third.expect("join").is_ok());
}
