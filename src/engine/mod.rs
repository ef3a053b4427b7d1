//! The engine: from image references to findings, through the registry seam.
//!
//! Per repository, at most three sequential round trips: `BatchGetImage` for the references,
//! `BatchGetImage` for the wanted children of indexes, `BatchCheckLayerAvailability` for every
//! blob. Repositories run in parallel, each bounded by the request's deadline.

mod batcher;
mod cache;
mod calls;
mod repository;
mod retry;
mod upstream;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use foldhash::HashMap as FastMap;
use futures::future::join_all;
use tokio::time::Instant;

use crate::findings::{Finding, ImageReport, Outcome};
use crate::image::{EcrRegistry, ImageId, Registries, RegistryName, RepositoryKey};
use crate::manifest::{Manifest, Platform};
use crate::metrics::EngineMetrics;
use crate::platforms::ConfigCache;
use crate::pull_secrets::Keyring;
use crate::registry::{LifecycleFacts, PullThroughRule, Registry};
use crate::ttl_map::TtlMap;
pub use cache::CacheSettings;
use cache::Caches;
pub use calls::CallStats;
use calls::{EcrCaller, RepoState};

/// Where an image's platforms come from (see [`Engine::image_platforms`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImagePlatforms {
    /// An index: its children's platforms.
    Index(Vec<Platform>),
    /// A single-arch image: its config blob says.
    Config { repo: RepositoryKey, digest: String },
}

/// What the engine needs to know beyond the registry.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Index children to check (`--platforms`); the cluster's platforms widen it (see
    /// [`Engine::widen_platforms`]).
    pub platforms: Vec<Platform>,
    /// Repository prefixes served by pull-through cache rules.
    pub pull_through_prefixes: Vec<String>,
    pub cache: CacheSettings,
    /// At most how long keys that arrive while a call is in flight wait for it to return
    /// before they are sent anyway; zero sends every batch as soon as it is made.
    pub batch_window: Duration,
    /// Which registries besides ECR's are checked (`--registries`).
    pub registries: Registries,
}

impl EngineSettings {
    /// Default caches and batching for `platforms`.
    pub fn new(platforms: Vec<Platform>) -> Self {
        EngineSettings {
            platforms,
            pull_through_prefixes: Vec::new(),
            cache: CacheSettings::default(),
            batch_window: DEFAULT_BATCH_WINDOW,
            registries: Registries::default(),
        }
    }
}

/// Longer than most in-region ECR round trips, so that a storm's keys gather behind the call
/// in flight (3 calls a repository at most, however the arrivals fall within two round
/// trips); short enough that a stuck call delays the keys behind it by little. A lone
/// admission never waits for it (see the batcher).
pub const DEFAULT_BATCH_WINDOW: Duration = Duration::from_millis(50);

/// Checks images against ECR. Shared by the webhook and the CLI.
pub struct Engine {
    settings: EngineSettings,
    /// What every repository's batchers share: the registry, the caches, the call counters
    /// and metrics; the engine reads the caches and counters through it too.
    caller: EcrCaller,
    /// Per-repository batchers, bounded and dropped when idle.
    repos: moka::sync::Cache<RepositoryKey, Arc<RepoState>>,
    /// The index children checked: `settings.platforms` and those the cluster's nodes and
    /// NodePools added. Read once per repository checked, never on the warm path.
    checked: RwLock<Arc<[Platform]>>,
    /// Moves on each widening, so that a check made for fewer platforms is not remembered
    /// as intact after it.
    widenings: AtomicU64,
    /// ECR registries' pull-through cache rules (see `upstream.rs`).
    rules: TtlMap<EcrRegistry, Arc<[PullThroughRule]>>,
    /// Where images ECR has not cached yet were checked instead: their upstream's
    /// repository and tag or digest, for their platforms. As long as a tag is trusted.
    upstreams: TtlMap<Arc<str>, (RepositoryKey, ImageId)>,
    /// How many distinct blobs each repository's images had at its last check.
    blobs_counted: TtlMap<Arc<RepositoryKey>, usize>,
}

/// How long a repository's batchers are kept without use.
const REPO_IDLE: Duration = Duration::from_secs(600);
const MAX_REPOS: u64 = 10_000;

/// The images of one request: what is already known of each, and what is left to ask ECR,
/// by repository.
#[derive(Default)]
struct Plan<'a> {
    // foldhash: per-request maps of a few entries, where SipHash cost more than the lookups.
    known: FastMap<&'a str, (Finding, bool)>,
    targets: FastMap<&'a str, (RepositoryKey, ImageId)>,
    by_repo: BTreeMap<RepositoryKey, BTreeSet<ImageId>>,
}

