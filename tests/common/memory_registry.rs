//! An in-memory registry behind the seam, counting its calls: for engine tests that need
//! answers the emulator cannot give (ARCHIVED, throttling, access denied, odd failures).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use ecr_preflight::image::{ImageId, RepositoryKey};
use ecr_preflight::lifecycle::{ImageFacts, ImageStatus};
use ecr_preflight::registry::{
    BatchGetImageOutput, BlobState, FetchedManifest, ImageFailure, LayerAvailabilityOutput,
    LifecycleFacts, Preview, Registry, RegistryError, Restore,
};
use futures::future::BoxFuture;
use futures::FutureExt;

#[derive(Clone)]
pub struct Stored {
    pub digest: String,
    pub media_type: String,
    pub manifest: String,
}

#[derive(Default)]
pub struct MemoryRegistry {
    /// (repository, tag or digest) → manifest.
    pub manifests: Mutex<HashMap<(String, String), Stored>>,
    pub blobs: Mutex<HashMap<(String, String), BlobState>>,
    /// Errors returned by every call to a repository.
    pub errors: Mutex<HashMap<String, RegistryError>>,
    /// Digests ECR leaves out of its blob answer entirely.
    pub silent_blobs: Mutex<Vec<String>>,
    /// This many next calls (of either kind) answer ThrottlingException.
    pub throttle_next: AtomicUsize,
    pub get_calls: AtomicUsize,
    pub check_calls: AtomicUsize,
    pub max_ids_per_call: AtomicUsize,
    pub max_digests_per_call: AtomicUsize,
    /// How long every call takes (tokio's clock: virtual under a paused one).
    pub latency: Mutex<Duration>,
    /// Every call, in the order made.
    pub log: Mutex<Vec<Call>>,
    /// Whether the registry has lifecycle calls (off: as a registry without them).
    pub has_lifecycle: AtomicBool,
    /// Repository → lifecycle policy text.
    pub policies: Mutex<HashMap<String, String>>,
    /// Repository → what DescribeImages lists.
    pub described: Mutex<HashMap<String, Vec<ImageFacts>>>,
    /// Repository → the answers GetLifecyclePolicyPreview gives, in order (the last
    /// repeats).
    pub previews: Mutex<HashMap<String, VecDeque<Preview>>>,
    /// What UpdateImageStorageClass answers (`None`: success).
    pub restore_error: Mutex<Option<RegistryError>>,
    /// Repository → what GetLifecyclePolicy answers instead of its policy (an AWS-owned
    /// repository answers AccessDenied).
    pub policy_errors: Mutex<HashMap<String, RegistryError>>,
}

/// A lifecycle call's log entry.
fn lifecycle_call(
    registry: &MemoryRegistry,
    operation: &'static str,
    repo: &RepositoryKey,
    key: String,
) {
    registry.record(
        operation,
        repo,
        std::iter::once(key).filter(|k| !k.is_empty()),
    );
}

