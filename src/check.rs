//! The engine: from image references to findings, through the registry seam.
//!
//! Per repository, at most three sequential round trips: `BatchGetImage` for the references,
//! `BatchGetImage` for the wanted children of indexes, `BatchCheckLayerAvailability` for every
//! blob. Repositories run in parallel, each bounded by the request's deadline.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::future::{join_all, try_join_all};
use tokio::time::Instant;

use crate::image::{ImageId, ImageTarget, RepositoryKey};
use crate::manifest::{self, Manifest, Platform};
use crate::registry::{BlobState, FetchedManifest, Registry, RegistryError, MAX_IDS_PER_CALL};

/// What the engine needs to know beyond the registry.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Index children to check.
    pub platforms: Vec<Platform>,
    /// Repository prefixes served by pull-through cache rules.
    pub pull_through_prefixes: Vec<String>,
}

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
}

/// What `BatchGetImage` said about one requested id.
#[derive(Debug, Clone)]
enum Lookup {
    Found(FetchedManifest),
    NotFound,
    Failed(String),
    Unanswered,
}

/// A manifest the blob check will look at, or why it cannot.
#[derive(Debug)]
enum Planned {
    Manifest(Manifest),
    /// The index names a child ECR does not have.
    MissingChild(String),
    Unreadable(String),
}

