//! Whether the background budget can verify every repository in use within the interval.
//!
//! ECR's budget is per registry (account and region): `--watch-ecr-calls-per-second` over
//! the 90 % of `--recheck-interval` a pass spreads over. A pass needs at least two calls a
//! repository (BatchGetImage, BatchCheckLayerAvailability), two more with lifecycle
//! forecasts (GetLifecyclePolicy, DescribeImages).
//!
//! Another registry's budget is per host, in requests: `--registry-requests-per-second` over
//! the same span. A pass needs, for each repository, a manifest HEAD for each image named by
//! tag (manifests are held by digest, so none is read again) and a blob HEAD for each
//! distinct blob of its images, as the last pass counted them (before a repository was
//! ever checked: two, a config and a layer, at least).
//!
//! When the most loaded registry needs more than its budget allows, passes overrun the
//! interval: said once (and once when it fits again), as a metric, and in `/inventory`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::image::{RegistryName, RepositoryKey};

/// The most loaded registry's calls (or requests) a pass against what the budget allows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassBudget {
    /// `123456789012 (us-east-1)`, or another registry's host.
    pub registry: String,
    pub repositories: usize,
    /// At least this many calls (`unit`) a pass.
    pub calls_needed: u64,
    /// What the budget allows a pass.
    pub calls_available: u64,
    /// `calls_needed <= calls_available`.
    pub fits: bool,
    /// `calls` (ECR API calls) or `requests` (another registry's HEADs and GETs).
    #[serde(default = "calls")]
    pub unit: String,
}

fn calls() -> String {
    "calls".to_owned()
}

/// The background rates a pass is held to.
#[derive(Debug, Clone, Copy)]
pub struct Rates {
    /// `--watch-ecr-calls-per-second`, per ECR registry.
    pub ecr_calls: f64,
    /// `--registry-requests-per-second`, per other registry.
    pub registry_requests: f64,
}

/// Fewest blobs a checked image has: a config and a layer.
const MIN_BLOBS: usize = 2;

/// The pass budget of the repositories in use, each with its images; `blobs_of` tells how
/// many distinct blobs a repository's images had when last checked. `None` when no
/// repository is in use.
pub fn assess<'a>(
    repositories: impl IntoIterator<Item = (&'a RepositoryKey, &'a [String])>,
    rates: Rates,
    span: (Duration, f64),
    forecast: bool,
    blobs_of: impl Fn(&RepositoryKey) -> Option<usize>,
) -> Option<PassBudget> {
    let mut need: BTreeMap<&RegistryName, (usize, u64)> = BTreeMap::new();
    let per_ecr_repository: u64 = if forecast { 4 } else { 2 };
    for (repo, images) in repositories {
        let needed = match repo.registry {
            RegistryName::Ecr(_) => per_ecr_repository,
            RegistryName::Distribution(_) => requests_of(images, blobs_of(repo)),
        };
        let entry = need.entry(&repo.registry).or_default();
        entry.0 += 1;
        entry.1 += needed;
    }
    let (interval, spread) = span;
    // As many as the pass's span holds (fractions of a call do not leave).
    let available = |rate: f64| (rate.max(0.0) * interval.as_secs_f64() * spread).floor() as u64;
    need.into_iter()
        .map(|(registry, (repositories, needed))| {
            let (rate, unit) = match registry {
                RegistryName::Ecr(_) => (rates.ecr_calls, "calls"),
                RegistryName::Distribution(_) => (rates.registry_requests, "requests"),
            };
            let available = available(rate);
            PassBudget {
                registry: registry.to_string(),
                repositories,
                calls_needed: needed,
                calls_available: available,
                fits: needed <= available,
                unit: unit.to_owned(),
            }
        })
        .max_by(|a, b| a.ratio().total_cmp(&b.ratio()))
}

/// Another registry's requests a pass for one repository's `images` of `blobs` distinct
/// blobs (when counted).
fn requests_of(images: &[String], blobs: Option<usize>) -> u64 {
    let tags = images.iter().filter(|i| !i.contains('@')).count();
    (tags + blobs.unwrap_or(MIN_BLOBS)) as u64
}

