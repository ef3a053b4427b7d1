//! Recognises Amazon ECR private registry hosts in every partition.
//!
//! Forms (AWS documentation, "Amazon ECR endpoints" and "dual-stack endpoints"):
//! `<account>.dkr.ecr.<region>.<suffix>`, `<account>.dkr.ecr-fips.<region>.<suffix>` with the
//! partition DNS suffixes below, and `<account>.dkr-ecr[-fips].<region>.on.aws` (dual-stack).

use std::fmt;

/// DNS suffixes of the AWS partitions that have ECR: aws, aws-us-gov (same suffix as aws),
/// aws-cn, aws-iso, aws-iso-b.
const PARTITION_SUFFIXES: &[&str] = &[
    "amazonaws.com",
    "amazonaws.com.cn",
    "c2s.ic.gov",
    "sc2s.sgov.gov",
];
const DUAL_STACK_SUFFIX: &str = "on.aws";

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
