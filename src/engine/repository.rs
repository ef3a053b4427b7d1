//! The check of one repository's images, in its three sequential steps: their manifests
//! (`BatchGetImage`), the wanted children of indexes (`BatchGetImage` again), and every blob
//! (`BatchCheckLayerAvailability`), all through the repository's batchers.

use std::collections::{BTreeMap, BTreeSet};

use foldhash::HashMap;
use std::sync::Arc;

use tokio::time::Instant;

use super::calls::{Answer, ImageAnswer, RepoState};
use crate::findings::{Finding, NotFound, PlatformCheck};
use crate::image::ImageId;
use crate::manifest::{Child, Manifest, Platform};
use crate::registry::{BlobState, RegistryError};

/// The findings of `ids`, all of one repository, checked for `platforms`, and how many
/// distinct blobs they have (every one asked about, or answered from the cache).
pub(super) async fn check_repository(
    repo: &RepoState,
    ids: &[ImageId],
    platforms: &[Platform],
    deadline: Instant,
) -> (HashMap<ImageId, Finding>, usize) {
    let answers = repo.images.request(ids, deadline).await;
    let mut findings = HashMap::default();
    let mut plans: HashMap<ImageId, Vec<(Option<Platform>, Planned)>> = HashMap::default();
    let mut indexes: BTreeMap<ImageId, Vec<(Platform, String)>> = BTreeMap::new();
    for id in ids {
        let manifest = match lookup(answers.get(id), || format!("ECR did not answer for {id}")) {
            Ok(m) => m,
            Err(miss) => {
                findings.insert(id.clone(), miss.into_finding(id));
                continue;
            }
        };
        match manifest.as_ref() {
            Manifest::Image { .. } => {
                plans.insert(id.clone(), vec![(None, Planned::Manifest(manifest))]);
            }
            Manifest::Index { children } => match select_children(children, platforms) {
                selected if selected.is_empty() => {
                    let wanted = platforms.to_vec();
                    findings.insert(id.clone(), Finding::NoPlatform { wanted });
                }
                selected => {
                    indexes.insert(id.clone(), selected);
                }
            },
        }
    }
    if !indexes.is_empty() {
        let children = plan_children(repo, indexes, deadline).await;
        for (id, plan) in children {
            match plan {
                Ok(plan) => {
                    plans.insert(id, plan);
                }
                Err(finding) => {
                    findings.insert(id, finding);
                }
            }
        }
    }
    let states = blob_states(repo, &plans, deadline).await;
    for (id, plan) in plans {
        findings.insert(id, finding_of(plan, &states));
    }
    (findings, states.len())
}

/// A manifest the blob check will look at, or why it cannot.
#[derive(Debug)]
enum Planned {
    Manifest(Arc<Manifest>),
    /// The index names a child ECR does not have.
    MissingChild(String),
    Unreadable(String),
}

/// Why the batcher gave no manifest for an id.
enum Miss {
    NotFound,
    /// ECR answered for the id, but not with a readable manifest; or did not answer for it.
    Unreadable(String),
    /// The call that carried the id failed.
    CallFailed(RegistryError),
}

/// The manifest the batcher gave for one id, or why there is none.
fn lookup(
    answer: Option<&Result<ImageAnswer, RegistryError>>,
    unanswered: impl FnOnce() -> String,
) -> Result<Arc<Manifest>, Miss> {
    match answer {
        None => Err(Miss::Unreadable(unanswered())),
        Some(Err(e)) => Err(Miss::CallFailed(e.clone())),
        Some(Ok(Answer::NotFound)) => Err(Miss::NotFound),
        Some(Ok(Answer::Failed(reason))) | Some(Ok(Answer::Found(Err(reason)))) => {
            Err(Miss::Unreadable(reason.clone()))
        }
        Some(Ok(Answer::Found(Ok(m)))) => Ok(m.clone()),
    }
}

