//! Caches of facts from ECR, never of decisions: a decision is recomputed from facts on
//! every request, so a mode or policy change never meets a stale answer.
//!
//! Every key carries the repository and its registry (account, region): one account's
//! answer must never stand for another's. Only positive facts are kept: a missing blob or a
//! tag not found is asked again next time, so a re-push is seen at once.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use foldhash::fast::RandomState;
// tokio's clock: the real one in production, the paused one in tests, so lifetimes are
// tested by advancing time instead of sleeping.
use tokio::time::Instant;

use crate::image::RepositoryKey;
use crate::manifest::Manifest;
use crate::metrics::EngineMetrics;
use crate::report::Finding;

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
/// the warm path needs one lookup per image.
pub struct Caches {
    intact: TtlMap<Arc<str>, (Finding, bool)>,
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

/// A bounded map whose entries expire: sharded hash maps under short locks, with no
/// bookkeeping per read (a general-purpose cache records every read for its eviction
/// policy, which the warm path measured at 2 µs a request), on tokio's clock (moka keeps
/// its own, which a test cannot move). Bounded per shard: when a shard
/// is full, expired entries go first, then an arbitrary eighth of it (an entry dropped
/// early is only asked about again). Hashed with foldhash, seeded per process: SipHash was a
/// tenth of the warm review.
pub struct TtlMap<K, V> {
    shards: [Mutex<Shard<K, V>>; SHARDS],
    hasher: RandomState,
    epoch: Instant,
    ttl_ms: u64,
    shard_capacity: usize,
}

const SHARDS: usize = 16;

/// Values with their expiry (milliseconds since the map's epoch).
type Shard<K, V> = HashMap<K, (V, u64), RandomState>;

impl<K: Hash + Eq + Clone, V: Clone> TtlMap<K, V> {
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        TtlMap {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::default())),
            hasher: RandomState::default(),
            epoch: Instant::now(),
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            shard_capacity: usize::try_from(capacity)
                .unwrap_or(usize::MAX)
                .div_ceil(SHARDS)
                .max(1),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> MutexGuard<'_, Shard<K, V>> {
        let index = usize::try_from(self.hasher.hash_one(key) % SHARDS as u64).unwrap_or(0);
        let shard = self.shards.get(index).unwrap_or(&self.shards[0]);
        shard.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value, unless absent or expired.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let now = self.now_ms();
        self.shard(key)
            .get(key)
            .filter(|(_, expiry)| *expiry > now)
            .map(|(value, _)| value.clone())
    }

    pub fn insert(&self, key: K, value: V) {
        let now = self.now_ms();
        let mut shard = self.shard(&key);
        if shard.len() >= self.shard_capacity && !shard.contains_key(&key) {
            shard.retain(|_, (_, expiry)| *expiry > now);
            if shard.len() >= self.shard_capacity {
                let evict: Vec<K> = shard
                    .keys()
                    .take(self.shard_capacity / 8 + 1)
                    .cloned()
                    .collect();
                for k in evict {
                    shard.remove(&k);
                }
            }
        }
        shard.insert(key, (value, now.saturating_add(self.ttl_ms)));
    }

    /// Drops every entry.
    pub fn clear(&self) {
        for shard in &self.shards {
            shard.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }

    /// Entries held, expired ones not yet dropped included.
    pub fn len(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len() as u64)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_found_replaced_and_kept_apart() {
        let map: TtlMap<String, u32> = TtlMap::new(1000, Duration::from_secs(60));
        assert_eq!(map.get("a"), None);
        map.insert("a".into(), 1);
        map.insert("b".into(), 2);
        map.insert("a".into(), 3);
        assert_eq!(map.get("a"), Some(3));
        assert_eq!(map.get("b"), Some(2));
        assert_eq!(map.len(), 2);
    }

    #[test]
    fn expired_entries_are_not_returned() {
        let map: TtlMap<String, u32> = TtlMap::new(1000, Duration::ZERO);
        map.insert("a".into(), 1);
        assert_eq!(map.get("a"), None);
    }

    #[test]
    fn the_size_stays_bounded_and_recent_entries_survive() {
        let capacity = 1600;
        let map: TtlMap<u64, u64> = TtlMap::new(capacity, Duration::from_secs(60));
        for i in 0..20 * capacity {
            map.insert(i, i);
            assert!(map.len() <= capacity, "{} entries after {i}", map.len());
        }
        let last = 20 * capacity - 1;
        assert_eq!(map.get(&last), Some(last));
        // Keys spread over every shard, so the bound is the whole capacity, not a shard's.
        assert!(map.len() > capacity / 2, "{}", map.len());
        for shard in &map.shards {
            assert!(!shard.lock().unwrap().is_empty());
        }
    }
}
