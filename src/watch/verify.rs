//! Re-verification: every distinct image in use, once per interval, a repository at a time,
//! repositories spread evenly over the interval. A repository's images go to the engine
//! together, so its batchers ask ECR for them in as few calls as the webhook would (at most
//! 100 ids or digests a call, a blob shared between images asked once). Images that appear
//! between two repositories' turns (a new workload) are verified at once.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::pass_budget::{self, PassBudget, Rates};
use super::publish::Signals;
use super::state::{Inventory, Row, Verified};
use super::walks;
use super::ExpirySettings;
use crate::engine::Engine;
use crate::image::{ImageTarget, Registries, RepositoryKey};
use crate::lifecycle::expiry::{self, RepositoryForecast};
use crate::lifecycle::preview::Previews;
use crate::metrics::WatchMetrics;
use crate::pull_secrets::{Keyring, SecretReader};
use crate::registry::Restore;

/// The last repository of a pass starts this far into the interval, so that the pass ends
/// before the next begins even when ECR is slow.
const SPREAD: f64 = 0.9;
/// How long one repository's check may take, its wait for the budget included.
pub const REPOSITORY_DEADLINE: Duration = Duration::from_secs(120);
/// How often the verifier looks for new images while it waits.
const NEW_IMAGE_POLL: Duration = Duration::from_secs(1);
/// Metrics and Events are brought up to date at most this often during a pass (and at its
/// end): each time walks every workload. In a cluster where the walk takes long, at most
/// every WALK_SHARE times the last walk's duration, so that walks take at most a tenth of a
/// core (100,000 Pods: about a second a walk, one every 10 s).
const PUBLISH_EVERY: Duration = Duration::from_secs(1);
const WALK_SHARE: u32 = 10;

pub struct Verifier {
    engine: Arc<Engine>,
    inventory: Arc<Inventory>,
    interval: Duration,
    signals: Arc<Signals>,
    metrics: Arc<WatchMetrics>,
    /// The preview cross-check, when enabled.
    previews: Option<Previews>,
    /// Forecast lifecycle policies' actions.
    forecast: bool,
    restore_archived: bool,
    /// Archived images whose restore was started (never again) or refused (again next
    /// pass).
    restores: Mutex<Restores>,
    unread: UnreadPolicies,
    /// The inventory's generation when images in use were last read: a change after it,
    /// made while a check was in flight too, is looked at by the next wait.
    looked: AtomicU64,
    /// `--watch-ecr-calls-per-second` and `--registry-requests-per-second` (none, or no ECR
    /// rate: no assessment).
    rates: Option<Rates>,
    /// Whether the last pass's budget fitted: a change is logged once.
    fitted: Mutex<Option<bool>>,
    /// The pull secrets of the workloads that run an image (`--read-pull-secrets`).
    pull_secrets: Option<SecretReader>,
    /// Distinct blobs of each repository of a registry other than ECR's, as its last check
    /// found them: a pass's requests there, for the budget. Kept for the repositories in use.
    blobs_counted: Mutex<HashMap<RepositoryKey, usize>>,
}

#[derive(Default)]
struct Restores {
    started: HashSet<Box<str>>,
    refused: HashSet<Box<str>>,
}

impl Verifier {
    pub fn new(
        engine: Arc<Engine>,
        inventory: Arc<Inventory>,
        interval: Duration,
        signals: Arc<Signals>,
        metrics: Arc<WatchMetrics>,
        expiry: &ExpirySettings,
    ) -> Self {
        let previews = expiry
            .preview
            .then(|| Previews::new(engine.clone(), metrics.clone()));
        Verifier {
            engine,
            inventory,
            interval,
            signals,
            metrics,
            previews,
            forecast: expiry.forecast,
            restore_archived: expiry.restore_archived,
            restores: Mutex::default(),
            unread: UnreadPolicies::default(),
            looked: AtomicU64::new(0),
            rates: None,
            fitted: Mutex::default(),
            pull_secrets: None,
            blobs_counted: Mutex::default(),
        }
    }