impl Miss {
    /// The finding of an image asked for by `id` that has no manifest to check.
    fn into_finding(self, id: &ImageId) -> Finding {
        match self {
            Miss::NotFound => Finding::NotFound(match id {
                ImageId::Tag(t) => NotFound::Tag(t.clone()),
                ImageId::Digest(d) => NotFound::Digest(d.clone()),
            }),
            Miss::Unreadable(reason) => Finding::Unknown(reason),
            Miss::CallFailed(e) => error_finding(&e),
        }
    }
}

/// The first non-attestation child for each wanted platform, without duplicates.
fn select_children(children: &[Child], platforms: &[Platform]) -> Vec<(Platform, String)> {
    let mut selected: Vec<(Platform, String)> = Vec::new();
    for wanted in platforms {
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

/// The plans of indexes: each selected child's manifest, fetched for all indexes at once.
/// An index whose children's call failed gets that failure's finding instead.
async fn plan_children(
    repo: &RepoState,
    indexes: BTreeMap<ImageId, Vec<(Platform, String)>>,
    deadline: Instant,
) -> Vec<(ImageId, Result<Vec<(Option<Platform>, Planned)>, Finding>)> {
    let digests: BTreeSet<ImageId> = indexes
        .values()
        .flatten()
        .map(|(_, d)| ImageId::Digest(d.clone()))
        .collect();
    let digests: Vec<ImageId> = digests.into_iter().collect();
    let answers = repo.images.request(&digests, deadline).await;
    indexes
        .into_iter()
        .map(|(id, selected)| {
            let plan = selected
                .into_iter()
                .map(|(platform, digest)| {
                    let answer = answers.get(&ImageId::Digest(digest.clone()));
                    let child = lookup(answer, || format!("ECR did not answer for child {digest}"));
                    let planned = match child {
                        Ok(m) => match m.as_ref() {
                            Manifest::Image { .. } => Planned::Manifest(m),
                            Manifest::Index { .. } => {
                                Planned::Unreadable(format!("child {digest} is itself an index"))
                            }
                        },
                        Err(Miss::NotFound) => Planned::MissingChild(digest),
                        Err(Miss::Unreadable(reason)) => Planned::Unreadable(reason),
                        Err(Miss::CallFailed(e)) => return Err(error_finding(&e)),
                    };
                    Ok((Some(platform), planned))
                })
                .collect();
            (id, plan)
        })
        .collect()
}

/// The state of every blob of every planned manifest, asked for in one go (the batcher
/// answers the ones cached AVAILABLE without a call).
async fn blob_states(
    repo: &RepoState,
    plans: &HashMap<ImageId, Vec<(Option<Platform>, Planned)>>,
    deadline: Instant,
) -> HashMap<String, Result<BlobState, RegistryError>> {
    let blobs: BTreeSet<&String> = plans
        .values()
        .flatten()
        .flat_map(|(_, planned)| planned_blobs(planned))
        .collect();
    if blobs.is_empty() {
        return HashMap::default();
    }
    let blobs: Vec<String> = blobs.into_iter().cloned().collect();
    repo.blobs.request(&blobs, deadline).await
}

fn planned_blobs(planned: &Planned) -> &[String] {
    match planned {
        Planned::Manifest(m) => match m.as_ref() {
            Manifest::Image { blobs } => blobs,
            Manifest::Index { .. } => &[],
        },
        Planned::MissingChild(_) | Planned::Unreadable(_) => &[],
    }
}

/// One image's finding from its plan: the error of a blob call that failed, else the blob
/// check of each planned manifest.
fn finding_of(
    plan: Vec<(Option<Platform>, Planned)>,
    states: &HashMap<String, Result<BlobState, RegistryError>>,
) -> Finding {
    let failure = plan
        .iter()
        .flat_map(|(_, planned)| planned_blobs(planned))
        .find_map(|b| match states.get(b) {
            Some(Err(e)) => Some(error_finding(e)),
            _ => None,
        });
    failure.unwrap_or_else(|| {
        Finding::Checked(
            plan.into_iter()
                .map(|(platform, planned)| platform_check(platform, planned, states))
                .collect(),
        )
    })
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
