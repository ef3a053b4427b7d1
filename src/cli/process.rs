//! What the long-running subcommands (`serve`, `watch`) share: readiness that waits for
//! credentials, and the signal that stops them.

use std::sync::Arc;
use std::time::Duration;

use crate::registry::credentials::CredentialKeeper;
use crate::server::ReadyGate;

/// Readiness waits for credentials, at most `bound`: a missing role must not keep the pod
/// unready forever, so past the bound it turns ready and says why lookups will fail.
pub fn credentials_gate(keeper: Arc<CredentialKeeper>, bound: Duration) -> ReadyGate {
    Box::pin(async move {
        match keeper.wait_ready(bound).await {
            Ok(()) => tracing::info!("AWS credentials in hand: ready"),
            Err(problem) => tracing::warn!(
                %problem,
                "ready without AWS credentials: ECR lookups answer unknown until they are found"
            ),
        }
    })
}

pub async fn wait_for_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