impl LifecycleFacts for MemoryRegistry {
    fn lifecycle_policy<'a>(
        &'a self,
        repo: &'a RepositoryKey,
    ) -> BoxFuture<'a, Result<Option<String>, RegistryError>> {
        lifecycle_call(self, "GetLifecyclePolicy", repo, String::new());
        if let Some(e) = self
            .policy_errors
            .lock()
            .expect("lock")
            .get(&repo.repository)
        {
            let e = e.clone();
            return async move { Err(e) }.boxed();
        }
        let policy = self
            .policies
            .lock()
            .expect("lock")
            .get(&repo.repository)
            .cloned();
        async move { Ok(policy) }.boxed()
    }

    fn describe_images<'a>(
        &'a self,
        repo: &'a RepositoryKey,
    ) -> BoxFuture<'a, Result<Vec<ImageFacts>, RegistryError>> {
        lifecycle_call(self, "DescribeImages", repo, String::new());
        let images = self
            .described
            .lock()
            .expect("lock")
            .get(&repo.repository)
            .cloned()
            .unwrap_or_default();
        async move { Ok(images) }.boxed()
    }

    fn restore<'a>(
        &'a self,
        repo: &'a RepositoryKey,
        id: &'a ImageId,
    ) -> BoxFuture<'a, Result<Restore, RegistryError>> {
        let activating = self
            .described
            .lock()
            .expect("lock")
            .get(&repo.repository)
            .is_some_and(|images| {
                images.iter().any(|i| {
                    i.status == ImageStatus::Activating
                        && match id {
                            ImageId::Tag(t) => i.tags.contains(t),
                            ImageId::Digest(d) => i.digest == *d,
                        }
                })
            });
        if activating {
            lifecycle_call(self, "DescribeImages", repo, id.to_string());
            return async { Ok(Restore::UnderWay) }.boxed();
        }
        lifecycle_call(self, "UpdateImageStorageClass", repo, id.to_string());
        let answer = self.restore_error.lock().expect("lock").clone();
        async move { answer.map_or(Ok(Restore::Started), Err) }.boxed()
    }

    fn start_preview<'a>(
        &'a self,
        repo: &'a RepositoryKey,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        lifecycle_call(self, "StartLifecyclePolicyPreview", repo, String::new());
        async move { Ok(()) }.boxed()
    }

    fn preview<'a>(
        &'a self,
        repo: &'a RepositoryKey,
    ) -> BoxFuture<'a, Result<Preview, RegistryError>> {
        lifecycle_call(self, "GetLifecyclePolicyPreview", repo, String::new());
        let mut previews = self.previews.lock().expect("lock");
        let answers = previews.entry(repo.repository.clone()).or_default();
        let answer = if answers.len() > 1 {
            answers.pop_front()
        } else {
            answers.front().cloned()
        };
        let answer = answer.unwrap_or_else(|| Preview::Failed("no preview seeded".into()));
        async move { Ok(answer) }.boxed()
    }
}

/// One call as the registry saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// When it was made, on tokio's clock.
    pub at: tokio::time::Instant,
    /// `BatchGetImage` or `BatchCheckLayerAvailability`.
    pub operation: &'static str,
    pub repository: String,
    /// The ids (`tag x`, `digest sha256:..`) or digests asked for, sorted.
    pub keys: Vec<String>,
}

/// An OCI image manifest naming `blobs`, the first as the config.
pub fn oci_manifest(blobs: &[String]) -> String {
    let (config, layers) = blobs.split_first().expect("a config blob");
    serde_json::json!({
        "schemaVersion": 2, "mediaType": super::seed::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 1},
        "layers": layers.iter().map(|d| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": 1})).collect::<Vec<_>>(),
    })
    .to_string()
}

impl MemoryRegistry {
    /// Pushes an image of `n` blobs, all in `state`, under `tag`; returns its blobs.
    pub fn push_image(&self, repo: &str, tag: &str, n: usize, state: BlobState) -> Vec<String> {
        let blobs: Vec<String> = (0..n)
            .map(|i| super::seed::sha256(format!("{repo}:{tag}:{i}").as_bytes()))
            .collect();
        for b in &blobs {
            self.blob(repo, b, state);
        }
        self.put(
            repo,
            Some(tag),
            &oci_manifest(&blobs),
            super::seed::OCI_MANIFEST,
        );
        blobs
    }

    pub fn put(&self, repo: &str, tag: Option<&str>, manifest: &str, media_type: &str) -> String {
        let digest = super::seed::sha256(manifest.as_bytes());
        let entry = Stored {
            digest: digest.clone(),
            media_type: media_type.to_owned(),
            manifest: manifest.to_owned(),
        };
        let mut m = self.manifests.lock().expect("lock");
        m.insert((repo.to_owned(), digest.clone()), entry.clone());
        if let Some(tag) = tag {
            m.insert((repo.to_owned(), tag.to_owned()), entry);
        }
        digest
    }

    pub fn blob(&self, repo: &str, digest: &str, state: BlobState) {
        self.blobs
            .lock()
            .expect("lock")
            .insert((repo.to_owned(), digest.to_owned()), state);
    }

    pub fn fail(&self, repo: &str, error: RegistryError) {
        self.errors
            .lock()
            .expect("lock")
            .insert(repo.to_owned(), error);
    }

    pub fn calls(&self) -> (usize, usize) {
        (
            self.get_calls.load(Ordering::SeqCst),
            self.check_calls.load(Ordering::SeqCst),
        )
    }