    /// Asks registries other than ECR's with the pull secrets of the workloads that run
    /// each image, read through `reader`.
    pub fn with_pull_secrets(mut self, reader: Option<SecretReader>) -> Self {
        self.pull_secrets = reader;
        self
    }

    /// The credentials of the pull secrets of every object that runs one of `images`, when
    /// pull secrets are read (see [`pull_keyring`]).
    async fn keyring(&self, images: &[String]) -> Keyring {
        match &self.pull_secrets {
            Some(reader) => pull_keyring(reader, &self.engine, &self.inventory, images).await,
            None => Keyring::default(),
        }
    }

    /// Holds each pass to the background budget of `rates` a registry: says when it cannot
    /// verify every repository within the interval.
    pub fn with_budget(mut self, rates: Rates) -> Self {
        self.rates = Some(rates);
        self
    }

    /// Assesses the pass ahead against the budget: the figure in `/inventory` and the
    /// metric, and one line when it stops (or starts again) fitting.
    fn assess_budget(&self, plan: &Plan) {
        let Some(rates) = self.rates.filter(|r| r.ecr_calls > 0.0) else {
            return;
        };
        let budget = pass_budget::assess(
            plan.repositories
                .iter()
                .map(|(r, images)| (r, images.as_slice())),
            rates,
            (self.interval, SPREAD),
            self.forecast && self.engine.lifecycle().is_some(),
            |repo| {
                self.blobs_counted
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(repo)
                    .copied()
            },
        );
        self.metrics
            .pass_budget_ratio
            .set(budget.as_ref().map_or(0.0, PassBudget::ratio));
        let fits = budget.as_ref().is_none_or(|b| b.fits);
        let before = self
            .fitted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(fits);
        match (&budget, before, fits) {
            (Some(b), Some(true) | None, false) => tracing::warn!(
                registry = %b.registry,
                repositories = b.repositories,
                calls_needed = b.calls_needed,
                calls_available = b.calls_available,
                unit = %b.unit,
                raise = b.flag(),
                "the background budget cannot verify every repository within --recheck-interval: passes will overrun it; raise the rate named in `raise`, or --recheck-interval"
            ),
            (_, Some(false), true) => {
                tracing::info!("the background budget verifies every repository within --recheck-interval again")
            }
            _ => {}
        }
        self.inventory.record_budget(budget);
    }

    async fn verify(&self, images: Vec<String>) {
        let keyring = self.keyring(&images).await;
        let forecasts = record(
            &self.engine,
            &self.inventory,
            (images, &keyring),
            REPOSITORY_DEADLINE,
            self.forecast,
        )
        .await;
        self.unread.tell(&self.metrics, &forecasts.errors);
        if let Some(previews) = &self.previews {
            for (repo, forecast) in forecasts.repositories {
                previews.offer(repo, forecast);
            }
        }
    }

    /// Keeps the distinct blobs of the repository of `image` when it is not ECR's, as the
    /// check of a pass's group (every image of the repository in use) just counted them.
    fn count_blobs(&self, image: &str) {
        let Ok(Some((repo, _))) = self.engine.registries().target(image) else {
            return;
        };
        if repo.registry.ecr().is_some() {
            return;
        }
        if let Some(blobs) = self.engine.blobs_counted(&repo) {
            self.blobs_counted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(repo, blobs);
        }
    }

    /// Passes, one an interval, until the task is dropped (leadership lost, shutdown).
    pub async fn run(&self) {
        self.inventory.wait_synced().await;
        // Until the first pass ends, "stalled" counts from now, not from 1970.
        if self.inventory.last_full_pass().is_none() {
            self.metrics
                .last_full_pass
                .set(unix_seconds(SystemTime::now()));
        }
        let mut start = Instant::now();
        loop {
            self.pass(start).await;
            let next = start + self.interval;
            self.wait_until(next, &HashSet::new()).await;
            start = next.max(Instant::now());
        }
    }