impl PassBudget {
    /// needed / available (above 1: passes overrun the interval).
    pub fn ratio(&self) -> f64 {
        self.calls_needed as f64 / self.calls_available.max(1) as f64
    }

    /// The flag that raises this budget.
    pub fn flag(&self) -> &'static str {
        if self.unit == "requests" {
            "--registry-requests-per-second"
        } else {
            "--watch-ecr-calls-per-second"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::EcrRegistry;

    fn repo(account: &str, n: usize) -> RepositoryKey {
        let registry = EcrRegistry {
            account: account.into(),
            region: "us-east-1".into(),
            fips: false,
            dual_stack: false,
        };
        RepositoryKey::new(registry, format!("r{n}"))
    }

    fn other(host: &str, n: usize) -> RepositoryKey {
        RepositoryKey::new(RegistryName::Distribution(host.into()), format!("org/r{n}"))
    }

    const RATES: Rates = Rates {
        ecr_calls: 5.0,
        registry_requests: 5.0,
    };

    /// Each repository with one image by tag.
    fn plan(repos: &[RepositoryKey]) -> Vec<(&RepositoryKey, &[String])> {
        static ONE: std::sync::LazyLock<Vec<String>> =
            std::sync::LazyLock::new(|| vec!["host/org/app:v1".to_owned()]);
        repos.iter().map(|r| (r, ONE.as_slice())).collect()
    }

    #[test]
    fn the_most_loaded_registry_is_held_to_its_budget() {
        // 5 calls a second over 90 % of 15 minutes: 4,050 calls a pass and registry.
        let span = (Duration::from_secs(900), 0.9);
        let mut repos: Vec<RepositoryKey> = (0..1_000).map(|n| repo("111111111111", n)).collect();
        repos.extend((0..10).map(|n| repo("222222222222", n)));
        let b = assess(plan(&repos), RATES, span, true, |_| None).expect("budget");
        assert_eq!(b.registry, "111111111111 (us-east-1)");
        assert_eq!((b.calls_needed, b.calls_available), (4_000, 4_050));
        assert!(b.fits && b.unit == "calls" && b.flag() == "--watch-ecr-calls-per-second");
        let b = assess(plan(&repos), RATES, span, false, |_| None).expect("budget");
        assert_eq!(b.calls_needed, 2_000);
        repos.extend((1_000..1_100).map(|n| repo("111111111111", n)));
        let b = assess(plan(&repos), RATES, span, true, |_| None).expect("budget");
        assert!(!b.fits && b.ratio() > 1.0, "{b:?}");
        assert!(assess(plan(&[]), RATES, span, true, |_| None).is_none());
    }

    #[test]
    fn another_registry_is_held_to_its_requests_a_second() {
        // 100 repositories of ghcr.io, each with one image by tag and 40 distinct blobs
        // when last checked: 41 requests each, 4,100 a pass; 5 a second over 90 % of 15
        // minutes is 4,050.
        let span = (Duration::from_secs(900), 0.9);
        let mut repos: Vec<RepositoryKey> = (0..3).map(|n| repo("111111111111", n)).collect();
        repos.extend((0..100).map(|n| other("ghcr.io", n)));
        let b = assess(plan(&repos), RATES, span, false, |_| Some(40)).expect("budget");
        assert_eq!(
            (
                b.registry.as_str(),
                b.repositories,
                b.calls_needed,
                b.calls_available
            ),
            ("ghcr.io", 100, 4_100, 4_050)
        );
        assert!(!b.fits && b.unit == "requests" && b.flag() == "--registry-requests-per-second");
        // Never checked: a HEAD for the tag and two blobs, at least.
        let b = assess(plan(&repos), RATES, span, false, |_| None).expect("budget");
        assert_eq!((b.registry.as_str(), b.calls_needed), ("ghcr.io", 300));
        // Pinned by digest: no tag to resolve.
        let pinned = vec!["ghcr.io/org/app@sha256:ab".to_owned()];
        let one = other("ghcr.io", 0);
        let b =
            assess([(&one, pinned.as_slice())], RATES, span, false, |_| Some(5)).expect("budget");
        assert_eq!(b.calls_needed, 5);
    }
}
