//! Caches of facts from ECR, never of decisions: a decision is recomputed from facts on
//! every request, so a mode or policy change never meets a stale answer.
//!
//! Every key carries the repository and its registry (account, region): one account's
//! answer must never stand for another's. Only positive facts are kept: a missing blob or a
//! tag not found is asked again next time, so a re-push is seen at once.

use std::sync::Arc;
use std::time::Duration;

use crate::findings::Finding;
use crate::image::RepositoryKey;
use crate::manifest::{Manifest, Platform};
use crate::metrics::EngineMetrics;
use crate::ttl_map::TtlMap;

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
    /// The defaults of the `--*-cache-*` flags, which take them from here.
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

/// The caches, all [`TtlMap`]s. Besides the three of raw facts, `intact` remembers, per image reference as
/// written (its host names account and region), that every blob of it was AVAILABLE: a
/// fact derived from the others, kept no longer than the shortest of their lifetimes, so
/// the warm path needs one lookup per image. `platforms` does the same for the platforms an
/// image has (its index's children, or its config blob's), derived from the tag, manifest
/// and config-blob facts, for the platform check on the warm path.
pub struct Caches {
    intact: TtlMap<Arc<str>, (Finding, bool)>,
    platforms: TtlMap<Arc<str>, Arc<[Platform]>>,
    tags: TtlMap<(Repo, Box<str>), Arc<str>>,
    manifests: TtlMap<(Repo, Arc<str>), Arc<Manifest>>,
    blobs: AvailableBlobs,
    metrics: EngineMetrics,
}

impl Caches {
    pub fn new(settings: &CacheSettings, metrics: EngineMetrics) -> Self {
        Caches {
            intact: TtlMap::new(
                settings.tag_capacity,
                settings
                    .tag_ttl
                    .min(settings.blob_ttl)
                    .min(settings.manifest_ttl),
            ),
            platforms: TtlMap::new(
                settings.tag_capacity,
                settings.tag_ttl.min(settings.manifest_ttl),
            ),
            tags: TtlMap::new(settings.tag_capacity, settings.tag_ttl),
            manifests: TtlMap::new(settings.manifest_capacity, settings.manifest_ttl),
            blobs: AvailableBlobs::new(settings.blob_capacity, settings.blob_ttl),
            metrics,
        }
    }

    /// The finding and pull-through flag of an image found intact within the TTLs.
    pub fn intact(&self, image: &str) -> Option<(Finding, bool)> {
        let found = self.intact.get(image);
        self.metrics.cache("image", found.is_some());
        found
    }

    pub fn put_intact(&self, image: &str, finding: Finding, pull_through: bool) {
        self.intact.insert(image.into(), (finding, pull_through));
    }

    /// The platforms image reference `image` has, when derived within the TTLs.
    pub fn platforms(&self, image: &str) -> Option<Arc<[Platform]>> {
        self.platforms.get(image)
    }

    pub fn put_platforms(&self, image: &str, platforms: Arc<[Platform]>) {
        self.platforms.insert(image.into(), platforms);
    }

    /// Forgets every image found intact: they were checked for fewer platforms than are
    /// now wanted. The raw facts stay, so the next check of each costs what its new
    /// children need.
    pub fn forget_intact(&self) {
        self.intact.clear();
    }

    pub fn tag(&self, repo: &Repo, tag: &str) -> Option<Arc<str>> {
        let found = self.tags.get(&(repo.clone(), Box::<str>::from(tag)));
        self.metrics.cache("tag", found.is_some());
        found
    }

    pub fn put_tag(&self, repo: &Repo, tag: &str, digest: Arc<str>) {
        self.tags.insert((repo.clone(), tag.into()), digest);
    }

    pub fn manifest(&self, repo: &Repo, digest: &str) -> Option<Arc<Manifest>> {
        let found = self
            .manifests
            .get(&(repo.clone(), Arc::<str>::from(digest)));
        self.metrics.cache("manifest", found.is_some());
        found
    }

    pub fn put_manifest(&self, repo: &Repo, digest: Arc<str>, manifest: Arc<Manifest>) {
        self.manifests.insert((repo.clone(), digest), manifest);
    }

    /// Whether the blob was seen AVAILABLE within its TTL.
    pub fn blob_available(&self, repo: &Repo, digest: &str) -> bool {
        let hit = self.blobs.contains(repo, digest);
        self.metrics.cache("blob", hit);
        hit
    }

    pub fn put_blob_available(&self, repo: &Repo, digest: &str) {
        self.blobs.insert(repo, digest);
    }

    /// Entries held now per cache, expired ones not yet dropped included:
    /// (tags, manifests, blobs).
    pub fn sizes(&self) -> (u64, u64, u64) {
        (self.tags.len(), self.manifests.len(), self.blobs.len())
    }
}

/// Blobs seen AVAILABLE, with their expiry: the largest cache by far (every layer of every
/// image), so kept lean: about 70 bytes an entry (56 of key and expiry, the rest the hash
/// table's control bytes and spare room; 7 MiB measured for 100,000 entries,
/// docs/performance.md) instead of a few hundred in a general-purpose cache.
struct AvailableBlobs(TtlMap<(Repo, BlobKey), ()>);

impl AvailableBlobs {
    fn new(capacity: u64, ttl: Duration) -> Self {
        AvailableBlobs(TtlMap::new(capacity, ttl))
    }

    fn contains(&self, repo: &Repo, digest: &str) -> bool {
        self.0.get(&(repo.clone(), BlobKey::new(digest))).is_some()
    }

    fn insert(&self, repo: &Repo, digest: &str) {
        self.0.insert((repo.clone(), BlobKey::new(digest)), ());
    }

    fn len(&self) -> u64 {
        self.0.len()
    }
}
