//! The decision table, cell by cell, and the wording and limits of messages.

use ecr_preflight::decision::{
    decide, ContainerFinding, Disposition, Mode, OnError, MAX_WARNINGS, MAX_WARNINGS_BYTES,
    MAX_WARNING_CHARS,
};
use ecr_preflight::findings::{Finding, ImageReport, NotFound, PlatformCheck, PlatformGap};
use ecr_preflight::manifest::Platform;
use ecr_preflight::platforms::{Landing, NodePlatform};
use ecr_preflight::workload::ContainerKind;

const IMAGE: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app:1.4";

fn d(n: u8) -> String {
    format!("sha256:{}", format!("{n:02x}").repeat(32))
}

fn report(finding: Finding) -> ImageReport {
    ImageReport::new(IMAGE.to_owned(), finding, false)
}

fn checked(
    platform: Option<&str>,
    total: usize,
    missing: Vec<String>,
    archived: Vec<String>,
) -> Finding {
    Finding::Checked(vec![PlatformCheck {
        platform: platform.map(|p| p.parse::<Platform>().expect("platform")),
        total,
        missing,
        archived,
        unanswered: 0,
        manifest_missing: None,
        unreadable: None,
    }])
}

fn ok() -> ImageReport {
    report(checked(None, 3, vec![], vec![]))
}
fn missing() -> ImageReport {
    report(checked(
        Some("linux/arm64"),
        7,
        vec![d(0xab), d(0xcd)],
        vec![],
    ))
}
fn unknown() -> ImageReport {
    report(Finding::Unknown(
        "AccessDeniedException (ecr:BatchCheckLayerAvailability)".into(),
    ))
}

fn run(mode: Mode, on_error: OnError, r: &ImageReport) -> ecr_preflight::decision::Verdict {
    let f = ContainerFinding {
        container: "app",
        kind: ContainerKind::Container,
        report: r,
    };
    decide(mode, on_error, &[f])
}

/// (mode, on_error, report, expected disposition, warnings expected, message expected)
#[test]
fn every_cell_of_the_table() {
    use Disposition::*;
    let broken_kinds = [
        missing(),
        report(checked(Some("linux/amd64"), 4, vec![], vec![d(1)])),
        report(Finding::NotFound(NotFound::Tag("1.4".into()))),
        report(Finding::NoPlatform {
            wanted: vec!["linux/amd64".parse().expect("p")],
        }),
        report(Finding::InvalidReference("invalid tag".into())),
    ];
    for broken in &broken_kinds {
        for on_error in [OnError::Allow, OnError::Deny] {
            let v = run(Mode::Enforce, on_error, broken);
            assert_eq!(v.disposition, Denied, "{broken:?}");
            assert!(!v.allowed());
            assert!(v
                .message
                .as_deref()
                .is_some_and(|m| m.contains("container app")));
            assert!(v.warnings.is_empty());
            let v = run(Mode::Warn, on_error, broken);
            assert_eq!(
                (v.disposition, v.message.is_none(), v.warnings.len()),
                (Warned, true, 1)
            );
            let v = run(Mode::Audit, on_error, broken);
            assert_eq!(
                (v.disposition, v.message.is_none(), v.warnings.len()),
                (Allowed, true, 0)
            );
            assert_eq!(v.problems.len(), 1);
            assert!(v.audit_annotations.contains_key("problems"));
        }
    }
    let u = unknown();
    let v = run(Mode::Enforce, OnError::Allow, &u);
    assert_eq!(
        (v.disposition, v.message.is_none(), v.warnings.len()),
        (Warned, true, 1)
    );
    let v = run(Mode::Enforce, OnError::Deny, &u);
    assert_eq!(v.disposition, Denied);
    assert!(v
        .message
        .as_deref()
        .is_some_and(|m| m.contains("ECR could not be asked")));
    let v = run(Mode::Warn, OnError::Deny, &u);
    assert_eq!((v.disposition, v.warnings.len()), (Warned, 1));
    let v = run(Mode::Audit, OnError::Deny, &u);
    assert_eq!((v.disposition, v.warnings.len()), (Allowed, 0));

    for mode in [Mode::Enforce, Mode::Warn, Mode::Audit] {
        for on_error in [OnError::Allow, OnError::Deny] {
            for good in [ok(), report(Finding::Skipped)] {
                let v = run(mode, on_error, &good);
                assert_eq!(v.disposition, Allowed);
                assert!(v.warnings.is_empty() && v.message.is_none() && v.problems.is_empty());
                assert!(v.audit_annotations.is_empty());
            }
        }
    }
}