impl Engine {
    pub fn new(registry: Arc<dyn Registry>, settings: EngineSettings) -> Self {
        Engine::with_metrics(registry, settings, EngineMetrics::default())
    }

    /// An engine for background work beside this one: its own caches and batchers (its
    /// lookups never queue behind admission's, nor admission's behind its), its ECR calls
    /// counted in this engine's series as `source="watch"`.
    pub fn background(&self, registry: Arc<dyn Registry>, settings: EngineSettings) -> Self {
        Engine::with_metrics(registry, settings, self.caller.metrics.background())
    }

    fn with_metrics(
        registry: Arc<dyn Registry>,
        settings: EngineSettings,
        metrics: EngineMetrics,
    ) -> Self {
        registry.count_client_evictions(metrics.ecr_clients_evicted.clone());
        Engine {
            caller: EcrCaller {
                registry,
                stats: Arc::new(CallStats::default()),
                caches: Arc::new(Caches::new(&settings.cache, metrics.clone())),
                metrics,
                window: settings.batch_window,
            },
            repos: moka::sync::Cache::builder()
                .max_capacity(MAX_REPOS)
                .time_to_idle(REPO_IDLE)
                .build(),
            checked: RwLock::new(settings.platforms.clone().into()),
            widenings: AtomicU64::new(0),
            rules: TtlMap::new(upstream::REGISTRIES_KEPT, upstream::RULES_TTL),
            upstreams: TtlMap::new(settings.cache.tag_capacity, settings.cache.tag_ttl),
            blobs_counted: TtlMap::new(MAX_REPOS, REPO_IDLE),
            settings,
        }
    }

    /// Entries held now per cache: (tags, manifests, blobs).
    pub fn cache_sizes(&self) -> (u64, u64, u64) {
        self.caller.caches.sizes()
    }

    pub fn stats(&self) -> &CallStats {
        &self.caller.stats
    }

    /// The digest `image`'s tag resolved to when it was last checked (within the tag
    /// cache's lifetime); a digest reference's own digest.
    pub fn resolved_digest(&self, image: &str) -> Option<Arc<str>> {
        match self.settings.registries.target(image).ok()?? {
            (_, ImageId::Digest(d)) => Some(d.into()),
            (repo, ImageId::Tag(t)) => self.caller.caches.tag(&Arc::new(repo), &t),
        }
    }

    /// Which registries besides ECR's this engine checks.
    pub fn registries(&self) -> &Registries {
        &self.settings.registries
    }

    /// The lifecycle calls of the registry, when it has them.
    pub fn lifecycle(&self) -> Option<&dyn LifecycleFacts> {
        self.caller.registry.lifecycle()
    }

    /// The digests of what `image` named when it was last checked (within the caches'
    /// lifetime): the manifest its tag resolved to and, for an index, every child.
    pub fn manifest_digests(&self, image: &str) -> Vec<String> {
        let Ok(Some((repo, _))) = self.settings.registries.target(image) else {
            return Vec::new();
        };
        let Some(digest) = self.resolved_digest(image) else {
            return Vec::new();
        };
        let mut digests = vec![digest.to_string()];
        if let Some(manifest) = self.caller.caches.manifest(&Arc::new(repo), &digest) {
            if let Manifest::Index { children } = manifest.as_ref() {
                digests.extend(children.iter().map(|c| c.digest.clone()));
            }
        }
        digests
    }

    /// How many distinct blobs the images of `repo` checked together last had (within
    /// [`REPO_IDLE`]).
    pub fn blobs_counted(&self, repo: &RepositoryKey) -> Option<usize> {
        self.blobs_counted.get(&Arc::new(repo.facts()))
    }

    /// What says the platforms of the image `image` named when it was last checked: an
    /// index's children (build attestations left out), or a single-arch image's config
    /// blob; `None` when it was not checked (or is not ECR's). One reference parse and one
    /// lookup in each cache: it runs on the warm path.
    pub fn image_platforms(&self, image: &str) -> Option<ImagePlatforms> {
        let (repo, id) = match self.upstreams.get(image) {
            Some(upstream) => upstream,
            None => self.settings.registries.target(image).ok()??,
        };
        let repo = Arc::new(repo);
        let digest: Arc<str> = match id {
            ImageId::Digest(d) => d.into(),
            ImageId::Tag(t) => self.caller.caches.tag(&repo, &t)?,
        };
        let manifest = self.caller.caches.manifest(&repo, &digest)?;
        Some(match manifest.as_ref() {
            Manifest::Index { children } => ImagePlatforms::Index(
                children
                    .iter()
                    .filter(|c| !c.attestation)
                    .filter_map(|c| c.platform.clone())
                    .collect(),
            ),
            Manifest::Image { blobs } => ImagePlatforms::Config {
                repo: Arc::unwrap_or_clone(repo),
                digest: blobs.first()?.clone(),
            },
        })
    }

