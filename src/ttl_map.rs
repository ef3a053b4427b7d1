//! A bounded map whose entries expire, for the caches read on the warm path.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use foldhash::fast::RandomState;
// tokio's clock: the real one in production, the paused one in tests, so lifetimes are
// tested by advancing time instead of sleeping.
use tokio::time::Instant;

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
