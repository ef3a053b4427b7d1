//! ECR registry hosts in every partition, and hosts that only look like them.

use ecr_preflight::image::{parse_ecr_host, EcrRegistry};

fn reg(account: &str, region: &str, fips: bool, dual_stack: bool) -> Option<EcrRegistry> {
    Some(EcrRegistry {
        account: account.into(),
        region: region.into(),
        fips,
        dual_stack,
    })
}

#[test]
fn recognises_ecr_hosts_in_every_partition() {
    let a = "123456789012";
    let cases = [
        (
            "123456789012.dkr.ecr.us-east-1.amazonaws.com",
            reg(a, "us-east-1", false, false),
        ),
        (
            "123456789012.dkr.ecr.eu-central-2.amazonaws.com",
            reg(a, "eu-central-2", false, false),
        ),
        (
            "123456789012.dkr.ecr-fips.us-east-1.amazonaws.com",
            reg(a, "us-east-1", true, false),
        ),
        (
            "123456789012.dkr.ecr.us-gov-west-1.amazonaws.com",
            reg(a, "us-gov-west-1", false, false),
        ),
        (
            "123456789012.dkr.ecr-fips.us-gov-east-1.amazonaws.com",
            reg(a, "us-gov-east-1", true, false),
        ),
        (
            "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn",
            reg(a, "cn-north-1", false, false),
        ),
        (
            "123456789012.dkr.ecr.cn-northwest-1.amazonaws.com.cn",
            reg(a, "cn-northwest-1", false, false),
        ),
        (
            "123456789012.dkr.ecr.us-iso-east-1.c2s.ic.gov",
            reg(a, "us-iso-east-1", false, false),
        ),
        (
            "123456789012.dkr.ecr.us-isob-east-1.sc2s.sgov.gov",
            reg(a, "us-isob-east-1", false, false),
        ),
        (
            "123456789012.dkr-ecr.us-east-1.on.aws",
            reg(a, "us-east-1", false, true),
        ),
        (
            "123456789012.dkr-ecr-fips.us-east-1.on.aws",
            reg(a, "us-east-1", true, true),
        ),
        (
            "123456789012.DKR.ECR.US-EAST-1.AMAZONAWS.COM",
            reg(a, "us-east-1", false, false),
        ),
    ];
    for (host, expected) in cases {
        assert_eq!(parse_ecr_host(host), expected, "{host}");
    }
}

#[test]
fn other_hosts_are_not_ecr() {
    let hosts = [
        "docker.io",
        "public.ecr.aws",
        "12345678901.dkr.ecr.us-east-1.amazonaws.com",
        "1234567890123.dkr.ecr.us-east-1.amazonaws.com",
        "12345678901a.dkr.ecr.us-east-1.amazonaws.com",
        "123456789012.dkr.ecr.us-east-1.amazonaws.com.evil.io",
        "123456789012.dkr.ecr.us-east-1.example.com",
        "123456789012.dkr.ecr.amazonaws.com",
        "123456789012.dkr.ecr.us-east-1.on.aws",
        "123456789012.dkr-ecr.us-east-1.amazonaws.com",
        "123456789012.ecr.us-east-1.amazonaws.com",
        "123456789012.dkr.ecr.useast1.amazonaws.com",
        "123456789012.dkr.ecr.us-east-1.amazonaws.com:443",
        "localhost:5000",
    ];
    for host in hosts {
        assert_eq!(parse_ecr_host(host), None, "{host}");
    }
}

/// The partition data compiled into the AWS SDK this build uses: the JSON that
/// `aws-sdk-ecr`'s `endpoint_lib.rs` embeds, found through `cargo metadata`.
fn sdk_partitions() -> serde_json::Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline", "--locked"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata");
    let manifest = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .find(|p| p["name"] == "aws-sdk-ecr")
        .and_then(|p| p["manifest_path"].as_str())
        .expect("aws-sdk-ecr is a dependency");
    let source = std::path::Path::new(manifest).with_file_name("src/endpoint_lib.rs");
    let text = std::fs::read_to_string(&source).expect("endpoint_lib.rs");
    // The default partitions: a Rust byte string literal `b"{...}"`, escapes and all.
    let opening = "new_from_json(b\"";
    let start = text.find(opening).expect("embedded partitions") + opening.len();
    let end = start
        + text[start..]
            .find("\").expect(")
            .expect("end of the literal");
    let mut json = String::new();
    let mut chars = text[start..end].chars();
    while let Some(c) = chars.next() {
        json.push(if c == '\\' {
            chars.next().expect("escape")
        } else {
            c
        });
    }
    serde_json::from_str(&json).expect("partitions JSON")
}

/// The hand-written region list is the SDK's: every region of every partition whose DNS
/// suffix an ECR host may end in, pseudo-regions (`aws-global`) aside, and no other. A
/// newer SDK with a new region fails here until the list has it.
#[test]
fn the_known_regions_are_the_sdks() {
    let partitions = sdk_partitions();
    let mut from_sdk: Vec<String> = partitions["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .filter(|p| {
            let suffix = p["outputs"]["dnsSuffix"].as_str().unwrap_or_default();
            ecr_preflight::image::PARTITION_SUFFIXES.contains(&suffix)
        })
        .flat_map(|p| p["regions"].as_object().expect("regions").keys().cloned())
        .filter(|r| !r.ends_with("-global"))
        .collect();
    from_sdk.sort();
    let mut known: Vec<String> = ecr_preflight::image::known_regions()
        .iter()
        .map(|r| (*r).to_owned())
        .collect();
    known.sort();
    assert_eq!(known, from_sdk);
    assert!(known.len() > 30, "{known:?}");
}