    /// One full pass started at `start`: each repository at its turn.
    async fn pass(&self, start: Instant) {
        let began = SystemTime::now();
        self.restores
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .refused
            .clear();
        self.looked
            .store(self.inventory.generation(), Ordering::SeqCst);
        let plan = self.plan().await;
        self.assess_budget(&plan);
        let planned: HashSet<String> = plan.images().cloned().collect();
        let groups = plan.into_groups();
        let turns = groups.len().max(1) as f64;
        let mut published = Instant::now();
        let mut every = PUBLISH_EVERY;
        for (i, images) in groups.into_iter().enumerate() {
            let due = start + self.interval.mul_f64(SPREAD * i as f64 / turns);
            self.wait_until(due, &planned).await;
            let first = images.first().cloned();
            self.verify(images).await;
            if let Some(first) = first {
                self.count_blobs(&first);
            }
            if published.elapsed() >= every {
                every = PUBLISH_EVERY.max(self.publish().await * WALK_SHARE);
                published = Instant::now();
            }
        }
        let done = SystemTime::now();
        let (plan, in_use) = self.pass_done(done).await;
        self.unread.retain(&plan.repositories);
        self.blobs_counted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|repo, _| plan.repositories.contains_key(repo));
        // Restores are remembered while their image is in use, not for ever.
        self.restores
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .started
            .retain(|image| in_use.contains(image));
        self.publish().await;
        self.metrics.last_full_pass.set(unix_seconds(done));
        let took = done.duration_since(began).unwrap_or_default();
        self.metrics.cycle_duration.set(took.as_secs_f64());
        tracing::info!(images = planned.len(), took = ?took, "re-verified every image in use");
    }

    /// Sleeps until `due`, verifying on the way images that appeared and are neither
    /// verified nor planned in this pass. A change is noticed whenever it was made: the
    /// generation last looked at is kept across waits and checks.
    async fn wait_until(&self, due: Instant, planned: &HashSet<String>) {
        loop {
            let current = self.inventory.generation();
            if self.looked.swap(current, Ordering::SeqCst) != current {
                let fresh: Vec<String> = self
                    .images()
                    .await
                    .into_iter()
                    .filter(|i| !planned.contains(&**i) && !self.inventory.is_verified(i))
                    .map(String::from)
                    .collect();
                if !fresh.is_empty() {
                    tracing::debug!(
                        images = fresh.len(),
                        "verifying images new to the inventory"
                    );
                    self.verify(fresh).await;
                    self.publish().await;
                    continue;
                }
            }
            let now = Instant::now();
            if now >= due {
                return;
            }
            tokio::time::sleep_until(due.min(now + NEW_IMAGE_POLL)).await;
        }
    }

    /// Returns how long the walk over every workload took.
    async fn publish(&self) -> Duration {
        self.metrics
            .objects
            .set(i64::try_from(self.inventory.objects()).unwrap_or(i64::MAX));
        let published = self.signals.publish(&self.inventory).await;
        if self.restore_archived {
            self.restore_archived(&published.archived).await;
        }
        published.took
    }

    /// Starts restoring each archived image in use, once (`--restore-archived-in-use`), and
    /// tells every workload that uses it: `rows` are the workload containers whose image is
    /// archived.
    async fn restore_archived(&self, rows: &[Row]) {
        let Some(facts) = self.engine.lifecycle() else {
            return;
        };
        let archived: BTreeSet<&str> = rows.iter().map(|r| &*r.container.image).collect();
        for image in archived {
            {
                let restores = self.restores.lock().unwrap_or_else(|p| p.into_inner());
                if restores.started.contains(image) || restores.refused.contains(image) {
                    continue;
                }
            }
            let Ok(ImageTarget::Ecr { repo, id }) = ImageTarget::classify(image) else {
                continue;
            };
            let started = facts.restore(&repo, &id).await;
            {
                let mut restores = self.restores.lock().unwrap_or_else(|p| p.into_inner());
                match &started {
                    Ok(_) => restores.started.insert(image.into()),
                    Err(_) => restores.refused.insert(image.into()),
                };
            }
            match started {
                Ok(Restore::Started) => {
                    tracing::info!(image, "restore of an archived image in use started");
                    let users = rows.iter().filter(|r| &*r.container.image == image);
                    self.signals.restore_started(users);
                }
                Ok(Restore::UnderWay) => {
                    tracing::info!(image, "an archived image in use is already being restored (ACTIVATING); not asked again");
                }
                Err(e) => {
                    tracing::warn!(image, error = %e, "cannot start restoring an archived image in use; trying again next pass");
                }
            }
        }
    }

    /// The images in use, gathered on the walks' thread (a walk over every workload).
    async fn images(&self) -> BTreeSet<Box<str>> {
        let inventory = self.inventory.clone();
        walks::run(move || inventory.images())
            .await
            .unwrap_or_default()
    }

    /// The images in use by repository, gathered and classified once, on the walks' thread.
    async fn plan(&self) -> Plan {
        let inventory = self.inventory.clone();
        let registries = self.engine.registries().clone();
        walks::run(move || Plan::of(inventory.images(), &registries))
            .await
            .unwrap_or_default()
    }

    /// A pass ended at `done`: the inventory forgets the images no longer in use (on the
    /// walks' thread); what is in use now, by repository, and as a set.
    async fn pass_done(&self, done: SystemTime) -> (Plan, HashSet<Box<str>>) {
        let inventory = self.inventory.clone();
        let registries = self.engine.registries().clone();
        walks::run(move || {
            let plan = Plan::of(inventory.images(), &registries);
            let in_use: HashSet<Box<str>> = plan.images().map(|i| i.as_str().into()).collect();
            inventory.full_pass_done(done, &in_use);
            (plan, in_use)
        })
        .await
        .unwrap_or_default()
    }
}