    /// The platforms `image` has, when already known: one lookup, for the warm path.
    pub fn known_platforms(&self, image: &str) -> Option<Arc<[Platform]>> {
        self.caller.caches.platforms(image)
    }

    /// The platforms `image` has: its index's children, else its config blob's platform
    /// (read through `configs` once per digest, within `deadline`). `None` when it was not
    /// checked (or is not ECR's), or a single-arch image without `configs`; `Err` says why a
    /// config blob could not be read. A registry other than ECR's is asked with `keyring`'s
    /// credentials for the image. Remembered per reference as long as its tag and manifest
    /// are.
    pub async fn platforms_of(
        &self,
        configs: Option<&ConfigCache>,
        image: &str,
        keyring: &Keyring,
        deadline: Instant,
    ) -> Option<Result<Arc<[Platform]>, String>> {
        if let Some(known) = self.known_platforms(image) {
            return Some(Ok(known));
        }
        let available: Arc<[Platform]> = match self.image_platforms(image)? {
            ImagePlatforms::Index(children) => children.into(),
            ImagePlatforms::Config { mut repo, digest } => {
                if let RegistryName::Distribution(host) = &repo.registry {
                    repo.login = keyring.login_for(host, &repo.repository);
                }
                let host = image.split('/').next().unwrap_or_default();
                let read = configs?.platform(host, &repo, &digest);
                match tokio::time::timeout_at(deadline, read).await {
                    Ok(Ok(platform)) => Arc::new([platform]),
                    Ok(Err(e)) => return Some(Err(format!("config blob {digest}: {e}"))),
                    Err(_) => {
                        return Some(Err(format!(
                            "config blob {digest}: the registry did not answer in time"
                        )))
                    }
                }
            }
        };
        self.caller.caches.put_platforms(image, available.clone());
        Some(Ok(available))
    }

    /// Adds `platforms` to the index children checked (those already there are skipped):
    /// the cluster's nodes or NodePools run them, so a pod may need their blobs. Images
    /// already found intact were checked without them and are checked again on next use.
    /// Never narrows: a platform that leaves the cluster costs a child manifest a check,
    /// while narrowing would need every finding made for it forgotten too.
    pub fn widen_platforms(&self, platforms: &[Platform]) {
        let mut checked = self.checked.write().unwrap_or_else(|p| p.into_inner());
        let new: Vec<&Platform> = platforms.iter().filter(|p| !checked.contains(p)).collect();
        if new.is_empty() {
            return;
        }
        tracing::info!(
            added = %new.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
            "index children of the cluster's platforms are checked from now on"
        );
        *checked = checked
            .iter()
            .cloned()
            .chain(new.into_iter().cloned())
            .collect();
        self.widenings.fetch_add(1, Ordering::AcqRel);
        drop(checked);
        self.caller.caches.forget_intact();
    }

