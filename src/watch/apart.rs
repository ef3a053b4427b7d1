//! The controller beside the webhook (`serve --watch`), on a thread and a runtime of its own
//! at the lowest priority the OS grants without privileges (nice 19 on Linux).
//!
//! On admission's worker, a pass's work on each repository (1–2 ms of parsing, signing and
//! bookkeeping between awaits) delays the reviews queued behind it: at 100,000 Pods the
//! warm p99 rose 1.65× during a pass at production's pace (docs/performance.md, 8b). On a
//! thread of its own the kernel preempts the controller for admission instead of admission
//! waiting for the controller to yield, and on a busy node the controller gives way. It is
//! not starved of what it needs: a Lease renewal or a watch event costs microseconds, and
//! on an idle core the controller runs at full speed.
//!
//! Everything that does I/O for the controller is made on its runtime: its Kubernetes
//! client (kube spawns the client's buffer task where the client is built) and its
//! registry's connections (an HTTP pool drives each connection from the runtime that opened
//! it, so a pool shared with admission would hand admission connections driven from this
//! low-priority thread).

use std::future::Future;
use std::sync::Arc;

use anyhow::anyhow;
use tokio::sync::oneshot;

use super::{controller_client, Controller, WatchSettings};
use crate::engine::Engine;

/// Starts the controller on its own thread and runtime (see the module's comment); the
/// thread ends once the controller is stopped and has given its Lease up. `engine` must
/// call a registry of its own (not admission's), for the reason above.
pub async fn start_apart(
    config: kube::Config,
    engine: Arc<Engine>,
    settings: WatchSettings,
) -> anyhow::Result<Controller> {
    let (started, controller) = oneshot::channel();
    spawn_apart(move || async move {
        let client = match controller_client(config) {
            Ok(client) => client,
            Err(e) => {
                let _ = started.send(Err(anyhow!("cannot build the Kubernetes client: {e}")));
                return;
            }
        };
        let controller = Controller::start(client, engine, settings);
        let mut done = controller.done.clone();
        if started.send(Ok(controller)).is_err() {
            return;
        }
        let _ = done.wait_for(|d| *d).await;
    })?;
    controller
        .await
        .map_err(|_| anyhow!("the controller's thread ended before the controller started"))?
}

/// Runs the future `make` gives on the controller's thread: a current-thread runtime of its
/// own, at the lowest priority. The thread ends with the future; tasks the future spawned
/// and left parked (watchers, the Event poster) end with the runtime, without waiting.
pub fn spawn_apart<F>(make: impl FnOnce() -> F + Send + 'static) -> anyhow::Result<()>
where
    F: Future<Output = ()>,
{
    std::thread::Builder::new()
        .name("controller".into())
        .spawn(move || {
            if let Err(e) =
                thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Min)
            {
                tracing::warn!(error = %e, "cannot lower the controller's priority: it runs at the webhook's");
            }
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                // Its blocking pool (DNS lookups, waits for the walks' thread) is named
                // apart from admission's.
                .thread_name("controller-pool")
                .build();
            match runtime {
                Ok(runtime) => {
                    runtime.block_on(make());
                    runtime.shutdown_background();
                }
                Err(e) => tracing::error!(error = %e, "cannot start the controller's runtime"),
            }
        })
        .map_err(|e| anyhow!("cannot start the controller's thread: {e}"))?;
    Ok(())
}