#[test]
fn messages_name_container_image_platform_and_digests() {
    let v = run(Mode::Enforce, OnError::Allow, &missing());
    assert_eq!(
        v.message.as_deref(),
        Some(
            format!(
                "container app: {IMAGE} (linux/arm64): 2 of 7 blobs missing in ECR: {}, {}",
                d(0xab),
                d(0xcd)
            )
            .as_str()
        )
    );
    let v = run(Mode::Warn, OnError::Allow, &missing());
    assert_eq!(
        v.warnings,
        vec![format!("container app: {IMAGE} (linux/arm64): 2 of 7 blobs missing in ECR: sha256:abababababab…, sha256:cdcdcdcdcdcd…")]
    );
    let cases = [
        (Finding::NotFound(NotFound::Tag("1.4".into())), format!("container app: {IMAGE}: tag not found in ECR")),
        (
            Finding::NotFound(NotFound::Repository {
                repository: "team/app".into(),
                registry: "123456789012 (us-east-1)".into(),
            }),
            format!("container app: {IMAGE}: repository team/app not found in registry 123456789012 (us-east-1)"),
        ),
        (
            Finding::NoPlatform {
                wanted: vec!["linux/amd64".parse().expect("p"), "linux/arm64".parse().expect("p")],
            },
            format!("container app: {IMAGE}: no manifest for linux/amd64, linux/arm64"),
        ),
        (
            unknown().finding,
            format!("container app: ECR could not be asked about {IMAGE}: AccessDeniedException (ecr:BatchCheckLayerAvailability)"),
        ),
        (
            checked(Some("linux/amd64"), 3, vec![], vec![d(1)]),
            format!("container app: {IMAGE} (linux/amd64): image archived; restore it before pulling"),
        ),
    ];
    for (finding, expected) in cases {
        let v = run(Mode::Warn, OnError::Allow, &report(finding));
        assert_eq!(v.warnings, vec![expected]);
    }
}

#[test]
fn init_and_ephemeral_containers_are_named_as_such() {
    let r = missing();
    for (kind, label) in [
        (ContainerKind::Init, "init container sidecar:"),
        (ContainerKind::Ephemeral, "ephemeral container sidecar:"),
    ] {
        let f = ContainerFinding {
            container: "sidecar",
            kind,
            report: &r,
        };
        let v = decide(Mode::Warn, OnError::Allow, &[f]);
        assert!(
            v.warnings.first().is_some_and(|w| w.starts_with(label)),
            "{:?}",
            v.warnings
        );
    }
}

#[test]
fn pull_through_repository_not_found_only_warns_even_in_enforce() {
    let mut r = report(Finding::NotFound(NotFound::Repository {
        repository: "docker-hub/library/nginx".into(),
        registry: "123456789012 (us-east-1)".into(),
    }));
    r.pull_through = true;
    let v = run(Mode::Enforce, OnError::Deny, &r);
    assert_eq!(v.disposition, Disposition::Warned);
    assert!(v
        .warnings
        .first()
        .is_some_and(|w| w.contains("pull-through")));
}

#[test]
fn warnings_stay_within_the_api_server_limits() {
    let long_image = format!(
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/{}:1",
        "very-long-path/".repeat(20)
    );
    let reports: Vec<ImageReport> = (0..100)
        .map(|i| {
            let finding = checked(Some("linux/amd64"), 10, (0..10).map(d).collect(), vec![]);
            ImageReport::new(format!("{long_image}{i}"), finding, false)
        })
        .collect();
    let names: Vec<String> = (0..100).map(|i| format!("c{i}")).collect();
    let findings: Vec<ContainerFinding<'_>> = reports
        .iter()
        .zip(&names)
        .map(|(r, n)| ContainerFinding {
            container: n,
            kind: ContainerKind::Container,
            report: r,
        })
        .collect();
    let v = decide(Mode::Warn, OnError::Allow, &findings);
    assert!(v.warnings.len() <= MAX_WARNINGS, "{}", v.warnings.len());
    assert!(v
        .warnings
        .iter()
        .all(|w| w.chars().count() <= MAX_WARNING_CHARS));
    assert!(v.warnings.iter().map(String::len).sum::<usize>() <= MAX_WARNINGS_BYTES);
    let last = v.warnings.last().expect("summary");
    let shown = v.warnings.len() - 1;
    assert_eq!(last, &format!("… and {} more", 100 - shown));
    let denied = decide(Mode::Enforce, OnError::Allow, &findings);
    let message = denied.message.expect("denied");
    assert!(
        message.ends_with("… and 68 more"),
        "{}",
        &message[message.len() - 40..]
    );
}

#[test]
fn the_restore_command_names_the_image_as_referenced() {
    use ecr_preflight::decision::restore_command;
    let digest = format!("sha256:{}", "ab".repeat(32));
    assert_eq!(
        restore_command(&format!("210987654321.dkr.ecr.eu-west-1.amazonaws.com/team/app@{digest}")).as_deref(),
        Some(format!("aws ecr update-image-storage-class --registry-id 210987654321 --region eu-west-1 --repository-name team/app --image-id imageDigest={digest} --target-storage-class STANDARD").as_str())
    );
    assert!(
        restore_command("123456789012.dkr.ecr.us-east-1.amazonaws.com/app:1")
            .is_some_and(|c| c.contains("--image-id imageTag=1 "))
    );
    assert_eq!(restore_command("nginx:1.27"), None);
    assert_eq!(restore_command("not a reference"), None);
}

