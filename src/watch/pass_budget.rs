//! Whether the background call budget can verify every repository in use within the
//! interval. The budget is per registry (account and region): `--watch-ecr-calls-per-second`
//! over the 90 % of `--recheck-interval` a pass spreads over. A pass needs at least two calls
//! a repository (BatchGetImage, BatchCheckLayerAvailability), two more with lifecycle
//! forecasts (GetLifecyclePolicy, DescribeImages). When the most loaded registry needs more
//! than its budget allows, passes overrun the interval: said once (and once when it fits
//! again), as a metric, and in `/inventory`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::image::{RegistryName, RepositoryKey};

/// The most loaded registry's calls a pass against what the budget allows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassBudget {
    /// `123456789012 (us-east-1)`.
    pub registry: String,
    pub repositories: usize,
    /// At least this many calls a pass.
    pub calls_needed: u64,
    /// What the budget allows a pass.
    pub calls_available: u64,
    /// `calls_needed <= calls_available`.
    pub fits: bool,
}

/// The pass budget of the repositories in use; `None` when none is ECR's.
pub fn assess<'a>(
    repositories: impl IntoIterator<Item = &'a RepositoryKey>,
    calls_per_second: f64,
    interval: Duration,
    spread: f64,
    forecast: bool,
) -> Option<PassBudget> {
    let mut by_registry: BTreeMap<&RegistryName, usize> = BTreeMap::new();
    // ECR's registries only: another registry's budget is in requests, not calls
    // (`--registry-requests-per-second`), and its need depends on blobs not known yet.
    for repo in repositories
        .into_iter()
        .filter(|r| r.registry.ecr().is_some())
    {
        *by_registry.entry(&repo.registry).or_default() += 1;
    }
    let per_repository: u64 = if forecast { 4 } else { 2 };
    // As many as the pass's span holds (fractions of a call do not leave).
    let available = (calls_per_second.max(0.0) * interval.as_secs_f64() * spread).floor() as u64;
    let (registry, repositories) = by_registry.into_iter().max_by_key(|(_, n)| *n)?;
    let needed = per_repository.saturating_mul(repositories as u64);
    Some(PassBudget {
        registry: registry.to_string(),
        repositories,
        calls_needed: needed,
        calls_available: available,
        fits: needed <= available,
    })
}

impl PassBudget {
    /// needed / available (above 1: passes overrun the interval).
    pub fn ratio(&self) -> f64 {
        self.calls_needed as f64 / self.calls_available.max(1) as f64
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

    #[test]
    fn the_most_loaded_registry_is_held_to_its_budget() {
        // 5 calls a second over 90 % of 15 minutes: 4,050 calls a pass and registry.
        let interval = Duration::from_secs(900);
        let mut repos: Vec<RepositoryKey> = (0..1_000).map(|n| repo("111111111111", n)).collect();
        repos.extend((0..10).map(|n| repo("222222222222", n)));
        let b = assess(&repos, 5.0, interval, 0.9, true).expect("budget");
        assert_eq!(b.registry, "111111111111 (us-east-1)");
        assert_eq!((b.calls_needed, b.calls_available), (4_000, 4_050));
        assert!(b.fits);
        let b = assess(&repos, 5.0, interval, 0.9, false).expect("budget");
        assert_eq!(b.calls_needed, 2_000);
        repos.extend((1_000..1_100).map(|n| repo("111111111111", n)));
        let b = assess(&repos, 5.0, interval, 0.9, true).expect("budget");
        assert!(!b.fits && b.ratio() > 1.0, "{b:?}");
        assert!(assess(&[], 5.0, interval, 0.9, true).is_none());
    }

    #[test]
    fn another_registry_is_not_counted_in_ecr_calls() {
        let mut repos: Vec<RepositoryKey> = (0..3).map(|n| repo("111111111111", n)).collect();
        repos.extend((0..50).map(|n| {
            RepositoryKey::new(
                RegistryName::Distribution("ghcr.io".into()),
                format!("org/r{n}"),
            )
        }));
        let budget = assess(&repos, 1.0, Duration::from_secs(100), 0.9, false).expect("ECR's");
        assert_eq!(budget.repositories, 3);
        assert_eq!(budget.calls_needed, 6);
        let others: Vec<RepositoryKey> = repos.split_off(3);
        assert_eq!(
            assess(&others, 1.0, Duration::from_secs(100), 0.9, false),
            None
        );
    }
}
