//! Recognises Amazon ECR private registry hosts in every partition.
//!
//! Forms (AWS documentation, "Amazon ECR endpoints" and "dual-stack endpoints"):
//! `<account>.dkr.ecr.<region>.<suffix>`, `<account>.dkr.ecr-fips.<region>.<suffix>` with the
//! partition DNS suffixes below, and `<account>.dkr-ecr[-fips].<region>.on.aws` (dual-stack).

use std::fmt;

/// DNS suffixes of the AWS partitions that have ECR: aws, aws-us-gov (same suffix as aws),
/// aws-cn, aws-iso, aws-iso-b.
pub const PARTITION_SUFFIXES: &[&str] = &[
    "amazonaws.com",
    "amazonaws.com.cn",
    "c2s.ic.gov",
    "sc2s.sgov.gov",
];
const DUAL_STACK_SUFFIX: &str = "on.aws";

/// The regions of those partitions, as the partition data of the AWS SDK this build uses
/// lists them (`aws-sdk-ecr` 1.138, `endpoint_lib.rs`; pseudo-regions such as `aws-global`
/// left out). A host naming any other region is refused: each region costs an SDK client,
/// and made-up ones would let anyone who may create Pods grow the webhook's memory. A region
/// launched after this build needs a newer build, as it needs a newer SDK.
const KNOWN_REGIONS: &[&str] = &[
    // aws
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "ca-central-1",
    "ca-west-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    // aws-cn
    "cn-north-1",
    "cn-northwest-1",
    // aws-us-gov
    "us-gov-east-1",
    "us-gov-west-1",
    // aws-iso, aws-iso-b
    "us-iso-east-1",
    "us-iso-west-1",
    "us-isob-east-1",
    "us-isob-west-1",
];

/// The regions an ECR host may name (tests/ecr_hosts.rs holds them to the SDK's data).
pub fn known_regions() -> &'static [&'static str] {
    KNOWN_REGIONS
}

/// Whether `region` is one of the [`KNOWN_REGIONS`].
pub fn known_region(region: &str) -> bool {
    KNOWN_REGIONS.contains(&region)
}

/// One ECR registry: an account in a region, reached through a given endpoint flavour.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EcrRegistry {
    /// The AWS account id, which ECR calls `registryId`.
    pub account: String,
    pub region: String,
    /// The host named a FIPS endpoint: the SDK must use its FIPS endpoint too.
    pub fips: bool,
    /// The host named a dual-stack endpoint: the SDK must use its dual-stack endpoint too.
    pub dual_stack: bool,
}

impl EcrRegistry {
    /// The `registryId` to send ECR: none when the account is not known (the caller's own).
    pub fn registry_id(&self) -> Option<&str> {
        Some(self.account.as_str()).filter(|a| !a.is_empty())
    }
}

impl fmt::Display for EcrRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.account, self.region)
    }
}

/// Returns the ECR registry a host names, or `None` for any other registry.
pub fn parse_ecr_host(host: &str) -> Option<EcrRegistry> {
    let host = host.to_ascii_lowercase();
    let (account, rest) = host.split_once('.')?;
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if let Some(rest) = rest.strip_prefix("dkr.") {
        return parse_dkr_ecr(account, rest);
    }
    let (service, rest) = rest.split_once('.')?;
    let fips = match service {
        "dkr-ecr" => false,
        "dkr-ecr-fips" => true,
        _ => return None,
    };
    let (region, suffix) = rest.split_once('.')?;
    (valid_region(region) && suffix == DUAL_STACK_SUFFIX).then(|| EcrRegistry {
        account: account.to_owned(),
        region: region.to_owned(),
        fips,
        dual_stack: true,
    })
}

/// `<account>.dkr.` has been read; `rest` is `ecr[-fips].<region>.<suffix>`.
fn parse_dkr_ecr(account: &str, rest: &str) -> Option<EcrRegistry> {
    let (service, rest) = rest.split_once('.')?;
    let fips = match service {
        "ecr" => false,
        "ecr-fips" => true,
        _ => return None,
    };
    let (region, suffix) = rest.split_once('.')?;
    if !valid_region(region) || !PARTITION_SUFFIXES.contains(&suffix) {
        return None;
    }
    Some(EcrRegistry {
        account: account.to_owned(),
        region: region.to_owned(),
        fips,
        dual_stack: false,
    })
}

/// Region names are lowercase words joined by dashes ending in a number (`us-east-1`,
/// `us-gov-west-1`, `us-iso-east-1`, `cn-north-1`).
fn valid_region(region: &str) -> bool {
    let mut parts = region.split('-');
    let all_ok = region.split('-').all(|p| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    });
    let ends_with_number = region
        .rsplit('-')
        .next()
        .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()));
    all_ok && ends_with_number && parts.nth(2).is_some()
}