fn landing(platform: &str, nodes: usize, pools: &[&str]) -> Landing {
    let (os, arch) = platform.split_once('/').expect("os/arch");
    Landing {
        platform: NodePlatform {
            os: os.into(),
            architecture: arch.into(),
        },
        nodes,
        pools: pools.iter().map(|p| (*p).to_owned()).collect(),
        bound: None,
    }
}

fn platforms(list: &[&str]) -> Vec<Platform> {
    list.iter().map(|p| p.parse().expect("platform")).collect()
}

/// The problem line of an intact index that lacks platforms the pod can land on.
fn gap_line(landings: &[Landing], available: &[&str]) -> Option<String> {
    let mut r = ok();
    r.gap = PlatformGap::of(landings, &platforms(available));
    let verdict = run(Mode::Enforce, OnError::Allow, &r);
    assert_eq!(
        r.outcome().as_str(),
        if r.gap.is_some() { "no_platform" } else { "ok" }
    );
    verdict.problems.first().map(|p| p.line.clone())
}

#[test]
fn a_platform_the_pod_can_land_on_without_a_manifest_is_no_platform_with_the_way_out() {
    let who = format!("container app: {IMAGE}");
    type Case<'a> = (&'a str, Vec<Landing>, Vec<&'a str>, Option<String>);
    let cases: Vec<Case> = vec![
        ("the issue's example", vec![landing("linux/amd64", 2, &[]), landing("linux/arm64", 3, &["general"])], vec!["linux/amd64"],
            Some(format!("{who}: could be scheduled on linux/arm64 nodes (3 nodes, NodePool general), image has only linux/amd64: publish linux/arm64 or add nodeSelector kubernetes.io/arch: amd64"))),
        ("every platform covered (a variant does not matter)", vec![landing("linux/amd64", 2, &[]), landing("linux/arm64", 1, &[])], vec!["linux/amd64", "linux/arm64/v8"], None),
        ("a windows node the pod tolerates", vec![landing("linux/amd64", 2, &[]), landing("windows/amd64", 1, &[])], vec!["linux/amd64"],
            Some(format!("{who}: could be scheduled on windows/amd64 nodes (1 node), image has only linux/amd64: publish windows/amd64 or add nodeSelector kubernetes.io/os: linux"))),
        ("two missing, two available", vec![landing("linux/amd64", 1, &[]), landing("linux/arm64", 1, &[]), landing("linux/ppc64le", 0, &["power"]), landing("linux/s390x", 2, &[])], vec!["linux/amd64", "linux/arm64"],
            Some(format!("{who}: could be scheduled on linux/ppc64le nodes (NodePool power) and linux/s390x nodes (2 nodes), image has only linux/amd64, linux/arm64: publish linux/ppc64le and linux/s390x or add a required node affinity on kubernetes.io/arch In [amd64, arm64]"))),
        ("a windows node and an arm64 one", vec![landing("linux/arm64", 1, &[]), landing("windows/amd64", 1, &[])], vec!["linux/amd64"],
            Some(format!("{who}: could be scheduled on linux/arm64 nodes (1 node) and windows/amd64 nodes (1 node), image has only linux/amd64: publish linux/arm64 and windows/amd64 or add nodeSelector kubernetes.io/os: linux, kubernetes.io/arch: amd64"))),
    ];
    for (name, landings, available, want) in cases {
        assert_eq!(gap_line(&landings, &available), want, "{name}");
    }
}

#[test]
fn a_gap_is_denied_in_enforce_and_warned_in_warn_beside_the_blob_problems() {
    let mut r = missing();
    r.gap = PlatformGap::of(
        &[landing("linux/s390x", 1, &[])],
        &platforms(&["linux/arm64"]),
    );
    assert_eq!(
        r.outcome().as_str(),
        "missing",
        "a missing blob stays the outcome"
    );
    let v = run(Mode::Enforce, OnError::Allow, &r);
    assert_eq!(v.disposition, Disposition::Denied);
    assert_eq!(v.problems.len(), 2, "{:?}", v.problems);
    assert!(
        v.problems[1].line.contains("linux/s390x"),
        "{:?}",
        v.problems
    );
    let mut fine = ok();
    fine.gap = r.gap.clone();
    assert_eq!(
        run(Mode::Warn, OnError::Allow, &fine).disposition,
        Disposition::Warned
    );
    let mut unknown = unknown();
    unknown.gap = r.gap.clone();
    assert_eq!(unknown.outcome().as_str(), "no_platform");
    assert_eq!(
        run(Mode::Enforce, OnError::Allow, &unknown).disposition,
        Disposition::Denied
    );
}
