//! Caches of facts from ECR, never of decisions: a decision is recomputed from facts on
//! every request, so a mode or policy change never meets a stale answer.
//!
//! Every key carries the repository and its registry (account, region): one account's
//! answer must never stand for another's. Only positive facts are kept: a missing blob or a
//! tag not found is asked again next time, so a re-push is seen at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;

use crate::check::Finding;
use crate::image::RepositoryKey;
use crate::manifest::Manifest;

/// Sizes and lifetimes, from flags.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Manifests by digest: immutable, so long-lived.
    pub manifest_capacity: u64,
    pub manifest_ttl: Duration,
    /// Tag → digest: tags move, so short-lived.
    pub tag_capacity: u64,
    pub tag_ttl: Duration,
    /// Blobs found AVAILABLE.
    pub blob_capacity: u64,
    pub blob_ttl: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            manifest_capacity: 10_000,
            manifest_ttl: Duration::from_secs(24 * 3600),
            tag_capacity: 10_000,
            tag_ttl: Duration::from_secs(60),
            blob_capacity: 200_000,
            blob_ttl: Duration::from_secs(600),
        }
    }
}

/// A blob digest in 32 bytes when it is sha256 (nearly always), to keep 100,000 cached blob
/// entries small.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BlobKey {
    Sha256([u8; 32]),
    Other(Box<str>),
}

impl BlobKey {
    pub fn new(digest: &str) -> Self {
        digest
            .strip_prefix("sha256:")
            .and_then(decode_hex32)
            .map_or_else(|| BlobKey::Other(digest.into()), BlobKey::Sha256)
    }
}

fn decode_hex32(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (slot, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let s = std::str::from_utf8(pair).ok()?;
        *slot = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

type Repo = Arc<RepositoryKey>;

/// Hit and miss counts per cache, for metrics and benchmarks.
#[derive(Debug, Default)]
pub struct CacheCounters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

impl CacheCounters {
    fn record(&self, hit: bool) {
        let counter = if hit { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The caches. Besides the three of raw facts, `intact` remembers, per image reference as
/// written (its host names account and region), that every blob of it was AVAILABLE: a
/// fact derived from the others, kept no longer than the shortest of their lifetimes, so
/// the warm path needs one lookup per image.
pub struct Caches {
    intact: Cache<Arc<str>, (Finding, bool)>,
    tags: Cache<(Repo, Box<str>), Arc<str>>,
    manifests: Cache<(Repo, Arc<str>), Arc<Manifest>>,
    blobs: Cache<(Repo, BlobKey), ()>,
    pub tag_counters: CacheCounters,
    pub manifest_counters: CacheCounters,
    pub blob_counters: CacheCounters,
}

impl Caches {
    pub fn new(settings: &CacheSettings) -> Self {
        Caches {
            intact: Cache::builder()
                .max_capacity(settings.tag_capacity)
                .time_to_live(
                    settings
                        .tag_ttl
                        .min(settings.blob_ttl)
                        .min(settings.manifest_ttl),
                )
                .build(),
            tags: Cache::builder()
                .max_capacity(settings.tag_capacity)
                .time_to_live(settings.tag_ttl)
                .build(),
            manifests: Cache::builder()
                .max_capacity(settings.manifest_capacity)
                .time_to_live(settings.manifest_ttl)
                .build(),
            blobs: Cache::builder()
                .max_capacity(settings.blob_capacity)
                .time_to_live(settings.blob_ttl)
                .build(),
            tag_counters: CacheCounters::default(),
            manifest_counters: CacheCounters::default(),
            blob_counters: CacheCounters::default(),
        }
    }

    /// The finding and pull-through flag of an image found intact within the TTLs.
    pub fn intact(&self, image: &str) -> Option<(Finding, bool)> {
        self.intact.get(image)
    }

    pub fn put_intact(&self, image: &str, finding: Finding, pull_through: bool) {
        self.intact.insert(image.into(), (finding, pull_through));
    }

    pub fn tag(&self, repo: &Repo, tag: &str) -> Option<Arc<str>> {
        let found = self.tags.get(&(repo.clone(), tag.into()));
        self.tag_counters.record(found.is_some());
        found
    }

    pub fn put_tag(&self, repo: &Repo, tag: &str, digest: Arc<str>) {
        self.tags.insert((repo.clone(), tag.into()), digest);
    }

    pub fn manifest(&self, repo: &Repo, digest: &str) -> Option<Arc<Manifest>> {
        let found = self.manifests.get(&(repo.clone(), digest.into()));
        self.manifest_counters.record(found.is_some());
        found
    }

    pub fn put_manifest(&self, repo: &Repo, digest: Arc<str>, manifest: Arc<Manifest>) {
        self.manifests.insert((repo.clone(), digest), manifest);
    }

    /// Whether the blob was seen AVAILABLE within its TTL.
    pub fn blob_available(&self, repo: &Repo, digest: &str) -> bool {
        let hit = self
            .blobs
            .contains_key(&(repo.clone(), BlobKey::new(digest)));
        self.blob_counters.record(hit);
        hit
    }

    pub fn put_blob_available(&self, repo: &Repo, digest: &str) {
        self.blobs.insert((repo.clone(), BlobKey::new(digest)), ());
    }

    /// Entries held now (after pending evictions run), per cache: (tags, manifests, blobs).
    pub fn sizes(&self) -> (u64, u64, u64) {
        self.tags.run_pending_tasks();
        self.manifests.run_pending_tasks();
        self.blobs.run_pending_tasks();
        (
            self.tags.entry_count(),
            self.manifests.entry_count(),
            self.blobs.entry_count(),
        )
    }
}
