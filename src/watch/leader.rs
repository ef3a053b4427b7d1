//! Which replica verifies: the one holding the Lease. kube-lease-manager keeps the Lease
//! (acquires it, renews it a third of its duration before it runs out, releases it), driven
//! here one step at a time rather than by its own loop: a replica waiting for the Lease
//! sleeps, in the crate, until the expiry it last read, and does not see a release. So while
//! waiting it also reads the Lease every [`FREED_POLL`], and when the holder has given it up
//! it starts afresh with a new manager, which takes the free Lease at once. With the chart's
//! 15 s lease, a rolling update leaves no verifier for about a second, not 15.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;

use super::publish::Signals;
use super::verify::Verifier;
use super::watchers::{Reach, PROBE_EVERY};
use super::{WatchMetrics, WatchSettings, LEASE_NAME};

const FIRST_RETRY: Duration = Duration::from_secs(1);
const LONGEST_RETRY: Duration = Duration::from_secs(60);

/// The pause before the next attempt at the Lease: 1 s, doubling to 60 s, reset by success.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Backoff(FIRST_RETRY)
    }

    async fn sleep(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(LONGEST_RETRY);
    }

    fn reset(&mut self) {
        self.0 = FIRST_RETRY;
    }
}
/// At most how long stopping waits for the Lease to be released.
pub(super) const RELEASE_WAIT: Duration = Duration::from_secs(3);
/// How often a replica waiting for the Lease reads it, to see a release.
pub(super) const FREED_POLL: Duration = Duration::from_secs(1);

/// What verifying as the leader needs.
pub(super) struct Leader {
    pub client: Client,
    pub settings: WatchSettings,
    pub verifier: Verifier,
    pub signals: Arc<Signals>,
    pub metrics: Arc<WatchMetrics>,
}

/// The verifier's part: verifies while this replica holds the Lease (always, without
/// leader election), until stopped; then gives the Lease up, so that another replica
/// takes over at once instead of after the lease duration.
pub(super) async fn lead(
    leader: Arc<Leader>,
    mut stop: watch::Receiver<bool>,
    released: watch::Sender<bool>,
) {
    // A restart after a panic starts as a follower: the series of the run that failed go.
    leader.metrics.leader.set(0);
    leader.signals.step_down();
    let mut held: Option<Arc<LeaseManager>> = None;
    tokio::select! {
        () = leader.lead(&mut held) => {}
        _ = stop.wait_for(|s| *s) => {}
    }
    if let Some(manager) = held {
        match tokio::time::timeout(RELEASE_WAIT, manager.release()).await {
            Ok(Ok(())) => tracing::info!("Lease released"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot release the Lease; it runs out by itself")
            }
            Err(_) => tracing::warn!("the Lease was not released in time; it runs out by itself"),
        }
    }
    leader.metrics.leader.set(0);
    released.send_replace(true);
}

impl Leader {
    /// Leads whenever this replica holds the Lease; `held` is the manager of the Lease
    /// while this replica may hold it (released on stop).
    async fn lead(&self, held: &mut Option<Arc<LeaseManager>>) {
        if !self.settings.leader_election {
            self.metrics.leader.set(1);
            self.verifier.run().await;
            return;
        }
        loop {
            let manager = Arc::new(self.lease_manager().await);
            *held = Some(manager.clone());
            if !self.wait_for_lease(&manager).await {
                continue;
            }
            self.metrics.leader.set(1);
            tracing::info!(identity = %self.settings.identity, "leading the re-verification");
            tokio::select! {
                () = self.verifier.run() => {}
                () = self.keep(&manager) => {}
            }
            self.metrics.leader.set(0);
            self.signals.step_down();
            tracing::info!(identity = %self.settings.identity, "no longer leading the re-verification");
        }
    }

    /// Steps `manager` until it holds the Lease (true), or until the Lease is seen given up
    /// by its holder (false: start afresh, the manager's view is stale).
    async fn wait_for_lease(&self, manager: &LeaseManager) -> bool {
        let mut backoff = Backoff::new();
        let mut reach = Reach::new("Lease");
        loop {
            tokio::select! {
                changed = manager.changed() => match changed {
                    Ok(true) => {
                        reach.saw(None::<&kube_lease_manager::LeaseManagerError>);
                        return true;
                    }
                    Ok(false) => reach.saw(None::<&kube_lease_manager::LeaseManagerError>),
                    Err(e) => {
                        reach.saw(Some(&e));
                        backoff.sleep().await;
                    }
                },
                () = self.freed() => return false,
            }
        }
    }

    /// Returns once the Lease has no holder (a replica gave it up).
    async fn freed(&self) {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), &self.settings.lease_namespace);
        loop {
            tokio::time::sleep(FREED_POLL).await;
            if let Ok(Some(lease)) = api.get_opt(LEASE_NAME).await {
                let holder = lease.spec.and_then(|s| s.holder_identity);
                if holder.is_none_or(|h| h.is_empty()) {
                    tracing::debug!(lease = LEASE_NAME, "the Lease was given up; taking it");
                    return;
                }
            }
        }
    }

    /// The Lease's manager, retried with back-off while the API server cannot be reached.
    async fn lease_manager(&self) -> LeaseManager {
        let settings = &self.settings;
        let duration = settings.lease_duration.as_secs().max(2);
        let mut backoff = Backoff::new();
        let mut reach = Reach::new("Lease");
        loop {
            let built = LeaseManagerBuilder::new(self.client.clone(), LEASE_NAME)
                .with_namespace(settings.lease_namespace.as_str())
                .with_identity(settings.identity.as_str())
                .with_duration(duration)
                // Renewed this long before it runs out: a third of the lease.
                .with_grace((duration / 3).max(1))
                .build()
                .await;
            match built {
                Ok(m) => {
                    reach.saw(None::<&kube_lease_manager::LeaseManagerError>);
                    return m;
                }
                Err(e) => {
                    reach.saw(Some(&e));
                    backoff.sleep().await;
                }
            }
        }
    }

    /// Renews the Lease while it is held; returns when it is lost. After a failed renewal
    /// the Lease is read every few seconds, to tell when the API server is back (a renewal
    /// that succeeds says nothing).
    async fn keep(&self, manager: &LeaseManager) {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), &self.settings.lease_namespace);
        let mut backoff = Backoff::new();
        let mut reach = Reach::new("Lease");
        loop {
            let changed = if reach.is_lost() {
                tokio::select! {
                    changed = manager.changed() => changed,
                    () = tokio::time::sleep(PROBE_EVERY) => {
                        if api.get_opt(LEASE_NAME).await.is_ok() {
                            reach.saw(None::<&kube::Error>);
                        }
                        continue;
                    }
                }
            } else {
                manager.changed().await
            };
            reach.saw(changed.as_ref().err());
            match changed {
                Ok(false) => return,
                Ok(true) => backoff.reset(),
                Err(_) => backoff.sleep().await,
            }
        }
    }
}