/// The credentials of the pull secrets of every object of `inventory` that runs one of
/// `images`, when `engine` asks a registry other than ECR's for one: the users are found with
/// a walk on the walks' thread, each Secret read at most once a minute.
pub async fn pull_keyring(
    reader: &SecretReader,
    engine: &Engine,
    inventory: &Arc<Inventory>,
    images: &[String],
) -> Keyring {
    if !engine.asks_other_registries(images) {
        return Keyring::default();
    }
    let inventory = inventory.clone();
    let wanted = images.to_vec();
    let uses = walks::run(move || inventory.pull_secrets_of(&wanted))
        .await
        .unwrap_or_default();
    let mut keyring = Keyring::default();
    for (namespace, names) in &uses {
        let names: Vec<&str> = names.iter().map(|n| &**n).collect();
        keyring.extend(&reader.keyring(namespace, &names).await);
    }
    keyring
}

fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// What a verification's forecasts found: the repositories read and those that could not be.
#[derive(Debug, Default)]
pub struct Recorded {
    /// The forecast of each repository whose policy was read.
    pub repositories: Vec<(RepositoryKey, RepositoryForecast)>,
    /// Repositories whose policy or images could not be read, and why.
    pub errors: Vec<(RepositoryKey, expiry::ExpiryError)>,
}

