//! The engine: from image references to findings, through the registry seam.
//!
//! Per repository, at most three sequential round trips: `BatchGetImage` for the references,
//! `BatchGetImage` for the wanted children of indexes, `BatchCheckLayerAvailability` for every
//! blob. Repositories run in parallel, each bounded by the request's deadline.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use foldhash::HashMap as FastMap;
use futures::future::{join_all, FutureExt};
use tokio::time::Instant;

use crate::batcher::{CallFn, Coalescer, KnownFn};
use crate::cache::{CacheSettings, Caches};
use crate::image::{ImageId, ImageTarget, RepositoryKey};
use crate::manifest::{self, Manifest, Platform};
use crate::metrics::{EcrOperation, EngineMetrics};
use crate::registry::{BlobState, FetchedManifest, Registry, RegistryError};
use crate::retry::with_retries;

/// What the engine needs to know beyond the registry.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Index children to check.
    pub platforms: Vec<Platform>,
    /// Repository prefixes served by pull-through cache rules.
    pub pull_through_prefixes: Vec<String>,
    pub cache: CacheSettings,
    /// How long a batch waits for more keys before it is sent.
    pub batch_window: Duration,
}

impl EngineSettings {
    /// Default caches and batching for `platforms`.
    pub fn new(platforms: Vec<Platform>) -> Self {
        EngineSettings {
            platforms,
            pull_through_prefixes: Vec::new(),
            cache: CacheSettings::default(),
            batch_window: DEFAULT_BATCH_WINDOW,
        }
    }
}

/// Long enough for concurrent admissions to share a call, short against an ECR round trip.
pub const DEFAULT_BATCH_WINDOW: Duration = Duration::from_millis(2);

/// The result of checking one image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageReport {
    /// The reference as written in the object.
    pub image: String,
    pub finding: Finding,
    /// The repository is filled by a pull-through cache rule on first pull.
    pub pull_through: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// Not an ECR image.
    Skipped,
    InvalidReference(String),
    NotFound(NotFound),
    /// An index without a child for any wanted platform.
    NoPlatform {
        wanted: Vec<Platform>,
    },
    /// The blobs of each checked manifest (one for a single-arch image).
    Checked(Vec<PlatformCheck>),
    /// ECR could not answer; the reason names the error.
    Unknown(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotFound {
    Tag(String),
    Digest(String),
    Repository {
        repository: String,
        registry: String,
    },
}

/// The blob check of one manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformCheck {
    /// The index child's platform; `None` for a single-arch image.
    pub platform: Option<Platform>,
    /// Blobs checked (config and distributable layers).
    pub total: usize,
    /// `MissingLayerDigest` or `UNAVAILABLE`, in manifest order.
    pub missing: Vec<String>,
    pub archived: Vec<String>,
    /// Blobs ECR did not answer for.
    pub unanswered: usize,
    /// The index named this child but ECR has no such manifest.
    pub manifest_missing: Option<String>,
    /// The child manifest could not be read.
    pub unreadable: Option<String>,
}

/// The per-image outcome, as reported in logs, metrics and the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    Ok,
    Missing,
    Archived,
    NotFound,
    NoPlatform,
    InvalidReference,
    Skipped,
    Unknown,
}

impl Outcome {
    /// Every outcome, in declaration order (so `ALL[o as usize] == o`).
    pub const ALL: [Outcome; 8] = [
        Outcome::Ok,
        Outcome::Missing,
        Outcome::Archived,
        Outcome::NotFound,
        Outcome::NoPlatform,
        Outcome::InvalidReference,
        Outcome::Skipped,
        Outcome::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Missing => "missing",
            Outcome::Archived => "archived",
            Outcome::NotFound => "not_found",
            Outcome::NoPlatform => "no_platform",
            Outcome::InvalidReference => "invalid_reference",
            Outcome::Skipped => "skipped",
            Outcome::Unknown => "unknown",
        }
    }
}