    fn record(
        &self,
        operation: &'static str,
        repo: &RepositoryKey,
        keys: impl Iterator<Item = String>,
    ) {
        let mut keys: Vec<String> = keys.collect();
        keys.sort();
        self.log.lock().expect("lock").push(Call {
            at: tokio::time::Instant::now(),
            operation,
            repository: repo.repository.clone(),
            keys,
        });
    }

    /// Calls of `operation` per repository.
    pub fn calls_per_repository(&self, operation: &str) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for call in self.log.lock().expect("lock").iter() {
            if call.operation == operation {
                *out.entry(call.repository.clone()).or_default() += 1;
            }
        }
        out
    }

    /// The configured latency, waited out on tokio's clock.
    async fn wait(&self) {
        let latency = *self.latency.lock().expect("lock");
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
    }

    fn error(&self, repo: &RepositoryKey) -> Option<RegistryError> {
        let throttled = self
            .throttle_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if throttled {
            return Some(RegistryError::Throttled("ThrottlingException".into()));
        }
        self.errors
            .lock()
            .expect("lock")
            .get(&repo.repository)
            .cloned()
    }
}

impl Registry for MemoryRegistry {
    fn lifecycle(&self) -> Option<&dyn LifecycleFacts> {
        self.has_lifecycle
            .load(Ordering::SeqCst)
            .then_some(self as &dyn LifecycleFacts)
    }

    fn batch_get_image<'a>(
        &'a self,
        repo: &'a RepositoryKey,
        ids: &'a [ImageId],
    ) -> BoxFuture<'a, Result<BatchGetImageOutput, RegistryError>> {
        async move {
            self.get_calls.fetch_add(1, Ordering::SeqCst);
            self.max_ids_per_call.fetch_max(ids.len(), Ordering::SeqCst);
            self.record("BatchGetImage", repo, ids.iter().map(ToString::to_string));
            self.wait().await;
            if let Some(e) = self.error(repo) {
                return Err(e);
            }
            let manifests = self.manifests.lock().expect("lock");
            let mut out = BatchGetImageOutput::default();
            for id in ids {
                let key = match id {
                    ImageId::Tag(t) | ImageId::Digest(t) => (repo.repository.clone(), t.clone()),
                };
                match manifests.get(&key) {
                    Some(stored) => out.images.push(FetchedManifest {
                        tag: match id {
                            ImageId::Tag(t) => Some(t.clone()),
                            ImageId::Digest(_) => None,
                        },
                        digest: Some(stored.digest.clone()),
                        media_type: Some(stored.media_type.clone()),
                        manifest: stored.manifest.clone(),
                    }),
                    None => out.failures.push(ImageFailure {
                        tag: match id {
                            ImageId::Tag(t) => Some(t.clone()),
                            ImageId::Digest(_) => None,
                        },
                        digest: match id {
                            ImageId::Digest(d) => Some(d.clone()),
                            ImageId::Tag(_) => None,
                        },
                        code: "ImageNotFound".into(),
                        reason: "Requested image not found".into(),
                    }),
                }
            }
            Ok(out)
        }
        .boxed()
    }

    fn batch_check_layer_availability<'a>(
        &'a self,
        repo: &'a RepositoryKey,
        digests: &'a [String],
    ) -> BoxFuture<'a, Result<LayerAvailabilityOutput, RegistryError>> {
        async move {
            self.check_calls.fetch_add(1, Ordering::SeqCst);
            self.max_digests_per_call
                .fetch_max(digests.len(), Ordering::SeqCst);
            self.record("BatchCheckLayerAvailability", repo, digests.iter().cloned());
            self.wait().await;
            if let Some(e) = self.error(repo) {
                return Err(e);
            }
            let blobs = self.blobs.lock().expect("lock");
            let silent = self.silent_blobs.lock().expect("lock");
            let answered = digests
                .iter()
                .filter(|d| !silent.contains(d))
                .map(|d| {
                    let state = blobs
                        .get(&(repo.repository.clone(), d.clone()))
                        .copied()
                        .unwrap_or(BlobState::Missing);
                    (d.clone(), state)
                })
                .collect();
            Ok(LayerAvailabilityOutput {
                blobs: answered,
                ..Default::default()
            })
        }
        .boxed()
    }
}
