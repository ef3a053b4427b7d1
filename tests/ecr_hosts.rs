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
