//! The background budget: at most N ECR calls a second per account and region, spaced
//! evenly, and a pause that doubles (1 s to 60 s) while ECR throttles. A registry in front
//! of the real one, used by the controller's engine only: admission has its own engine and
//! never waits here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;

use crate::image::{EcrRegistry, ImageId, RegistryName, RepositoryKey};
use crate::lifecycle::ImageFacts;
use crate::registry::{
    BatchGetImageOutput, LayerAvailabilityOutput, LifecycleFacts, Preview, PullThroughRule,
    Registry, RegistryError, Restore,
};

const FIRST_PAUSE: Duration = Duration::from_secs(1);
const LONGEST_PAUSE: Duration = Duration::from_secs(60);
/// Slots kept before idle ones are forgotten.
const IDLE_KEPT: usize = 64;

/// Per registry: when the next call may leave, and the pause after throttling.
#[derive(Debug)]
struct Slot {
    next: Instant,
    pause: Duration,
}

pub struct Budgeted {
    inner: Arc<dyn Registry>,
    /// Between two ECR calls to one registry.
    spacing: Duration,
    /// Between two requests to a registry other than ECR's: each of its calls is one
    /// request per image or blob, charged as such.
    request_spacing: Duration,
    slots: Mutex<HashMap<RegistryName, Slot>>,
}

impl Budgeted {
    /// `per_second` calls a second per account and region (at least one call every 10 s).
    pub fn new(inner: Arc<dyn Registry>, per_second: f64) -> Self {
        let spacing = Duration::from_secs_f64(1.0 / per_second.max(0.1));
        Budgeted {
            inner,
            spacing,
            request_spacing: spacing,
            slots: Mutex::default(),
        }
    }

    /// `per_second` requests a second to each registry other than ECR's.
    pub fn with_registry_rate(mut self, per_second: f64) -> Self {
        self.request_spacing = Duration::from_secs_f64(1.0 / per_second.max(0.1));
        self
    }

    fn spacing(&self, registry: &RegistryName) -> Duration {
        match registry {
            RegistryName::Ecr(_) => self.spacing,
            RegistryName::Distribution(_) => self.request_spacing,
        }
    }

    /// What a call of `keys` costs in turns: one for ECR's batch call, one a key (a
    /// request each) elsewhere.
    fn turns(registry: &RegistryName, keys: usize) -> usize {
        match registry {
            RegistryName::Ecr(_) => 1,
            RegistryName::Distribution(_) => keys.max(1),
        }
    }

    /// Waits for this call's turn: calls leave `spacing` apart, never in a burst.
    async fn turn(&self, registry: &RegistryName) {
        let at = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            if slots.len() >= IDLE_KEPT && !slots.contains_key(registry) {
                // A slot whose turn has passed and that is not paused is what a new one
                // would be: forgetting it changes nothing, and keeps the map to registries
                // with a call due or a pause on (registries are named by workloads).
                slots.retain(|_, s| s.next > now || s.pause > FIRST_PAUSE);
            }
            let slot = slots.entry(registry.clone()).or_insert(Slot {
                next: now,
                pause: FIRST_PAUSE,
            });
            let at = slot.next.max(now);
            slot.next = at + self.spacing(registry);
            at
        };
        tokio::time::sleep_until(at).await;
    }

    /// A call that cost `pages` turns (DescribeImages' pages; another registry's requests)
    /// pushes the next call back by the turns after the first.
    fn charge(&self, registry: &RegistryName, pages: usize) {
        let extra = u32::try_from(pages.saturating_sub(1)).unwrap_or(u32::MAX);
        if extra == 0 {
            return;
        }
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = slots.get_mut(registry) {
            slot.next += self.spacing(registry) * extra;
        }
    }

    /// One call of the inner registry in its turn.
    async fn spend<T>(
        &self,
        registry: &RegistryName,
        call: impl std::future::Future<Output = Result<T, RegistryError>>,
    ) -> Result<T, RegistryError> {
        self.turn(registry).await;
        let result = call.await;
        self.answered(registry, &result);
        result
    }

    /// Throttled: nothing leaves for a while, longer each time; any other answer resets it.
    fn answered<T>(&self, registry: &RegistryName, result: &Result<T, RegistryError>) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let Some(slot) = slots.get_mut(registry) else {
            return;
        };
        if let Err(RegistryError::Throttled(_)) = result {
            slot.next = slot.next.max(Instant::now() + slot.pause);
            tracing::warn!(%registry, pause = ?slot.pause, "ECR throttles the background re-verification; pausing it");
            slot.pause = (slot.pause * 2).min(LONGEST_PAUSE);
        } else {
            slot.pause = FIRST_PAUSE;
        }
    }
}

impl Registry for Budgeted {
    fn count_client_evictions(&self, evicted: prometheus_client::metrics::counter::Counter) {
        self.inner.count_client_evictions(evicted);
    }

    fn batch_get_image<'a>(
        &'a self,
        repo: &'a RepositoryKey,
        ids: &'a [ImageId],
    ) -> BoxFuture<'a, Result<BatchGetImageOutput, RegistryError>> {
        Box::pin(async move {
            let answer = self
                .spend(&repo.registry, self.inner.batch_get_image(repo, ids))
                .await;
            self.charge(&repo.registry, Self::turns(&repo.registry, ids.len()));
            answer
        })
    }

    fn batch_check_layer_availability<'a>(
        &'a self,
        repo: &'a RepositoryKey,
        digests: &'a [String],
    ) -> BoxFuture<'a, Result<LayerAvailabilityOutput, RegistryError>> {
        Box::pin(async move {
            let answer = self
                .spend(
                    &repo.registry,
                    self.inner.batch_check_layer_availability(repo, digests),
                )
                .await;
            self.charge(&repo.registry, Self::turns(&repo.registry, digests.len()));
            answer
        })
    }

    fn lifecycle(&self) -> Option<&dyn LifecycleFacts> {
        self.inner.lifecycle().map(|_| self as &dyn LifecycleFacts)
    }

    /// Not counted against the budget: one call per registry every few minutes.
    fn pull_through_rules<'a>(
        &'a self,
        registry: &'a EcrRegistry,
    ) -> BoxFuture<'a, Result<Vec<PullThroughRule>, RegistryError>> {
        self.inner.pull_through_rules(registry)
    }
}