impl ImageReport {
    pub fn outcome(&self) -> Outcome {
        match &self.finding {
            Finding::Skipped => Outcome::Skipped,
            Finding::InvalidReference(_) => Outcome::InvalidReference,
            Finding::NotFound(_) => Outcome::NotFound,
            Finding::NoPlatform { .. } => Outcome::NoPlatform,
            Finding::Unknown(_) => Outcome::Unknown,
            Finding::Checked(platforms) => {
                let any = |f: fn(&PlatformCheck) -> bool| platforms.iter().any(f);
                if any(|p| !p.missing.is_empty() || p.manifest_missing.is_some()) {
                    Outcome::Missing
                } else if any(|p| !p.archived.is_empty()) {
                    Outcome::Archived
                } else if any(|p| p.unanswered > 0 || p.unreadable.is_some()) {
                    Outcome::Unknown
                } else {
                    Outcome::Ok
                }
            }
        }
    }
}

/// Checks images against ECR. Shared by the webhook and the CLI.
pub struct Engine {
    registry: Arc<dyn Registry>,
    settings: EngineSettings,
    caches: Arc<Caches>,
    /// Per-repository batchers, bounded and dropped when idle.
    repos: moka::sync::Cache<RepositoryKey, Arc<RepoState>>,
    stats: Arc<CallStats>,
    metrics: EngineMetrics,
}

/// ECR calls made, per operation: for metrics and the call-count benchmarks.
#[derive(Debug, Default)]
pub struct CallStats {
    pub batch_get_image: AtomicU64,
    pub batch_check_layer_availability: AtomicU64,
    pub errors: AtomicU64,
    pub retries: AtomicU64,
}

/// What `BatchGetImage` said about one requested id, manifest already parsed.
#[derive(Debug, Clone)]
enum ImageAnswer {
    Found {
        manifest: Result<Arc<Manifest>, String>,
    },
    NotFound,
    Failed(String),
}

/// One repository's batchers.
struct RepoState {
    key: Arc<RepositoryKey>,
    images: Arc<Coalescer<ImageId, ImageAnswer>>,
    blobs: Arc<Coalescer<String, BlobState>>,
}

/// A manifest the blob check will look at, or why it cannot.
#[derive(Debug)]
enum Planned {
    Manifest(Arc<Manifest>),
    /// The index names a child ECR does not have.
    MissingChild(String),
    Unreadable(String),
}

/// How long a repository's batchers are kept without use.
const REPO_IDLE: Duration = Duration::from_secs(600);
const MAX_REPOS: u64 = 10_000;

