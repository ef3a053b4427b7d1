//! The image reference grammar, case by case.

use ecr_preflight::image::{ImageId, ImageTarget, Reference, ReferenceError};

const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// (registry, repository, tag, digest)
type Parts = (String, String, Option<String>, Option<String>);
/// (registry, repository, tag, digest) as expected.
type Expected<'a> = (&'a str, &'a str, Option<&'a str>, Option<&'a str>);
type ErrorCheck = fn(&ReferenceError) -> bool;

fn parts(s: &str) -> Parts {
    let r = Reference::parse(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"));
    (r.registry, r.repository, r.tag, r.digest)
}

#[test]
fn valid_references_normalise_like_docker() {
    let digest = Some(D.to_owned());
    let long_tag = "t".repeat(128);
    let cases: Vec<(String, Expected<'_>)> = vec![
        ("nginx".into(), ("docker.io", "library/nginx", None, None)),
        (
            "nginx:1.27".into(),
            ("docker.io", "library/nginx", Some("1.27"), None),
        ),
        (
            "library/nginx".into(),
            ("docker.io", "library/nginx", None, None),
        ),
        (
            "docker.io/nginx".into(),
            ("docker.io", "library/nginx", None, None),
        ),
        (
            "bitnami/redis:7".into(),
            ("docker.io", "bitnami/redis", Some("7"), None),
        ),
        ("localhost/app".into(), ("localhost", "app", None, None)),
        (
            "localhost:5000/app:dev".into(),
            ("localhost:5000", "app", Some("dev"), None),
        ),
        (
            "registry.example.com:5000/team/app/api:v1".into(),
            (
                "registry.example.com:5000",
                "team/app/api",
                Some("v1"),
                None,
            ),
        ),
        (
            "[::1]:5000/app:1".into(),
            ("[::1]:5000", "app", Some("1"), None),
        ),
        (
            "[2001:db8::1]/app".into(),
            ("[2001:db8::1]", "app", None, None),
        ),
        ("Example.COM/app".into(), ("Example.COM", "app", None, None)),
        (
            "ghcr.io/org/a.b_c__d-e--f:tag_1.2-3".into(),
            ("ghcr.io", "org/a.b_c__d-e--f", Some("tag_1.2-3"), None),
        ),
        (
            format!("nginx@{D}"),
            ("docker.io", "library/nginx", None, Some(D)),
        ),
        (
            format!("nginx:1.27@{D}"),
            ("docker.io", "library/nginx", Some("1.27"), Some(D)),
        ),
        (
            format!("123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app:1.4@{D}"),
            (
                "123456789012.dkr.ecr.us-east-1.amazonaws.com",
                "team/app",
                Some("1.4"),
                Some(D),
            ),
        ),
        (
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com/a/b/c/d".into(),
            (
                "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
                "a/b/c/d",
                None,
                None,
            ),
        ),
        (
            "a:_tag".into(),
            ("docker.io", "library/a", Some("_tag"), None),
        ),
        (
            format!("x:{long_tag}"),
            ("docker.io", "library/x", Some(long_tag.as_str()), None),
        ),
        (
            "quay.io/coreos/etcd:v3.5.0".into(),
            ("quay.io", "coreos/etcd", Some("v3.5.0"), None),
        ),
        (
            "host-with-dash.io/x".into(),
            ("host-with-dash.io", "x", None, None),
        ),
        ("0.0.0.0:80/x".into(), ("0.0.0.0:80", "x", None, None)),
    ];
    for (input, (registry, repository, tag, d)) in cases {
        let got = parts(&input);
        assert_eq!(
            got,
            (
                registry.to_owned(),
                repository.to_owned(),
                tag.map(str::to_owned),
                d.map(str::to_owned)
            ),
            "{input}"
        );
    }
    assert_eq!(parts(&format!("a@{D}")).3, digest);
}

#[test]
fn invalid_references_are_refused_with_a_reason() {
    let cases: Vec<(String, ErrorCheck)> = vec![
        ("".into(), |e| matches!(e, ReferenceError::Empty)),
        (" nginx".into(), |e| matches!(e, ReferenceError::Whitespace)),
        ("nginx latest".into(), |e| {
            matches!(e, ReferenceError::Whitespace)
        }),
        ("NGINX".into(), |e| {
            matches!(e, ReferenceError::UppercaseRepository(_))
        }),
        ("docker.io/Team/app".into(), |e| {
            matches!(e, ReferenceError::UppercaseRepository(_))
        }),
        ("nginx:".into(), |e| {
            matches!(e, ReferenceError::InvalidTag(_))
        }),
        ("nginx:-x".into(), |e| {
            matches!(e, ReferenceError::InvalidTag(_))
        }),
        ("nginx:.x".into(), |e| {
            matches!(e, ReferenceError::InvalidTag(_))
        }),
        (format!("nginx:{}", "t".repeat(129)), |e| {
            matches!(e, ReferenceError::InvalidTag(_))
        }),
        ("nginx:a+b".into(), |e| {
            matches!(e, ReferenceError::InvalidTag(_))
        }),
        ("nginx@sha256:abc".into(), |e| {
            matches!(e, ReferenceError::InvalidDigest(_))
        }),
        ("nginx@sha256:".into(), |e| {
            matches!(e, ReferenceError::InvalidDigest(_))
        }),
        (format!("nginx@{}", D.to_uppercase()), |e| {
            matches!(e, ReferenceError::InvalidDigest(_))
        }),
        ("nginx@".into(), |e| {
            matches!(e, ReferenceError::InvalidDigest(_))
        }),
        (format!("nginx@{D}@{D}"), |e| {
            matches!(e, ReferenceError::InvalidDigest(_))
        }),
        ("a//b".into(), |e| {
            matches!(e, ReferenceError::InvalidPathComponent(_))
        }),
        ("a/b/".into(), |e| {
            matches!(e, ReferenceError::InvalidPathComponent(_))
        }),
        ("/a".into(), |e| {
            matches!(e, ReferenceError::InvalidPathComponent(_))
        }),
        ("a_-b".into(), |e| {
            matches!(e, ReferenceError::InvalidPathComponent(_))
        }),
        ("a___b".into(), |e| {
            matches!(e, ReferenceError::InvalidPathComponent(_))
        }),
        ("-a".into(), |e| {
            matches!(e, ReferenceError::InvalidPathComponent(_))
        }),
        ("a.".into(), |e| {
            matches!(e, ReferenceError::InvalidPathComponent(_))
        }),
        ("host:port/app".into(), |e| {
            matches!(e, ReferenceError::InvalidRegistry(_))
        }),
        ("host:123456/app".into(), |e| {
            matches!(e, ReferenceError::InvalidRegistry(_))
        }),
        ("-host.io/app".into(), |e| {
            matches!(e, ReferenceError::InvalidRegistry(_))
        }),
        ("[::zz]/app".into(), |e| {
            matches!(e, ReferenceError::InvalidRegistry(_))
        }),
        ("reg.io/".into(), |e| {
            matches!(e, ReferenceError::InvalidPathComponent(_))
        }),
        (format!("reg.io/{}", "a".repeat(256)), |e| {
            matches!(e, ReferenceError::NameTooLong)
        }),
        ("nginx\u{0}".into(), |e| {
            matches!(e, ReferenceError::Whitespace)
        }),
        ("ngïnx".into(), |e| {
            matches!(e, ReferenceError::InvalidPathComponent(_))
        }),
    ];
    for (input, expected) in cases {
        match Reference::parse(&input) {
            Ok(r) => panic!("{input:?} should not parse, got {r:?}"),
            Err(e) => {
                assert!(expected(&e), "{input:?}: unexpected error {e:?}");
                assert!(!e.to_string().is_empty());
            }
        }
    }
}

#[test]
fn display_is_the_normalised_reference() {
    let cases = [
        ("nginx", "docker.io/library/nginx:latest"),
        ("team/app:1", "docker.io/team/app:1"),
        ("localhost:5000/app", "localhost:5000/app:latest"),
    ];
    for (input, shown) in cases {
        assert_eq!(
            Reference::parse(input).map(|r| r.to_string()),
            Ok(shown.to_owned())
        );
    }
    let with_digest = format!("reg.io/a:1@{D}");
    assert_eq!(
        Reference::parse(&with_digest).map(|r| r.to_string()),
        Ok(with_digest.clone())
    );
}

#[test]
fn digest_wins_over_tag_for_ecr_images() {
    let image = format!("123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app:1.4@{D}");
    match ImageTarget::classify(&image) {
        Ok(ImageTarget::Ecr { repo, id }) => {
            assert_eq!(repo.repository, "team/app");
            let registry = repo.registry.ecr().expect("an ECR registry");
            assert_eq!(registry.account, "123456789012");
            assert_eq!(registry.region, "us-east-1");
            assert_eq!(id, ImageId::Digest(D.to_owned()));
        }
        other => panic!("expected an ECR target, got {other:?}"),
    }
    match ImageTarget::classify("123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app") {
        Ok(ImageTarget::Ecr { id, .. }) => assert_eq!(id, ImageId::Tag("latest".to_owned())),
        other => panic!("expected an ECR target, got {other:?}"),
    }
    assert!(matches!(
        ImageTarget::classify("nginx"),
        Ok(ImageTarget::Other(_))
    ));
    assert!(ImageTarget::classify("Bad Ref").is_err());
}

/// Found by the `reference` fuzz target: a 249-character name parsed, but its normalised
/// form (`docker.io/library/…`) was over 255 characters and did not parse again.
#[test]
fn the_length_limit_applies_to_the_normalised_name() {
    let input = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fuzz-regressions/reference-normalised-length.txt"
    ))
    .expect("regression input");
    assert_eq!(
        Reference::parse(input.trim_end_matches('\n')),
        Err(ReferenceError::NameTooLong)
    );
    let fits = format!("team/{}", "a".repeat(255 - "docker.io/team/".len()));
    let parsed = Reference::parse(&fits).expect("exactly 255 characters normalised");
    assert!(Reference::parse(&parsed.to_string()).is_ok());
}
