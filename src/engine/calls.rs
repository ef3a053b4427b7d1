//! One repository's ECR calls: `BatchGetImage` and `BatchCheckLayerAvailability`, each
//! through its own batcher, retried within the deadline, counted, and feeding the caches.

use foldhash::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::FutureExt;
use tokio::time::Instant;

use super::batcher::{CallFn, Coalescer, KnownFn};
use super::cache::Caches;
use super::retry::with_retries;
use crate::image::{ImageId, RepositoryKey};
use crate::manifest::{self, Manifest};
use crate::metrics::{EcrOperation, EngineMetrics};
use crate::registry::{BatchGetImageOutput, BlobState, FetchedManifest, Registry, RegistryError};

/// ECR calls made, per operation: for the call-count tests and benchmarks.
#[derive(Debug, Default)]
pub struct CallStats {
    pub batch_get_image: AtomicU64,
    pub batch_check_layer_availability: AtomicU64,
}

/// What `BatchGetImage` said about one requested id: `T` is the manifest as fetched, then
/// as parsed.
#[derive(Debug, Clone)]
pub(super) enum Answer<T> {
    Found(T),
    NotFound,
    /// A failure entry other than `ImageNotFound`: its code and reason.
    Failed(String),
}

/// A manifest parsed once, or why it could not be.
pub(super) type ImageAnswer = Answer<Result<Arc<Manifest>, String>>;

/// One repository's batchers.
pub(super) struct RepoState {
    pub(super) images: Arc<Coalescer<ImageId, ImageAnswer>>,
    pub(super) blobs: Arc<Coalescer<String, BlobState>>,
}

/// What the batchers of every repository share.
#[derive(Clone)]
pub(super) struct EcrCaller {
    pub(super) registry: Arc<dyn Registry>,
    pub(super) stats: Arc<CallStats>,
    pub(super) metrics: EngineMetrics,
    pub(super) caches: Arc<Caches>,
    pub(super) window: Duration,
}

impl EcrCaller {
    /// The batchers of `repo`: they call with its credentials and keep what they learn
    /// under its facts' key.
    pub(super) fn repository(&self, repo: &RepositoryKey) -> RepoState {
        let asked = Arc::new(repo.clone());
        let facts = Arc::new(repo.facts());
        RepoState {
            images: self.image_batcher(asked.clone(), facts.clone()),
            blobs: self.blob_batcher(asked, facts),
        }
    }

    /// `BatchGetImage` through a batcher; answers are parsed once and cached. The batcher's
    /// look-up in the caches is the only one a key gets, so each counts once in the metrics.
    fn image_batcher(
        &self,
        repo: Arc<RepositoryKey>,
        key: Arc<RepositoryKey>,
    ) -> Arc<Coalescer<ImageId, ImageAnswer>> {
        let this = self.clone();
        let facts = key.clone();
        let call: CallFn<ImageId, ImageAnswer> = Arc::new(move |ids, deadline| {
            let (this, repo, facts) = (this.clone(), repo.clone(), facts.clone());
            async move {
                let out = this
                    .call(EcrOperation::BatchGetImage, deadline, || {
                        this.registry.batch_get_image(&repo, &ids)
                    })
                    .await?;
                Ok(match_answers(&ids, out)
                    .into_iter()
                    .map(|(id, answer)| {
                        let parsed = match answer {
                            Answer::Found(fetched) => {
                                Answer::Found(parse_and_cache(&this.caches, &facts, &id, fetched))
                            }
                            Answer::NotFound => Answer::NotFound,
                            Answer::Failed(reason) => Answer::Failed(reason),
                        };
                        (id, parsed)
                    })
                    .collect())
            }
            .boxed()
        });
        let caches = self.caches.clone();
        let known: KnownFn<ImageId, ImageAnswer> = Arc::new(move |id: &ImageId| {
            let digest: Arc<str> = match id {
                ImageId::Tag(t) => caches.tag(&key, t)?,
                ImageId::Digest(d) => d.as_str().into(),
            };
            Some(Answer::Found(Ok(caches.manifest(&key, &digest)?)))
        });
        Coalescer::new(self.window, call, known)
    }

    /// `BatchCheckLayerAvailability` through a batcher; AVAILABLE answers are cached.
    fn blob_batcher(
        &self,
        repo: Arc<RepositoryKey>,
        key: Arc<RepositoryKey>,
    ) -> Arc<Coalescer<String, BlobState>> {
        let this = self.clone();
        let facts = key.clone();
        let call: CallFn<String, BlobState> = Arc::new(move |digests, deadline| {
            let (this, repo, facts) = (this.clone(), repo.clone(), facts.clone());
            async move {
                let out = this
                    .call(EcrOperation::BatchCheckLayerAvailability, deadline, || {
                        this.registry
                            .batch_check_layer_availability(&repo, &digests)
                    })
                    .await?;
                for (digest, state) in &out.blobs {
                    if *state == BlobState::Available {
                        this.caches.put_blob_available(&facts, digest);
                    }
                }
                Ok(out.blobs.into_iter().collect())
            }
            .boxed()
        });
        let caches = self.caches.clone();
        let known: KnownFn<String, BlobState> = Arc::new(move |digest: &String| {
            caches
                .blob_available(&key, digest)
                .then_some(BlobState::Available)
        });
        Coalescer::new(self.window, call, known)
    }

    /// One ECR call: retried within the deadline, each attempt counted and timed.
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
        with_retries(deadline, || {
            counter.fetch_add(1, Ordering::Relaxed);
            let started = std::time::Instant::now();
            let pending = attempt();
            async move {
                let result = pending.await;
                self.metrics.ecr_call(operation, started.elapsed(), &result);
                result
            }
        })
        .await
    }
}

/// Matches a `BatchGetImage` answer back to the ids asked for, by what came back: images by
/// tag or digest, failures by id. An id in neither is not found if the answer carries
/// `ImageNotFound` failures for ids it did not ask about (the emulator echoes no id for a
/// missing digest), and left out (unanswered) otherwise.
fn match_answers(
    ids: &[ImageId],
    out: BatchGetImageOutput,
) -> HashMap<ImageId, Answer<FetchedManifest>> {
    let wanted = |tag: Option<&String>, digest: Option<&String>| {
        ids.iter().find(|id| match id {
            ImageId::Tag(t) => tag == Some(t),
            ImageId::Digest(d) => digest == Some(d),
        })
    };
    let mut answers = HashMap::default();
    for image in out.images {
        if let Some(id) = wanted(image.tag.as_ref(), image.digest.as_ref()) {
            answers.insert(id.clone(), Answer::Found(image));
        }
    }
    let mut stray_not_found = false;
    for failure in &out.failures {
        let not_found = failure.code == "ImageNotFound";
        match wanted(failure.tag.as_ref(), failure.digest.as_ref()) {
            Some(id) if !answers.contains_key(id) => {
                let answer = if not_found {
                    Answer::NotFound
                } else {
                    Answer::Failed(format!("{}: {}", failure.code, failure.reason))
                };
                answers.insert(id.clone(), answer);
            }
            Some(_) => {}
            None => stray_not_found |= not_found,
        }
    }
    if stray_not_found {
        for id in ids {
            answers.entry(id.clone()).or_insert(Answer::NotFound);
        }
    }
    answers
}

/// Parses a fetched manifest once, caching it by digest (and the tag → digest it came by).
fn parse_and_cache(
    caches: &Caches,
    repo: &Arc<RepositoryKey>,
    id: &ImageId,
    fetched: FetchedManifest,
) -> Result<Arc<Manifest>, String> {
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
    manifest
}