/// The inner registry's lifecycle calls, within the same budget. Only reached through
/// [`Registry::lifecycle`], which answers `None` when the inner registry has none.
impl Budgeted {
    fn facts(&self) -> Result<&dyn LifecycleFacts, RegistryError> {
        self.inner
            .lifecycle()
            .ok_or_else(|| RegistryError::Service {
                code: "Unsupported".to_owned(),
                message: "this registry has no lifecycle calls".to_owned(),
            })
    }
}

/// DescribeImages answers at most this many images a page.
const DESCRIBE_PAGE: usize = 1000;

impl LifecycleFacts for Budgeted {
    fn lifecycle_policy<'a>(
        &'a self,
        repo: &'a RepositoryKey,
    ) -> BoxFuture<'a, Result<Option<String>, RegistryError>> {
        Box::pin(self.spend(&repo.registry, async {
            self.facts()?.lifecycle_policy(repo).await
        }))
    }

    fn describe_images<'a>(
        &'a self,
        repo: &'a RepositoryKey,
    ) -> BoxFuture<'a, Result<Vec<ImageFacts>, RegistryError>> {
        Box::pin(async move {
            let images = self
                .spend(&repo.registry, async {
                    self.facts()?.describe_images(repo).await
                })
                .await?;
            self.charge(&repo.registry, images.len().div_ceil(DESCRIBE_PAGE));
            Ok(images)
        })
    }

    fn restore<'a>(
        &'a self,
        repo: &'a RepositoryKey,
        id: &'a ImageId,
    ) -> BoxFuture<'a, Result<Restore, RegistryError>> {
        Box::pin(self.spend(&repo.registry, async {
            self.facts()?.restore(repo, id).await
        }))
    }

    fn start_preview<'a>(
        &'a self,
        repo: &'a RepositoryKey,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(self.spend(&repo.registry, async {
            self.facts()?.start_preview(repo).await
        }))
    }

    fn preview<'a>(
        &'a self,
        repo: &'a RepositoryKey,
    ) -> BoxFuture<'a, Result<Preview, RegistryError>> {
        Box::pin(self.spend(&repo.registry, async { self.facts()?.preview(repo).await }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::EcrRegistry;

    fn registry(n: usize) -> RegistryName {
        EcrRegistry {
            account: format!("{n:012}"),
            region: "us-east-1".into(),
            fips: false,
            dual_stack: false,
        }
        .into()
    }

    struct Nothing;

    impl Registry for Nothing {
        fn batch_get_image<'a>(
            &'a self,
            _: &'a crate::image::RepositoryKey,
            _: &'a [crate::image::ImageId],
        ) -> futures::future::BoxFuture<'a, Result<BatchGetImageOutput, RegistryError>> {
            Box::pin(async { Err(RegistryError::Timeout) })
        }

        fn batch_check_layer_availability<'a>(
            &'a self,
            _: &'a crate::image::RepositoryKey,
            _: &'a [String],
        ) -> futures::future::BoxFuture<'a, Result<LayerAvailabilityOutput, RegistryError>>
        {
            Box::pin(async { Err(RegistryError::Timeout) })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn slots_of_many_registries_stay_bounded_and_a_paused_one_is_kept() {
        let budget = Budgeted::new(Arc::new(Nothing), 10.0);
        // One throttled: its pause must survive any pruning.
        budget.turn(&registry(0)).await;
        budget.answered::<()>(&registry(0), &Err(RegistryError::Throttled("x".into())));
        for n in 1..10_000 {
            budget.turn(&registry(n)).await;
            tokio::time::advance(Duration::from_millis(200)).await;
        }
        let slots = budget.slots.lock().expect("lock");
        assert!(slots.len() <= IDLE_KEPT + 1, "{} slots", slots.len());
        assert!(slots
            .get(&registry(0))
            .is_some_and(|s| s.pause > FIRST_PAUSE));
    }

    /// A registry other than ECR's pays a turn a request: ten blob HEADs at 5 a second
    /// push its next call 2 s back, while ECR's calls keep their own pace.
    #[tokio::test(start_paused = true)]
    async fn another_registry_pays_a_turn_a_request() {
        let budget = Budgeted::new(Arc::new(Nothing), 10.0).with_registry_rate(5.0);
        let other = RepositoryKey::new(RegistryName::Distribution("ghcr.io".into()), "org/tool");
        let ecr = RepositoryKey::new(registry(1), "app");
        let start = Instant::now();
        let digests: Vec<String> = (0..10).map(|i| format!("sha256:{i:064}")).collect();
        let _ = budget
            .batch_check_layer_availability(&other, &digests)
            .await;
        let _ = budget.batch_check_layer_availability(&ecr, &digests).await;
        let _ = budget.batch_check_layer_availability(&ecr, &digests).await;
        // ECR: two calls 100 ms apart, whatever the other registry spent.
        assert_eq!(start.elapsed(), Duration::from_millis(100));
        let _ = budget.batch_get_image(&other, &[]).await;
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }
}
