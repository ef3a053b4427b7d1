//! The platforms of single-arch images, from their config blobs: each digest read once
//! through the registry seam and kept for good (a digest's content never changes).
//! Concurrent admissions of a new digest share one read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::image::RepositoryKey;
use crate::manifest::Platform;
use crate::registry::{ConfigPlatforms, RegistryError};
use crate::ttl_map::TtlMap;

/// Digests remembered at most (a few hundred bytes each).
const REMEMBERED: u64 = 100_000;

pub struct ConfigCache {
    source: Arc<dyn ConfigPlatforms>,
    /// Platforms read: looked up without a future, and without moka's bookkeeping per
    /// read, on the warm path.
    known: TtlMap<String, Platform>,
    /// Reads in flight, so that concurrent misses of one digest share one read.
    reading: moka::future::Cache<String, Platform>,
    reads: AtomicU64,
}

impl ConfigCache {
    pub fn new(source: Arc<dyn ConfigPlatforms>) -> Self {
        ConfigCache {
            source,
            // Kept for good: a digest's content never changes.
            known: TtlMap::new(REMEMBERED, Duration::MAX),
            // Entries only live while their read is shared: the known cache keeps them.
            reading: moka::future::Cache::builder()
                .max_capacity(REMEMBERED)
                .time_to_live(Duration::from_secs(1))
                .build(),
            reads: AtomicU64::new(0),
        }
    }

    /// The platform in config blob `digest` of `repo` (at `host`): read on first sight only.
    pub async fn platform(
        &self,
        host: &str,
        repo: &RepositoryKey,
        digest: &str,
    ) -> Result<Platform, Arc<RegistryError>> {
        if let Some(known) = self.known.get(digest) {
            return Ok(known);
        }
        let platform = self
            .reading
            .try_get_with(digest.to_owned(), async {
                self.reads.fetch_add(1, Ordering::Relaxed);
                self.source.config_platform(host, repo, digest).await
            })
            .await?;
        self.known.insert(digest.to_owned(), platform.clone());
        Ok(platform)
    }

    /// Config blobs read so far.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }
}
