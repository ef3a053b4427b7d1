//! Retries of throttled and transient ECR failures, with full-jitter exponential back-off,
//! only while the budget allows another attempt.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::registry::RegistryError;

const BASE: Duration = Duration::from_millis(25);
const CAP: Duration = Duration::from_millis(800);
/// An attempt started with less time than this left cannot finish; don't start it.
const MIN_ATTEMPT: Duration = Duration::from_millis(50);
/// Attempts of one call at most: an admission's budget of seconds rarely fits more; a
/// background check, with minutes of budget, must not keep calling an endpoint that is down.
const MAX_ATTEMPTS: u32 = 8;

impl RegistryError {
    /// Throttling, 5xx and transport failures may pass; anything else will not.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            RegistryError::Throttled(_) | RegistryError::Server(_) | RegistryError::Transport(_)
        )
    }
}

/// Runs `attempt` until it succeeds, fails for good, has been tried [`MAX_ATTEMPTS`] times,
/// or `deadline` leaves no room for a back-off and another attempt. Each attempt is itself bounded by `deadline`.
pub async fn with_retries<T, F, Fut>(deadline: Instant, mut attempt: F) -> Result<T, RegistryError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, RegistryError>>,
{
    let mut tries: u32 = 0;
    loop {
        let error = match tokio::time::timeout_at(deadline, attempt()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => e,
            Err(_) => return Err(RegistryError::Timeout),
        };
        if !error.is_retryable() || tries + 1 >= MAX_ATTEMPTS {
            return Err(error);
        }
        let ceiling = BASE.saturating_mul(1 << tries.min(10)).min(CAP);
        let pause = ceiling.mul_f64(fastrand::f64());
        if Instant::now() + pause + MIN_ATTEMPT >= deadline {
            return Err(error);
        }
        tokio::time::sleep(pause).await;
        tries += 1;
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::time::Duration;

    use tokio::time::Instant;

    use super::{with_retries, MAX_ATTEMPTS};
    use crate::registry::RegistryError;

    #[tokio::test(start_paused = true)]
    async fn a_long_budget_stops_after_the_most_attempts() {
        let tries = Cell::new(0u32);
        let result: Result<(), _> = with_retries(Instant::now() + Duration::from_secs(600), || {
            tries.set(tries.get() + 1);
            async { Err(RegistryError::Transport("connection refused".into())) }
        })
        .await;
        assert_eq!(tries.get(), MAX_ATTEMPTS);
        assert!(matches!(result, Err(RegistryError::Transport(_))));
    }
}