    /// The index children checked now.
    pub fn checked_platforms(&self) -> Arc<[Platform]> {
        self.checked
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// ECR call and cache metrics, for registration with the webhook's.
    pub(crate) fn metrics(&self) -> &EngineMetrics {
        &self.caller.metrics
    }

    /// Checks every image (duplicates are checked once) and returns one report per input,
    /// in input order. Never takes longer than `deadline` (plus scheduling).
    pub async fn check(&self, images: &[String], deadline: Instant) -> Vec<ImageReport> {
        self.check_pulling(images, &Keyring::default(), deadline)
            .await
    }

    /// [`Engine::check`], asking registries other than ECR's with the credentials
    /// `keyring` holds for each image (a pod's pull secrets), anonymously where it holds
    /// none. An image found intact is intact whoever asks: its report is kept by reference.
    pub async fn check_pulling(
        &self,
        images: &[String],
        keyring: &Keyring,
        deadline: Instant,
    ) -> Vec<ImageReport> {
        let widenings = self.widenings.load(Ordering::Acquire);
        let Plan {
            mut known,
            targets,
            by_repo,
        } = self.plan(images, keyring);
        // A warm admission (every image known intact) needs no ECR work at all.
        if !by_repo.is_empty() {
            let per_repo = self.check_repositories(by_repo, deadline).await;
            for (image, (repo, id)) in targets {
                let finding = per_repo
                    .get(&repo)
                    .and_then(|m| m.get(&id))
                    .cloned()
                    .unwrap_or_else(|| Finding::Unknown("not checked".to_owned()));
                let pull_through = self.is_pull_through(&repo.repository);
                let current = self.widenings.load(Ordering::Acquire) == widenings;
                if current && finding.outcome() == Outcome::Ok {
                    self.caller
                        .caches
                        .put_intact(image, finding.clone(), pull_through);
                }
                known.insert(image, (finding, pull_through));
            }
        }
        let mut reports = in_input_order(images, known);
        self.check_upstreams(&mut reports, deadline).await;
        reports
    }

    /// Whether any of `images` is checked at a registry other than ECR's (whose pull
    /// secrets then matter).
    pub fn asks_other_registries(&self, images: &[String]) -> bool {
        images.iter().any(|image| {
            matches!(
                self.settings.registries.target(image),
                Ok(Some((
                    RepositoryKey {
                        registry: RegistryName::Distribution(_),
                        ..
                    },
                    _
                )))
            )
        })
    }

    /// What is known of each distinct image (cached intact, not ECR, malformed), and the
    /// rest grouped by repository.
    fn plan<'a>(&self, images: &'a [String], keyring: &Keyring) -> Plan<'a> {
        let mut plan = Plan::default();
        for image in images {
            if plan.known.contains_key(image.as_str()) || plan.targets.contains_key(image.as_str())
            {
                continue;
            }
            if let Some(known) = self.caller.caches.intact(image) {
                plan.known.insert(image, known);
                continue;
            }
            match self.settings.registries.target(image) {
                Err(e) => {
                    let finding = Finding::InvalidReference(e.to_string());
                    plan.known.insert(image, (finding, false));
                }
                Ok(None) => {
                    plan.known.insert(image, (Finding::Skipped, false));
                }
                Ok(Some((mut repo, id))) => {
                    if let (RegistryName::Distribution(host), false) =
                        (&repo.registry, keyring.is_empty())
                    {
                        repo.login = keyring.login_for(host, &repo.repository);
                    }
                    plan.by_repo
                        .entry(repo.clone())
                        .or_default()
                        .insert(id.clone());
                    plan.targets.insert(image, (repo, id));
                }
            }
        }
        plan
    }

    /// The findings of each repository's images, repositories in parallel, each within
    /// the deadline (one that cannot answer in time is `unknown` for its own images only).
    async fn check_repositories(
        &self,
        by_repo: BTreeMap<RepositoryKey, BTreeSet<ImageId>>,
        deadline: Instant,
    ) -> FastMap<RepositoryKey, FastMap<ImageId, Finding>> {
        let budget = deadline.saturating_duration_since(Instant::now());
        let checked = self.checked_platforms();
        let platforms: &[Platform] = &checked;
        let per_repo = join_all(by_repo.into_iter().map(|(repo, ids)| async move {
            let ids: Vec<ImageId> = ids.into_iter().collect();
            let state = self.repo_state(&repo);
            let check = repository::check_repository(&state, &ids, platforms, deadline);
            let findings = match tokio::time::timeout_at(deadline, check).await {
                Ok((findings, blobs)) => {
                    self.blobs_counted.insert(Arc::new(repo.facts()), blobs);
                    findings
                }
                Err(_) => {
                    let who = repo.registry.spoken();
                    let reason = format!("no answer from {who} within {}", human(budget));
                    ids.iter()
                        .map(|id| (id.clone(), Finding::Unknown(reason.clone())))
                        .collect()
                }
            };
            (repo, findings)
        }))
        .await;
        per_repo.into_iter().collect()
    }

    fn is_pull_through(&self, repository: &str) -> bool {
        self.settings
            .pull_through_prefixes
            .iter()
            .any(|p| !p.is_empty() && repository.starts_with(p.as_str()))
    }

    /// The batchers of `repo`, made on first use.
    fn repo_state(&self, repo: &RepositoryKey) -> Arc<RepoState> {
        self.repos
            .get_with_by_ref(repo, || Arc::new(self.caller.repository(repo)))
    }
}

/// One report per image, in input order. Each finding moves into its report; only a
/// repeated image's is cloned.
fn in_input_order(
    images: &[String],
    mut known: FastMap<&str, (Finding, bool)>,
) -> Vec<ImageReport> {
    let mut reports: Vec<ImageReport> = Vec::with_capacity(images.len());
    for image in images {
        let (finding, pull_through) = match known.remove(image.as_str()) {
            Some(found) => found,
            None => reports
                .iter()
                .find(|r| r.image == *image)
                .map_or((Finding::Skipped, false), |r| {
                    (r.finding.clone(), r.pull_through)
                }),
        };
        reports.push(ImageReport::new(image.clone(), finding, pull_through));
    }
    reports
}

/// `2.5s`, `300ms`.
fn human(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}ms", d.as_millis())
    }
}
