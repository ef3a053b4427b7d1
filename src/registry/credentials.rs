//! AWS credentials resolved before any call needs them and refreshed before they expire, so
//! that no ECR call waits for STS: an IRSA web-identity or Pod Identity exchange takes
//! hundreds of milliseconds, and the SDK's own cache makes the call that finds the
//! credentials stale wait for it.
//!
//! A [`CredentialKeeper`] wraps the default chain's provider. A background task resolves
//! at once, then again ahead of each expiry (or every [`NO_EXPIRY_REFRESH`] for credentials
//! without one); failures are retried with back-off while the last good credentials are
//! still valid. The SDK asks the keeper on every call and gets the credentials in hand
//! without waiting, or the reason there are none.

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{
    self, error::CredentialsError, ProvideCredentials, SharedCredentialsProvider,
};
use aws_credential_types::Credentials;
use tokio::sync::watch;

/// Refreshed this long before they expire (the SDK's own cache refreshes 5 minutes before,
/// in the call that needs them).
const REFRESH_AHEAD: Duration = Duration::from_secs(5 * 60);
/// Credentials without an expiry (keys from the environment or a profile) are read again
/// this often, so that a rotated profile file is picked up (the SDK's default too).
pub const NO_EXPIRY_REFRESH: Duration = Duration::from_secs(15 * 60);
/// A resolution that takes longer is abandoned and retried.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(30);
/// Back-off between failed resolutions: 1 s, doubling, at most a minute.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_CAP: Duration = Duration::from_secs(60);

/// What the keeper holds.
#[derive(Debug, Clone, Default)]
struct Held {
    /// The last credentials resolved.
    credentials: Option<Credentials>,
    /// Why the last resolution failed, while it keeps failing.
    problem: Option<String>,
    /// The first resolution has finished, well or not.
    settled: bool,
}

/// Credentials in hand for the SDK; see the module documentation.
#[derive(Debug)]
pub struct CredentialKeeper {
    held: watch::Sender<Held>,
}

impl CredentialKeeper {
    /// Starts resolving from `source` at once, and keeps the credentials fresh in the
    /// background for as long as the keeper lives.
    pub fn start(source: SharedCredentialsProvider) -> Arc<Self> {
        let keeper = Arc::new(CredentialKeeper {
            held: watch::Sender::new(Held::default()),
        });
        tokio::spawn(refresh_loop(Arc::downgrade(&keeper), source));
        keeper
    }

    /// Waits until credentials are in hand, at most `bound`. `Err` says why there are none.
    pub async fn wait_ready(&self, bound: Duration) -> Result<(), String> {
        let mut held = self.held.subscribe();
        let _ = tokio::time::timeout(bound, held.wait_for(|h| h.credentials.is_some())).await;
        match self.problem() {
            None => Ok(()),
            Some(problem) => Err(problem),
        }
    }

    /// Why calls have no valid credentials now, if they have none.
    pub fn problem(&self) -> Option<String> {
        let held = self.held.borrow();
        match (&held.credentials, &held.problem) {
            (Some(c), _) if !expired(c) => None,
            (_, Some(problem)) => Some(problem.clone()),
            (Some(_), None) => Some("the AWS credentials expired".to_owned()),
            (None, None) => Some("AWS credentials are still being resolved".to_owned()),
        }
    }

    /// The credentials for a call: at once once the first resolution has finished (the
    /// command line's first call may wait for it).
    async fn current(&self) -> provider::Result {
        self.in_hand().await.map_err(CredentialsError::not_loaded)
    }

    /// As [`CredentialKeeper::current`], with the reason there are none as text.
    pub(super) async fn in_hand(&self) -> Result<Credentials, String> {
        let mut held = self.held.subscribe();
        let _ = held.wait_for(|h| h.settled).await;
        let credentials = held.borrow().credentials.clone();
        match credentials {
            Some(c) if !expired(&c) => Ok(c),
            _ => Err(self.problem().unwrap_or_default()),
        }
    }

    fn store(&self, result: Result<Credentials, String>) {
        self.held.send_modify(|held| {
            held.settled = true;
            match result {
                Ok(c) => {
                    held.credentials = Some(c);
                    held.problem = None;
                }
                Err(problem) => held.problem = Some(problem),
            }
        });
    }
}

/// A handle the SDK holds: it asks the keeper, never the chain.
#[derive(Debug, Clone)]
pub struct KeptCredentials(pub Arc<CredentialKeeper>);

impl ProvideCredentials for KeptCredentials {
    fn provide_credentials<'a>(&'a self) -> provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        provider::future::ProvideCredentials::new(self.0.current())
    }
}

fn expired(credentials: &Credentials) -> bool {
    credentials
        .expiry()
        .is_some_and(|at| at <= SystemTime::now())
}

/// When to resolve again after credentials expiring at `expiry` were resolved at `now`:
/// [`REFRESH_AHEAD`] before they expire, or halfway there when they live shorter than that.
pub fn refresh_after(expiry: Option<SystemTime>, now: SystemTime) -> Duration {
    let Some(expiry) = expiry else {
        return NO_EXPIRY_REFRESH;
    };
    let left = expiry.duration_since(now).unwrap_or_default();
    left.checked_sub(REFRESH_AHEAD)
        .filter(|d| *d >= left / 2)
        .unwrap_or(left / 2)
        .max(RETRY_FIRST)
}

/// An error and its sources on one line, each said once (the chain's error repeats its
/// attempts in the sources), at most 600 characters.
fn one_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        let text = e
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ").chars().take(600).collect()
}

async fn refresh_loop(keeper: Weak<CredentialKeeper>, source: SharedCredentialsProvider) {
    let mut failures: u32 = 0;
    loop {
        let result = match tokio::time::timeout(RESOLVE_TIMEOUT, source.provide_credentials()).await
        {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(format!("no AWS credentials: {}", one_line(&e))),
            Err(_) => Err(format!(
                "no AWS credentials: resolving them took longer than {}",
                humantime::format_duration(RESOLVE_TIMEOUT)
            )),
        };
        let Some(keeper) = keeper.upgrade() else {
            return;
        };
        let wait = match &result {
            Ok(c) => {
                failures = 0;
                let wait = refresh_after(c.expiry(), SystemTime::now());
                tracing::info!(refresh_in = ?wait, "AWS credentials resolved");
                wait
            }
            Err(problem) => {
                failures += 1;
                let wait = RETRY_FIRST
                    .saturating_mul(1 << (failures - 1).min(6))
                    .min(RETRY_CAP);
                tracing::warn!(%problem, retry_in = ?wait, "cannot resolve AWS credentials");
                wait
            }
        };
        keeper.store(result);
        drop(keeper);
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_comes_ahead_of_expiry() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hour = Duration::from_secs(3600);
        assert_eq!(refresh_after(Some(now + hour), now), hour - REFRESH_AHEAD);
        // Short-lived: halfway.
        let short = Duration::from_secs(6 * 60);
        assert_eq!(refresh_after(Some(now + short), now), short / 2);
        // Already expired: retried soon, not in a busy loop.
        assert_eq!(refresh_after(Some(now - hour), now), RETRY_FIRST);
        assert_eq!(refresh_after(None, now), NO_EXPIRY_REFRESH);
    }
}