/// Checks `images` now (within `budget`, registries other than ECR's asked with `keyring`'s
/// credentials) and records what the registries said in `inventory`; then, with
/// `forecast` and when the registry has lifecycle calls, when a rule will act on each
/// (within the same budget), and why an image has no forecast.
pub async fn record(
    engine: &Engine,
    inventory: &Inventory,
    (images, keyring): (Vec<String>, &Keyring),
    budget: Duration,
    forecast: bool,
) -> Recorded {
    if images.is_empty() {
        return Recorded::default();
    }
    let deadline = Instant::now() + budget;
    let reports = engine.check_pulling(&images, keyring, deadline).await;
    let at = SystemTime::now();
    let reads = reports
        .iter()
        .map(|r| async {
            match engine.platforms_of(inventory.configs(), &r.image, keyring, deadline).await? {
                Ok(platforms) => Some(platforms),
                Err(why) => {
                    tracing::debug!(image = %r.image, error = %why, "cannot read the platform of an image in use");
                    None
                }
            }
        });
    let platforms = futures::future::join_all(reads).await;
    inventory.record(
        reports
            .into_iter()
            .zip(platforms)
            .map(|(report, platforms)| Verified {
                resolved: engine.resolved_digest(&report.image),
                platforms,
                report,
                at,
            }),
    );
    let Some(facts) = engine.lifecycle().filter(|_| forecast) else {
        return Recorded::default();
    };
    let digests_of = |image: &str| engine.manifest_digests(image);
    let forecasting = expiry::forecast_images(facts, &images, digests_of, expiry::now());
    let Ok(forecasts) = tokio::time::timeout_at(deadline, forecasting).await else {
        tracing::warn!(
            images = images.len(),
            "reading lifecycle policies timed out; forecasts kept from before"
        );
        return Recorded::default();
    };
    inventory.record_expiry(forecasts.images, forecasts.unread);
    Recorded {
        repositories: forecasts.repositories,
        errors: forecasts.errors,
    }
}

/// Repositories whose lifecycle policy could not be read: each is logged once per process
/// (an AWS-owned repository answers AccessDenied every pass, forever) and counted each time.
#[derive(Default)]
struct UnreadPolicies {
    told: Mutex<HashSet<RepositoryKey>>,
}

impl UnreadPolicies {
    fn tell(&self, metrics: &WatchMetrics, errors: &[(RepositoryKey, expiry::ExpiryError)]) {
        let mut told = self.told.lock().unwrap_or_else(|p| p.into_inner());
        for (repo, error) in errors {
            let labels = crate::metrics::RepositoryLabels {
                repository: repo.to_string(),
            };
            metrics.forecast_errors.get_or_create(&labels).inc();
            if told.insert(repo.clone()) {
                tracing::warn!(
                    repository = %repo,
                    error = %error,
                    "cannot forecast lifecycle policies' actions for this repository; told once, counted in ecr_preflight_lifecycle_forecast_errors_total, the reason shown in /inventory (no_forecast)"
                );
            }
        }
    }

    /// Forgets repositories no longer in use.
    fn retain<V>(&self, in_use: &BTreeMap<RepositoryKey, V>) {
        self.told
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|r| in_use.contains_key(r));
    }
}

/// The images in use, each classified once: ECR's by repository, in a stable order, and the
/// others (not ECR's, or not valid references), which cost no call.
#[derive(Debug, Default)]
pub struct Plan {
    local: Vec<String>,
    repositories: BTreeMap<RepositoryKey, Vec<String>>,
}

impl Plan {
    pub fn of(images: impl IntoIterator<Item = Box<str>>, registries: &Registries) -> Self {
        let mut plan = Plan::default();
        for image in images {
            match registries.target(&image) {
                Ok(Some((repo, _))) => plan
                    .repositories
                    .entry(repo)
                    .or_default()
                    .push(image.into()),
                _ => plan.local.push(image.into()),
            }
        }
        plan
    }

    pub fn images(&self) -> impl Iterator<Item = &String> {
        self.local
            .iter()
            .chain(self.repositories.values().flatten())
    }

    /// One group a repository; the images that are not ECR's form a group of their own,
    /// first.
    pub fn into_groups(self) -> Vec<Vec<String>> {
        let mut groups: Vec<Vec<String>> = Vec::with_capacity(self.repositories.len() + 1);
        if !self.local.is_empty() {
            groups.push(self.local);
        }
        groups.extend(self.repositories.into_values());
        groups
    }
}
