//! Cluster-sized walks (the inventory's rows and `/inventory` documents, the images in use)
//! run here: on one thread of their own, at the lowest priority the OS grants without
//! privileges (nice 19 on Linux). Never on the worker that answers admission, and, on a
//! machine whose cores are busy, never ahead of it: tokio's blocking pool would run them at
//! the worker's priority, competing for the same cores (docs/performance.md, 8b).

use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

type Job = Box<dyn FnOnce() + Send>;

/// The walks' thread, started on first use.
fn queue() -> &'static Mutex<mpsc::Sender<Job>> {
    static QUEUE: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    QUEUE.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let started = std::thread::Builder::new()
            .name("ecr-preflight-walks".into())
            .spawn(move || {
                if let Err(e) =
                    thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Min)
                {
                    tracing::debug!(error = %e, "cannot lower the priority of the inventory's walks; they run at the default");
                }
                for job in rx {
                    // A walk that panics loses its answer (its caller sees `None`), not the
                    // thread.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
            });
        if let Err(e) = started {
            tracing::error!(error = %e, "cannot start the inventory's walks thread");
        }
        Mutex::new(tx)
    })
}

/// Runs `walk` on the walks' thread and returns its result; `None` when it panicked or the
/// thread could not be started. A task of tokio's blocking pool waits for it: the runtime
/// counts a walk as work in progress (so a paused test clock does not jump ahead of it).
pub async fn run<T: Send + 'static>(walk: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(move || {
        let (tx, rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move || {
            let _ = tx.send(walk());
        });
        queue()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(job)
            .ok()?;
        rx.recv().ok()
    })
    .await
    .ok()
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_walk_runs_off_the_caller_and_a_panic_loses_only_its_answer() {
        let here = std::thread::current().id();
        let there = run(|| std::thread::current().id()).await;
        assert!(there.is_some_and(|t| t != here));
        let panicked: Option<()> = run(|| panic!("a walk that fails")).await;
        assert_eq!(panicked, None);
        assert_eq!(run(|| 2 + 2).await, Some(4));
        assert_eq!(run(|| std::thread::current().id()).await, there);
    }
}