impl Engine {
    pub fn new(registry: Arc<dyn Registry>, settings: EngineSettings) -> Self {
        let metrics = EngineMetrics::default();
        Engine {
            registry,
            caches: Arc::new(Caches::new(&settings.cache, metrics.clone())),
            metrics,
            repos: moka::sync::Cache::builder()
                .max_capacity(MAX_REPOS)
                .time_to_idle(REPO_IDLE)
                .build(),
            settings,
            stats: Arc::new(CallStats::default()),
        }
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    pub fn caches(&self) -> &Caches {
        &self.caches
    }

    pub fn stats(&self) -> &CallStats {
        &self.stats
    }

    /// ECR call and cache metrics, for registration with the webhook's.
    pub fn metrics(&self) -> &EngineMetrics {
        &self.metrics
    }

    /// Checks every image (duplicates are checked once) and returns one report per input,
    /// in input order. Never takes longer than `deadline` (plus scheduling).
    pub async fn check(&self, images: &[String], deadline: Instant) -> Vec<ImageReport> {
        // foldhash: per-request maps of a few entries, where SipHash cost more than the lookups.
        let mut findings: FastMap<&str, (Finding, bool)> = FastMap::default();
        let mut by_repo: BTreeMap<RepositoryKey, BTreeSet<ImageId>> = BTreeMap::new();
        let mut targets: FastMap<&str, (RepositoryKey, ImageId)> = FastMap::default();
        for image in images {
            if findings.contains_key(image.as_str()) || targets.contains_key(image.as_str()) {
                continue;
            }
            if let Some(known) = self.caches.intact(image) {
                findings.insert(image, known);
                continue;
            }
            match ImageTarget::classify(image) {
                Err(e) => {
                    findings.insert(image, (Finding::InvalidReference(e.to_string()), false));
                }
                Ok(ImageTarget::Other(_)) => {
                    findings.insert(image, (Finding::Skipped, false));
                }
                Ok(ImageTarget::Ecr { repo, id }) => {
                    by_repo.entry(repo.clone()).or_default().insert(id.clone());
                    targets.insert(image, (repo, id));
                }
            }
        }
        // A warm admission (every image known intact) needs no ECR work at all.
        if !by_repo.is_empty() {
            let budget = deadline.saturating_duration_since(Instant::now());
            let per_repo = join_all(by_repo.into_iter().map(|(repo, ids)| async move {
                let ids: Vec<ImageId> = ids.into_iter().collect();
                let state = self.repo_state(&repo);
                let result = tokio::time::timeout_at(
                    deadline,
                    self.check_repository(&state, &ids, deadline),
                )
                .await;
                let findings = result.unwrap_or_else(|_| {
                    let reason = format!("no answer from ECR within {}", human(budget));
                    ids.iter()
                        .map(|id| (id.clone(), Finding::Unknown(reason.clone())))
                        .collect()
                });
                (repo, findings)
            }))
            .await;
            let per_repo: FastMap<RepositoryKey, HashMap<ImageId, Finding>> =
                per_repo.into_iter().collect();
            for (image, (repo, id)) in &targets {
                let finding = per_repo
                    .get(repo)
                    .and_then(|m| m.get(id))
                    .cloned()
                    .unwrap_or_else(|| Finding::Unknown("not checked".to_owned()));
                let pull_through = self.is_pull_through(&repo.repository);
                let report = ImageReport {
                    image: String::new(),
                    finding,
                    pull_through,
                };
                if report.outcome() == Outcome::Ok {
                    self.caches
                        .put_intact(image, report.finding.clone(), pull_through);
                }
                findings.insert(image, (report.finding, pull_through));
            }
        }
        // Each finding moves into its report; only a repeated image's is cloned.
        let mut reports: Vec<ImageReport> = Vec::with_capacity(images.len());
        for image in images {
            let (finding, pull_through) = match findings.remove(image.as_str()) {
                Some(found) => found,
                None => reports
                    .iter()
                    .find(|r| r.image == *image)
                    .map_or((Finding::Skipped, false), |r| {
                        (r.finding.clone(), r.pull_through)
                    }),
            };
            reports.push(ImageReport {
                image: image.clone(),
                finding,
                pull_through,
            });
        }
        reports
    }

    fn is_pull_through(&self, repository: &str) -> bool {
        self.settings
            .pull_through_prefixes
            .iter()
            .any(|p| !p.is_empty() && repository.starts_with(p.as_str()))
    }

    /// The batchers of `repo`, made on first use.
    fn repo_state(&self, repo: &RepositoryKey) -> Arc<RepoState> {
        self.repos.get_with_by_ref(repo, || {
            let key = Arc::new(repo.clone());
            Arc::new(RepoState {
                images: self.image_batcher(key.clone()),
                blobs: self.blob_batcher(key.clone()),
                key,
            })
        })
    }

    fn caller(&self) -> EcrCaller {
        EcrCaller {
            registry: self.registry.clone(),
            stats: self.stats.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// `BatchGetImage` through the batcher; answers are parsed once and cached.
    fn image_batcher(&self, repo: Arc<RepositoryKey>) -> Arc<Coalescer<ImageId, ImageAnswer>> {
        let repo_for_known = repo.clone();
        let caller = self.caller();
        let caches = self.caches.clone();
        let call: CallFn<ImageId, ImageAnswer> =
            Arc::new(move |ids: Vec<ImageId>, deadline: Instant| {
                let (caller, caches, repo) = (caller.clone(), caches.clone(), repo.clone());
                async move {
                    let out = caller
                        .call(EcrOperation::BatchGetImage, deadline, || {
                            caller.registry.batch_get_image(&repo, &ids)
                        })
                        .await?;
                    Ok(match_answers(&ids, out)
                        .into_iter()
                        .map(|(id, lookup)| {
                            let answer = match lookup {
                                Lookup::NotFound => ImageAnswer::NotFound,
                                Lookup::Failed(reason) => ImageAnswer::Failed(reason),
                                Lookup::Found(fetched) => {
                                    parse_and_cache(&caches, &repo, &id, fetched)
                                }
                            };
                            (id, answer)
                        })
                        .collect())
                }
                .boxed()
            });
        let (caches, key) = (self.caches.clone(), repo_for_known);
        let known: KnownFn<ImageId, ImageAnswer> = Arc::new(move |id: &ImageId| {
            let digest: Arc<str> = match id {
                ImageId::Tag(t) => caches.tag(&key, t)?,
                ImageId::Digest(d) => d.as_str().into(),
            };
            let manifest = caches.manifest(&key, &digest)?;
            Some(ImageAnswer::Found {
                manifest: Ok(manifest),
            })
        });
        Coalescer::new(self.settings.batch_window, call, known)
    }

    /// `BatchCheckLayerAvailability` through the batcher; AVAILABLE answers are cached.
    fn blob_batcher(&self, repo: Arc<RepositoryKey>) -> Arc<Coalescer<String, BlobState>> {
        let repo_for_known = repo.clone();
        let caller = self.caller();
        let caches = self.caches.clone();
        let call: CallFn<String, BlobState> =
            Arc::new(move |digests: Vec<String>, deadline: Instant| {
                let (caller, caches, repo) = (caller.clone(), caches.clone(), repo.clone());
                async move {
                    let out = caller
                        .call(EcrOperation::BatchCheckLayerAvailability, deadline, || {
                            caller
                                .registry
                                .batch_check_layer_availability(&repo, &digests)
                        })
                        .await?;
                    for (digest, state) in &out.blobs {
                        if *state == BlobState::Available {
                            caches.put_blob_available(&repo, digest);
                        }
                    }
                    Ok(out.blobs.into_iter().collect())
                }
                .boxed()
            });
        let (caches, key) = (self.caches.clone(), repo_for_known);
        let known: KnownFn<String, BlobState> = Arc::new(move |digest: &String| {
            caches
                .blob_available(&key, digest)
                .then_some(BlobState::Available)
        });
        Coalescer::new(self.settings.batch_window, call, known)
    }

    /// Manifests for `ids`, from the caches or through the batcher.
    async fn resolve(
        &self,
        repo: &RepoState,
        ids: &[ImageId],
        deadline: Instant,
    ) -> HashMap<ImageId, Result<ImageAnswer, RegistryError>> {
        let mut out = HashMap::new();
        let mut wanted = Vec::new();
        for id in ids {
            let digest: Option<Arc<str>> = match id {
                ImageId::Tag(t) => self.caches.tag(&repo.key, t),
                ImageId::Digest(d) => Some(d.as_str().into()),
            };
            match digest.and_then(|d| self.caches.manifest(&repo.key, &d)) {
                Some(manifest) => {
                    out.insert(
                        id.clone(),
                        Ok(ImageAnswer::Found {
                            manifest: Ok(manifest),
                        }),
                    );
                }
                None => wanted.push(id.clone()),
            }
        }
        if !wanted.is_empty() {
            out.extend(repo.images.request(&wanted, deadline).await);
        }
        out
    }

    /// All images of one repository: resolve, follow indexes, check blobs.
    async fn check_repository(
        &self,
        repo: &RepoState,
        ids: &[ImageId],
        deadline: Instant,
    ) -> HashMap<ImageId, Finding> {
        let answers = self.resolve(repo, ids, deadline).await;
        let mut findings = HashMap::new();
        let mut plans: HashMap<ImageId, Vec<(Option<Platform>, Planned)>> = HashMap::new();
        let mut children_wanted: BTreeMap<ImageId, Vec<(Platform, String)>> = BTreeMap::new();
        for id in ids {
            let manifest = match answers.get(id) {
                None => Err(Finding::Unknown(format!("ECR did not answer for {id}"))),
                Some(Err(e)) => Err(error_finding(e)),
                Some(Ok(ImageAnswer::NotFound)) => Err(Finding::NotFound(match id {
                    ImageId::Tag(t) => NotFound::Tag(t.clone()),
                    ImageId::Digest(d) => NotFound::Digest(d.clone()),
                })),
                Some(Ok(ImageAnswer::Failed(reason))) => Err(Finding::Unknown(reason.clone())),
                Some(Ok(ImageAnswer::Found {
                    manifest: Err(e), ..
                })) => Err(Finding::Unknown(e.clone())),
                Some(Ok(ImageAnswer::Found {
                    manifest: Ok(m), ..
                })) => Ok(m.clone()),
            };
            match manifest {
                Err(finding) => {
                    findings.insert(id.clone(), finding);
                }
                Ok(m) => match m.as_ref() {
                    Manifest::Image { .. } => {
                        plans.insert(id.clone(), vec![(None, Planned::Manifest(m))]);
                    }
                    Manifest::Index { children } => {
                        let selected = self.select_children(children);
                        if selected.is_empty() {
                            findings.insert(
                                id.clone(),
                                Finding::NoPlatform {
                                    wanted: self.settings.platforms.clone(),
                                },
                            );
                        } else {
                            children_wanted.insert(id.clone(), selected);
                        }
                    }
                },
            }
        }

        if !children_wanted.is_empty() {
            let digests: BTreeSet<ImageId> = children_wanted
                .values()
                .flatten()
                .map(|(_, d)| ImageId::Digest(d.clone()))
                .collect();
            let digests: Vec<ImageId> = digests.into_iter().collect();
            let child_answers = self.resolve(repo, &digests, deadline).await;
            for (id, selected) in children_wanted {
                let mut plan = Vec::with_capacity(selected.len());
                let mut failure = None;
                for (platform, digest) in selected {
                    let planned = match child_answers.get(&ImageId::Digest(digest.clone())) {
                        Some(Ok(ImageAnswer::Found {
                            manifest: Ok(m), ..
                        })) => match m.as_ref() {
                            Manifest::Image { .. } => Planned::Manifest(m.clone()),
                            Manifest::Index { .. } => {
                                Planned::Unreadable(format!("child {digest} is itself an index"))
                            }
                        },
                        Some(Ok(ImageAnswer::Found {
                            manifest: Err(e), ..
                        })) => Planned::Unreadable(e.clone()),
                        Some(Ok(ImageAnswer::NotFound)) => Planned::MissingChild(digest),
                        Some(Ok(ImageAnswer::Failed(reason))) => {
                            Planned::Unreadable(reason.clone())
                        }
                        Some(Err(e)) => {
                            failure = Some(error_finding(e));
                            break;
                        }
                        None => {
                            Planned::Unreadable(format!("ECR did not answer for child {digest}"))
                        }
                    };
                    plan.push((Some(platform), planned));
                }
                match failure {
                    Some(f) => {
                        findings.insert(id, f);
                    }
                    None => {
                        plans.insert(id, plan);
                    }
                }
            }
        }

        // Blobs cached AVAILABLE are known; the rest are asked for in one go.
        let mut states: HashMap<String, Result<BlobState, RegistryError>> = HashMap::new();
        let mut uncached: BTreeSet<String> = BTreeSet::new();
        for (_, planned) in plans.values().flatten() {
            if let Planned::Manifest(m) = planned {
                if let Manifest::Image { blobs } = m.as_ref() {
                    for blob in blobs {
                        if states.contains_key(blob) || uncached.contains(blob) {
                            continue;
                        }
                        if self.caches.blob_available(&repo.key, blob) {
                            states.insert(blob.clone(), Ok(BlobState::Available));
                        } else {
                            uncached.insert(blob.clone());
                        }
                    }
                }
            }
        }
        if !uncached.is_empty() {
            let uncached: Vec<String> = uncached.into_iter().collect();
            states.extend(repo.blobs.request(&uncached, deadline).await);
        }
        for (id, plan) in plans {
            let failure = plan.iter().find_map(|(_, planned)| match planned {
                Planned::Manifest(m) => match m.as_ref() {
                    Manifest::Image { blobs } => blobs.iter().find_map(|b| match states.get(b) {
                        Some(Err(e)) => Some(error_finding(e)),
                        _ => None,
                    }),
                    Manifest::Index { .. } => None,
                },
                _ => None,
            });
            let finding = failure.unwrap_or_else(|| {
                Finding::Checked(
                    plan.into_iter()
                        .map(|(platform, planned)| platform_check(platform, planned, &states))
                        .collect(),
                )
            });
            findings.insert(id, finding);
        }
        findings
    }

    /// The first non-attestation child for each wanted platform, without duplicates.
    fn select_children(&self, children: &[manifest::Child]) -> Vec<(Platform, String)> {
        let mut selected: Vec<(Platform, String)> = Vec::new();
        for wanted in &self.settings.platforms {
            let found = children
                .iter()
                .find(|c| !c.attestation && c.platform.as_ref().is_some_and(|p| wanted.matches(p)));
            if let Some(child) = found {
                if !selected.iter().any(|(_, d)| d == &child.digest) {
                    let platform = child.platform.clone().unwrap_or_else(|| wanted.clone());
                    selected.push((platform, child.digest.clone()));
                }
            }
        }
        selected
    }
}

/// Makes ECR calls for the batchers: retried within the deadline, counted and timed.
#[derive(Clone)]
struct EcrCaller {
    registry: Arc<dyn Registry>,
    stats: Arc<CallStats>,
    metrics: EngineMetrics,
}

impl EcrCaller {
    async fn call<T, F, Fut>(
        &self,
        operation: EcrOperation,
        deadline: Instant,
        mut attempt: F,
    ) -> Result<T, RegistryError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, RegistryError>>,
    {
        let counter = match operation {
            EcrOperation::BatchGetImage => &self.stats.batch_get_image,
            EcrOperation::BatchCheckLayerAvailability => &self.stats.batch_check_layer_availability,
        };
        let result = with_retries(deadline, || {
            counter.fetch_add(1, Ordering::Relaxed);
            let started = std::time::Instant::now();
            let pending = attempt();
            async move {
                let result = pending.await;
                self.metrics.ecr_call(operation, started.elapsed(), &result);
                result
            }
        })
        .await;
        if result.is_err() {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }
}

/// What `BatchGetImage` said about one requested id.
#[derive(Debug)]
enum Lookup {
    Found(FetchedManifest),
    NotFound,
    Failed(String),
}

/// Matches a `BatchGetImage` answer back to the ids asked for, by what came back: images by
/// tag or digest, failures by id. An id in neither is not found if the answer carries
/// `ImageNotFound` failures for ids it did not ask about (the emulator echoes no id for a
/// missing digest), and left out (unanswered) otherwise.
fn match_answers(
    ids: &[ImageId],
    out: crate::registry::BatchGetImageOutput,
) -> HashMap<ImageId, Lookup> {
    let wanted = |tag: Option<&String>, digest: Option<&String>| {
        ids.iter().find(|id| match id {
            ImageId::Tag(t) => tag == Some(t),
            ImageId::Digest(d) => digest == Some(d),
        })
    };
    let mut lookups = HashMap::new();
    for image in out.images {
        if let Some(id) = wanted(image.tag.as_ref(), image.digest.as_ref()) {
            lookups.insert(id.clone(), Lookup::Found(image));
        }
    }
    let mut stray_not_found = false;
    for failure in &out.failures {
        let not_found = failure.code == "ImageNotFound";
        match wanted(failure.tag.as_ref(), failure.digest.as_ref()) {
            Some(id) if !lookups.contains_key(id) => {
                let lookup = if not_found {
                    Lookup::NotFound
                } else {
                    Lookup::Failed(format!("{}: {}", failure.code, failure.reason))
                };
                lookups.insert(id.clone(), lookup);
            }
            Some(_) => {}
            None => stray_not_found |= not_found,
        }
    }
    if stray_not_found {
        for id in ids {
            lookups.entry(id.clone()).or_insert(Lookup::NotFound);
        }
    }
    lookups
}

/// Parses a fetched manifest once, caching it by digest (and the tag → digest it came by).
fn parse_and_cache(
    caches: &Caches,
    repo: &Arc<RepositoryKey>,
    id: &ImageId,
    fetched: FetchedManifest,
) -> ImageAnswer {
    let digest: Option<Arc<str>> = match (id, fetched.digest) {
        (_, Some(d)) => Some(d.into()),
        (ImageId::Digest(d), None) => Some(d.as_str().into()),
        (ImageId::Tag(_), None) => None,
    };
    let manifest = manifest::parse(&fetched.manifest, fetched.media_type.as_deref())
        .map(Arc::new)
        .map_err(|e| e.to_string());
    if let (Some(digest), Ok(m)) = (&digest, &manifest) {
        caches.put_manifest(repo, digest.clone(), m.clone());
        if let ImageId::Tag(tag) = id {
            caches.put_tag(repo, tag, digest.clone());
        }
    }
    ImageAnswer::Found { manifest }
}

fn platform_check(
    platform: Option<Platform>,
    manifest: Planned,
    states: &HashMap<String, Result<BlobState, RegistryError>>,
) -> PlatformCheck {
    let mut check = PlatformCheck {
        platform,
        total: 0,
        missing: Vec::new(),
        archived: Vec::new(),
        unanswered: 0,
        manifest_missing: None,
        unreadable: None,
    };
    match manifest {
        Planned::Manifest(m) => match m.as_ref() {
            Manifest::Image { blobs } => {
                check.total = blobs.len();
                for blob in blobs {
                    match states.get(blob) {
                        Some(Ok(BlobState::Available)) => {}
                        Some(Ok(BlobState::Archived)) => check.archived.push(blob.clone()),
                        Some(Ok(BlobState::Missing | BlobState::Unavailable)) => {
                            check.missing.push(blob.clone())
                        }
                        Some(Ok(BlobState::Invalid)) | Some(Err(_)) | None => check.unanswered += 1,
                    }
                }
            }
            Manifest::Index { .. } => check.unreadable = Some("nested index".to_owned()),
        },
        Planned::MissingChild(digest) => check.manifest_missing = Some(digest),
        Planned::Unreadable(reason) => check.unreadable = Some(reason),
    }
    check
}

fn error_finding(e: &RegistryError) -> Finding {
    match e {
        RegistryError::RepositoryNotFound {
            registry,
            repository,
        } => Finding::NotFound(NotFound::Repository {
            repository: repository.clone(),
            registry: registry.clone(),
        }),
        other => Finding::Unknown(other.to_string()),
    }
}

/// `2.5s`, `300ms`.
pub fn human(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::Outcome;

    #[test]
    fn every_outcome_sits_at_its_own_index() {
        for (i, outcome) in Outcome::ALL.iter().enumerate() {
            assert_eq!(*outcome as usize, i, "{outcome:?}");
        }
    }
}