impl Engine {
    pub fn new(registry: Arc<dyn Registry>, settings: EngineSettings) -> Self {
        Engine { registry, settings }
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    /// Checks every image (duplicates are checked once) and returns one report per input,
    /// in input order. Never takes longer than `deadline` (plus scheduling).
    pub async fn check(&self, images: &[String], deadline: Instant) -> Vec<ImageReport> {
        let mut findings: HashMap<&str, Finding> = HashMap::new();
        let mut by_repo: BTreeMap<RepositoryKey, BTreeSet<ImageId>> = BTreeMap::new();
        let mut targets: HashMap<&str, (RepositoryKey, ImageId)> = HashMap::new();
        for image in images {
            if findings.contains_key(image.as_str()) || targets.contains_key(image.as_str()) {
                continue;
            }
            match ImageTarget::classify(image) {
                Err(e) => {
                    findings.insert(image, Finding::InvalidReference(e.to_string()));
                }
                Ok(ImageTarget::Other(_)) => {
                    findings.insert(image, Finding::Skipped);
                }
                Ok(ImageTarget::Ecr { repo, id }) => {
                    by_repo.entry(repo.clone()).or_default().insert(id.clone());
                    targets.insert(image, (repo, id));
                }
            }
        }
        let budget = deadline.saturating_duration_since(Instant::now());
        let per_repo = join_all(by_repo.into_iter().map(|(repo, ids)| async move {
            let ids: Vec<ImageId> = ids.into_iter().collect();
            let result =
                tokio::time::timeout_at(deadline, self.check_repository(&repo, &ids)).await;
            let findings = result.unwrap_or_else(|_| {
                let reason = format!("no answer from ECR within {}", human(budget));
                ids.iter()
                    .map(|id| (id.clone(), Finding::Unknown(reason.clone())))
                    .collect()
            });
            (repo, findings)
        }))
        .await;
        let per_repo: HashMap<RepositoryKey, HashMap<ImageId, Finding>> =
            per_repo.into_iter().collect();
        images
            .iter()
            .map(|image| {
                let (finding, pull_through) = match targets.get(image.as_str()) {
                    Some((repo, id)) => (
                        per_repo
                            .get(repo)
                            .and_then(|m| m.get(id))
                            .cloned()
                            .unwrap_or_else(|| Finding::Unknown("not checked".to_owned())),
                        self.is_pull_through(&repo.repository),
                    ),
                    None => (
                        findings
                            .get(image.as_str())
                            .cloned()
                            .unwrap_or(Finding::Skipped),
                        false,
                    ),
                };
                ImageReport {
                    image: image.clone(),
                    finding,
                    pull_through,
                }
            })
            .collect()
    }

    fn is_pull_through(&self, repository: &str) -> bool {
        self.settings
            .pull_through_prefixes
            .iter()
            .any(|p| !p.is_empty() && repository.starts_with(p.as_str()))
    }

    /// All images of one repository: resolve, follow indexes, check blobs.
    async fn check_repository(
        &self,
        repo: &RepositoryKey,
        ids: &[ImageId],
    ) -> HashMap<ImageId, Finding> {
        let lookups = match self.get_images(repo, ids).await {
            Ok(l) => l,
            Err(e) => {
                return ids
                    .iter()
                    .map(|id| (id.clone(), error_finding(&e)))
                    .collect()
            }
        };
        let mut findings = HashMap::new();
        // Manifests to check per image: (platform, manifest digest or the image's own).
        let mut plans: HashMap<ImageId, Vec<(Option<Platform>, Planned)>> = HashMap::new();
        let mut children_wanted: BTreeMap<ImageId, Vec<(Platform, String)>> = BTreeMap::new();
        for id in ids {
            let lookup = lookups.get(id).cloned().unwrap_or(Lookup::Unanswered);
            match lookup {
                Lookup::NotFound => {
                    findings.insert(
                        id.clone(),
                        Finding::NotFound(match id {
                            ImageId::Tag(t) => NotFound::Tag(t.clone()),
                            ImageId::Digest(d) => NotFound::Digest(d.clone()),
                        }),
                    );
                }
                Lookup::Failed(reason) => {
                    findings.insert(id.clone(), Finding::Unknown(reason));
                }
                Lookup::Unanswered => {
                    findings.insert(
                        id.clone(),
                        Finding::Unknown(format!("ECR did not answer for {id}")),
                    );
                }
                Lookup::Found(fetched) => {
                    match manifest::parse(&fetched.manifest, fetched.media_type.as_deref()) {
                        Err(e) => {
                            findings.insert(id.clone(), Finding::Unknown(e.to_string()));
                        }
                        Ok(m @ Manifest::Image { .. }) => {
                            plans.insert(id.clone(), vec![(None, Planned::Manifest(m))]);
                        }
                        Ok(Manifest::Index { children }) => {
                            let selected = self.select_children(&children);
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
                    }
                }
            }
        }

        if !children_wanted.is_empty() {
            let digests: BTreeSet<ImageId> = children_wanted
                .values()
                .flatten()
                .map(|(_, d)| ImageId::Digest(d.clone()))
                .collect();
            let digests: Vec<ImageId> = digests.into_iter().collect();
            match self.get_images(repo, &digests).await {
                Err(e) => {
                    for id in children_wanted.keys() {
                        findings.insert(id.clone(), error_finding(&e));
                    }
                }
                Ok(child_lookups) => {
                    for (id, selected) in children_wanted {
                        let plan = selected
                            .into_iter()
                            .map(|(platform, digest)| {
                                let manifest =
                                    match child_lookups.get(&ImageId::Digest(digest.clone())) {
                                        Some(Lookup::Found(f)) => match manifest::parse(
                                            &f.manifest,
                                            f.media_type.as_deref(),
                                        ) {
                                            Ok(m @ Manifest::Image { .. }) => Planned::Manifest(m),
                                            Ok(Manifest::Index { .. }) => Planned::Unreadable(
                                                format!("child {digest} is itself an index"),
                                            ),
                                            Err(e) => Planned::Unreadable(e.to_string()),
                                        },
                                        Some(Lookup::NotFound) => Planned::MissingChild(digest),
                                        Some(Lookup::Failed(reason)) => {
                                            Planned::Unreadable(reason.clone())
                                        }
                                        _ => Planned::Unreadable(format!(
                                            "ECR did not answer for child {digest}"
                                        )),
                                    };
                                (Some(platform), manifest)
                            })
                            .collect();
                        plans.insert(id, plan);
                    }
                }
            }
        }

        let blobs: BTreeSet<String> = plans
            .values()
            .flatten()
            .filter_map(|(_, m)| match m {
                Planned::Manifest(Manifest::Image { blobs }) => Some(blobs.iter().cloned()),
                _ => None,
            })
            .flatten()
            .collect();
        let blobs: Vec<String> = blobs.into_iter().collect();
        let states = if blobs.is_empty() {
            Ok(HashMap::new())
        } else {
            self.check_blobs(repo, &blobs).await
        };
        let states = match states {
            Ok(s) => s,
            Err(e) => {
                for id in plans.keys() {
                    findings.insert(id.clone(), error_finding(&e));
                }
                return findings;
            }
        };
        for (id, plan) in plans {
            let checks = plan
                .into_iter()
                .map(|(platform, manifest)| platform_check(platform, manifest, &states))
                .collect();
            findings.insert(id, Finding::Checked(checks));
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

    /// `BatchGetImage` in calls of at most 100 ids, matched back to the request by what came
    /// back: images by tag or digest, failures by id. A requested id that is in neither is
    /// not found if the answer carries `ImageNotFound` failures for ids it did not ask about
    /// (the emulator echoes no id for a missing digest), and unanswered otherwise.
    async fn get_images(
        &self,
        repo: &RepositoryKey,
        ids: &[ImageId],
    ) -> Result<HashMap<ImageId, Lookup>, RegistryError> {
        let outputs = try_join_all(ids.chunks(MAX_IDS_PER_CALL).map(|chunk| async move {
            let out = self.registry.batch_get_image(repo, chunk).await?;
            Ok::<_, RegistryError>((chunk, out))
        }))
        .await?;
        let mut lookups = HashMap::new();
        for (chunk, out) in outputs {
            let wanted = |tag: Option<&String>, digest: Option<&String>| {
                chunk.iter().find(|id| match id {
                    ImageId::Tag(t) => tag == Some(t),
                    ImageId::Digest(d) => digest == Some(d),
                })
            };
            for image in out.images {
                if let Some(id) = wanted(image.tag.as_ref(), image.digest.as_ref()) {
                    lookups.insert(id.clone(), Lookup::Found(image));
                }
            }
            let mut stray_not_found = false;
            for failure in &out.failures {
                let matched = wanted(failure.tag.as_ref(), failure.digest.as_ref());
                let not_found = failure.code == "ImageNotFound";
                match matched {
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
            for id in chunk {
                lookups.entry(id.clone()).or_insert(if stray_not_found {
                    Lookup::NotFound
                } else {
                    Lookup::Unanswered
                });
            }
        }
        Ok(lookups)
    }

    /// `BatchCheckLayerAvailability` in calls of at most 100 digests, in parallel.
    async fn check_blobs(
        &self,
        repo: &RepositoryKey,
        digests: &[String],
    ) -> Result<HashMap<String, BlobState>, RegistryError> {
        let outputs = try_join_all(
            digests
                .chunks(MAX_IDS_PER_CALL)
                .map(|chunk| self.registry.batch_check_layer_availability(repo, chunk)),
        )
        .await?;
        Ok(outputs.into_iter().flat_map(|o| o.blobs).collect())
    }
}

fn platform_check(
    platform: Option<Platform>,
    manifest: Planned,
    states: &HashMap<String, BlobState>,
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
        Planned::Manifest(Manifest::Image { blobs }) => {
            check.total = blobs.len();
            for blob in blobs {
                match states.get(&blob) {
                    Some(BlobState::Available) => {}
                    Some(BlobState::Archived) => check.archived.push(blob),
                    Some(BlobState::Missing | BlobState::Unavailable) => check.missing.push(blob),
                    Some(BlobState::Invalid) | None => check.unanswered += 1,
                }
            }
        }
        Planned::Manifest(Manifest::Index { .. }) => {
            check.unreadable = Some("nested index".to_owned())
        }
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
