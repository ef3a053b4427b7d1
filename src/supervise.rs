//! Long-lived background tasks, supervised: a task that panics or ends when it should run
//! for ever is logged, counted (`ecr_preflight_task_restarts_total{task}`) and started
//! again after a back-off, instead of leaving its data silently stale.

use std::future::Future;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The `task` label: a fixed name per task.
#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct TaskLabels {
    pub task: &'static str,
}

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const LONGEST_BACKOFF: Duration = Duration::from_secs(60);
/// A task that ran this long before stopping starts its next back-off afresh.
const HEALTHY_RUN: Duration = Duration::from_secs(300);

/// Restarts counted by task.
pub type TaskRestarts = Family<TaskLabels, Counter>;

/// Runs `make()`'s task, and again whenever it panics or ends, until the returned handle is
/// aborted (which aborts the running task too).
pub fn spawn<F, Fut>(task: &'static str, restarts: TaskRestarts, make: F) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (_, never) = watch::channel(false);
    spawn_until(task, restarts, never, make)
}

/// As [`spawn`], for a task that ends when `stop` turns true: that end is the task's
/// last, not a failure (neither counted nor restarted).
pub fn spawn_until<F, Fut>(
    task: &'static str,
    restarts: TaskRestarts,
    stop: watch::Receiver<bool>,
    make: F,
) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let started = Instant::now();
            let mut running = AbortOnDrop(tokio::spawn(make()));
            let why = match running.await_end().await {
                Ok(()) if *stop.borrow() => return,
                Ok(()) => "it ended".to_owned(),
                Err(e) if e.is_panic() => format!("it panicked: {}", panic_text(e.into_panic())),
                // Cancelled from outside: the runtime is shutting down.
                Err(_) => return,
            };
            if started.elapsed() >= HEALTHY_RUN {
                backoff = FIRST_BACKOFF;
            }
            restarts.get_or_create(&TaskLabels { task }).inc();
            tracing::error!(task, why = %why, restart_in = ?backoff, "a background task stopped; restarting it");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(LONGEST_BACKOFF);
        }
    })
}

/// A spawned task that is aborted when its handle is dropped: the supervisor's own abort
/// reaches the task it runs.
struct AbortOnDrop(JoinHandle<()>);

impl AbortOnDrop {
    async fn await_end(&mut self) -> Result<(), tokio::task::JoinError> {
        (&mut self.0).await
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_task_that_panics_or_ends_is_counted_and_restarted_with_back_off() {
        let restarts = TaskRestarts::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let started = Instant::now();
        let handle = spawn("test", restarts.clone(), move || {
            let run = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                match run {
                    0 => panic!("first run fails"),
                    1 => {} // ends, as it should not
                    _ => std::future::pending::<()>().await,
                }
            }
        });
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3, "started three times");
        let count = restarts.get_or_create(&TaskLabels { task: "test" }).get();
        assert_eq!(count, 2);
        assert!(
            started.elapsed() >= Duration::from_secs(3),
            "1 s then 2 s of back-off"
        );
        handle.abort();
        let _ = handle.await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_ends_because_it_was_stopped_is_not_restarted() {
        let restarts = TaskRestarts::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let (stop, stopped) = watch::channel(false);
        let handle = spawn_until("stoppable", restarts.clone(), stopped.clone(), move || {
            let run = counted.fetch_add(1, Ordering::SeqCst);
            let mut stopped = stopped.clone();
            async move {
                if run == 0 {
                    panic!("first run fails");
                }
                let _ = stopped.wait_for(|s| *s).await;
            }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        stop.send_replace(true);
        handle.await.expect("the supervisor ends with its task");
        assert_eq!(
            runs.load(Ordering::SeqCst),
            2,
            "restarted after the panic only"
        );
        let count = restarts
            .get_or_create(&TaskLabels { task: "stoppable" })
            .get();
        assert_eq!(count, 1);
    }
}
