//! `ecr-preflight serve`: wire configuration, engine, TLS and listeners; run until SIGTERM.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};

use crate::admission::Policy;
use crate::check::{Engine, EngineSettings};
use crate::config::{EngineArgs, ServeArgs, TlsSource};
use crate::decision_log::DecisionLog;
use crate::metrics::Metrics;
use crate::registry::ecr::{EcrApi, EcrSettings};
use crate::server;
use crate::tls::{self, CertStore};
use crate::webhook::{self, WebhookState};

pub async fn run(args: ServeArgs, decision_log: DecisionLog) -> anyhow::Result<ExitCode> {
    let tls_source = args.tls_source().map_err(|e| anyhow!(e))?;
    args.engine.validate().map_err(|e| anyhow!(e))?;
    let certified = match &tls_source {
        TlsSource::Files { cert, key } => tls::load_files(cert, key)?,
        TlsSource::SelfSigned => {
            tracing::warn!("serving a self-signed certificate for localhost: development only");
            let (cert, key) = tls::self_signed_pem()?;
            tls::certified_key(
                cert.as_bytes(),
                key.as_bytes(),
                "self-signed".as_ref(),
                "self-signed".as_ref(),
            )?
        }
    };
    let store = CertStore::new(certified);
    if let TlsSource::Files { cert, key } = &tls_source {
        tls::spawn_reloader(
            store.clone(),
            cert.clone(),
            key.clone(),
            args.tls_reload_interval,
        );
    }
    let tls_config = tls::server_config(store)?;
    let engine = Arc::new(build_engine(&args.engine).await);
    let metrics = Metrics::new(engine.metrics());
    let state = Arc::new(WebhookState {
        engine,
        metrics: metrics.clone(),
        policy: Policy {
            mode: args.mode,
            on_error: args.on_error,
            owned_objects: args.owned_objects,
        },
        timeout: args.engine.timeout,
        decision_log,
    });
    let webhook = server::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let admin = server::bind(args.metrics_listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.metrics_listen))?;
    let running = server::start(
        webhook,
        admin,
        webhook::webhook_service(state),
        tls_config,
        server::Limits {
            // No request outlives its budget, so draining needs no longer; idle
            // keep-alive connections are closed when it ends.
            drain_timeout: args.engine.timeout + Duration::from_secs(1),
            ..server::Limits::default()
        },
        metrics,
    )?;
    tracing::info!(
        webhook = %running.webhook_addr,
        metrics = %running.metrics_addr,
        mode = args.mode.as_str(),
        timeout = ?args.engine.timeout,
        "serving"
    );
    wait_for_signal().await;
    running.set_unready();
    tracing::info!(delay = ?args.shutdown_delay, "shutting down: unready, still serving until the delay ends");
    tokio::select! {
        () = tokio::time::sleep(args.shutdown_delay) => {}
        () = wait_for_signal() => tracing::info!("second signal: draining now"),
    }
    tracing::info!("draining open requests");
    running.shutdown();
    running.wait().await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// The engine over the AWS SDK, with SDK timeouts derived from the decision budget.
pub async fn build_engine(args: &EngineArgs) -> Engine {
    let settings = EcrSettings {
        endpoint_url: args.ecr_endpoint_url.clone(),
        operation_timeout: args.timeout,
        connect_timeout: (args.timeout / 3).max(Duration::from_millis(100)),
        max_attempts: 1,
    };
    let registry = EcrApi::from_default_chain(settings).await;
    Engine::new(
        Arc::new(registry),
        EngineSettings {
            platforms: args.platforms.clone(),
            pull_through_prefixes: args.pull_through_prefixes.clone(),
            cache: args.cache_settings(),
            batch_window: args.batch_window,
        },
    )
}

async fn wait_for_signal() {
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
