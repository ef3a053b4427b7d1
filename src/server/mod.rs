//! The HTTP faces: the TLS webhook listener and the plain admin listener.
//!
//! The webhook accepts with `TCP_NODELAY` (Nagle plus delayed ACKs stall small responses by
//! ~40 ms), speaks HTTP/1.1 with keep-alive as the API server calls it, and HTTP/2 by ALPN.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

mod read_ahead;
pub mod tls;
pub mod webhook;

use anyhow::Context;

use crate::admission::DecisionLog;
use crate::admission::Policy;
use crate::engine::Engine;
use crate::metrics::{self, Metrics};
use crate::platforms::{ConfigCache, PlatformSources};
use crate::pull_secrets::SecretReader;
use crate::watch::{nodes, Controller, Inventory};
use read_ahead::ReadAhead;
use tls::CertStore;
use webhook::{WebhookService, WebhookState};

/// Time limits of the webhook listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A client that has not finished its TLS handshake by then is dropped.
    pub handshake_timeout: Duration,
    /// A request whose headers have not all arrived by then is dropped (slow clients).
    pub header_read_timeout: Duration,
    /// How long open connections get to finish once draining starts.
    pub drain_timeout: Duration,
    /// Open webhook connections at most; further clients wait in the accept queue.
    pub max_connections: usize,
    /// HTTP/2 streams per connection at most.
    pub max_streams_per_connection: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(25),
            max_connections: 4096,
            max_streams_per_connection: 100,
        }
    }
}

/// Liveness and readiness, shared with the admin listener.
#[derive(Debug, Default)]
pub struct Health {
    /// (ready, stopping): once stopping, never ready again.
    state: Mutex<(bool, bool)>,
}

impl Health {
    /// Ready, unless stopping has begun.
    pub fn set_ready(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.0 = !state.1;
    }
    /// Unready for good: the process is stopping.
    pub fn stop(&self) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = (false, true);
    }
    pub fn is_ready(&self) -> bool {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).0
    }
}

/// What readiness waits for besides the listeners (credentials in hand, or a bounded wait).
pub type ReadyGate = Pin<Box<dyn Future<Output = ()> + Send>>;

/// `/healthz`, `/readyz` (ready once the webhook listener serves and its gate has opened,
/// until stopping), `/metrics` and, with the controller, `/inventory`.
fn admin_router(
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    inventory: Option<Arc<Inventory>>,
) -> Router {
    Router::new()
        .route(
            "/inventory",
            get(move || {
                let inventory = inventory.clone();
                async move {
                    match inventory {
                        Some(i) => (
                            [(header::CONTENT_TYPE, "application/json")],
                            i.published_view().await,
                        )
                            .into_response(),
                        None => (
                            StatusCode::NOT_FOUND,
                            "no inventory: the controller runs with `serve --watch` or `watch`\n",
                        )
                            .into_response(),
                    }
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|State(h): State<Arc<Health>>| async move {
                if h.is_ready() {
                    (StatusCode::OK, "ready\n")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                }
            }),
        )
        .with_state(health)
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
                        metrics.encode(),
                    )
                }
            }),
        )
}

/// Binds `addr`; an IPv6 wildcard falls back to IPv4 on hosts without IPv6.
async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    match TcpListener::bind(addr).await {
        Err(e) if addr.ip().is_unspecified() && addr.is_ipv6() => {
            let v4 = SocketAddr::from(([0, 0, 0, 0], addr.port()));
            tracing::warn!(error = %e, %addr, "IPv6 wildcard unavailable; listening on IPv4 only");
            TcpListener::bind(v4).await
        }
        other => other,
    }
}

/// A running server: its addresses, and the means to stop it.
pub struct Running {
    /// `None` when only the admin listener runs (`watch`).
    pub webhook_addr: Option<SocketAddr>,
    pub metrics_addr: SocketAddr,
    pub health: Arc<Health>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Turns readiness off only: requests are still served.
    pub fn set_unready(&self) {
        self.health.stop();
    }

    /// Turns readiness off and starts draining: no new connections, open requests finish.
    pub fn shutdown(&self) {
        self.health.stop();
        let _ = self.stop.send(true);
    }

    /// Waits until both listeners have drained.
    pub async fn wait(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// What the webhook serves with, besides its engine.
pub struct WebhookConfig {
    /// The TLS webhook listener's address.
    pub listen: SocketAddr,
    /// The admin listener's address (`/healthz`, `/readyz`, `/metrics`).
    pub metrics_listen: SocketAddr,
    pub policy: Policy,
    /// `--timeout`: the whole-decision budget.
    pub timeout: Duration,
    pub certificates: Arc<CertStore>,
    pub limits: Limits,
    pub decision_log: DecisionLog,
    /// Readiness waits for this too, when given.
    pub ready_when: Option<ReadyGate>,
    /// The controller, when it runs in this process (`serve --watch`).
    pub controller: Option<Controller>,
    /// Where admission reads single-arch images' platforms (with the controller's nodes).
    /// The controller's inventory has its own, attached by whoever starts it.
    pub config_platforms: Option<Arc<ConfigCache>>,
    /// The pods' pull secrets, for registries other than ECR's (`--read-pull-secrets`).
    pub pull_secrets: Option<SecretReader>,
    /// Serve `/mutate`, pinning Pods' images to the digests checked (`--pin-digests`).
    pub pin_digests: bool,
}

/// Binds both listeners and serves the webhook on `engine` until [`Running::shutdown`]:
/// the one way the webhook is put together, for `serve`, the tests and the benchmarks.
pub async fn start_webhook(engine: Arc<Engine>, config: WebhookConfig) -> anyhow::Result<Running> {
    let tls = tls::server_config(config.certificates)?;
    let metrics = Metrics::new(
        engine.metrics(),
        config.controller.as_ref().map(|c| &*c.metrics),
    );
    if let Some(controller) = &config.controller {
        // Admission checks the index children of every platform the cluster has.
        nodes::widen_with_cluster(
            &controller.cluster,
            engine.clone(),
            &controller.metrics.task_restarts,
        );
    }
    let state = Arc::new(WebhookState {
        engine,
        metrics: metrics.clone(),
        policy: config.policy,
        timeout: config.timeout,
        decision_log: config.decision_log,
        platforms: config.controller.as_ref().map(|c| PlatformSources {
            cluster: c.cluster.clone(),
            configs: config.config_platforms.clone(),
        }),
        pull_secrets: config.pull_secrets,
        pin_digests: config.pin_digests,
    });
    let webhook = bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let admin = bind(config.metrics_listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.metrics_listen))?;
    let webhook = Some(Webhook {
        listener: webhook,
        app: WebhookService::new(state),
        tls,
        limits: config.limits,
    });
    let inventory = config.controller.map(|c| c.inventory);
    let running = start(webhook, admin, metrics, inventory)?;
    open_when(&running.health, config.ready_when);
    Ok(running)
}

/// The admin listener alone, with the controller's `/inventory` and metrics (`watch`).
pub async fn start_admin(
    engine: &Engine,
    metrics_listen: SocketAddr,
    controller: Controller,
    ready_when: Option<ReadyGate>,
) -> anyhow::Result<Running> {
    let metrics = Metrics::new(engine.metrics(), Some(&*controller.metrics));
    let admin = bind(metrics_listen)
        .await
        .with_context(|| format!("cannot listen on {metrics_listen}"))?;
    let running = start(None, admin, metrics, Some(controller.inventory))?;
    open_when(&running.health, ready_when);
    Ok(running)
}

/// Ready now, or once `gate` opens.
fn open_when(health: &Arc<Health>, gate: Option<ReadyGate>) {
    match gate {
        None => health.set_ready(),
        Some(gate) => {
            let health = health.clone();
            tokio::spawn(async move {
                gate.await;
                health.set_ready();
            });
        }
    }
}

/// The TLS webhook listener and what it serves.
struct Webhook {
    listener: TcpListener,
    app: WebhookService,
    tls: Arc<rustls::ServerConfig>,
    limits: Limits,
}

/// Serves the webhook (when given) over TLS and the admin routes on `admin`.
fn start(
    webhook: Option<Webhook>,
    admin: TcpListener,
    metrics: Arc<Metrics>,
    inventory: Option<Arc<Inventory>>,
) -> io::Result<Running> {
    let webhook_addr = webhook
        .as_ref()
        .map(|w| w.listener.local_addr())
        .transpose()?;
    let metrics_addr = admin.local_addr()?;
    let health = Arc::new(Health::default());
    let (stop, stopped) = watch::channel(false);
    let admin_app = admin_router(health.clone(), metrics, inventory);
    let mut admin_stop = stopped.clone();
    let admin_task = tokio::spawn(async move {
        let serve = axum::serve(admin, admin_app).with_graceful_shutdown(async move {
            let _ = admin_stop.wait_for(|s| *s).await;
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "admin listener failed");
        }
    });
    let mut tasks = vec![admin_task];
    if let Some(w) = webhook {
        tasks.push(tokio::spawn(serve_tls(
            w.listener,
            w.app,
            TlsAcceptor::from(w.tls),
            w.limits,
            wait_true(stopped),
        )));
    }
    Ok(Running {
        webhook_addr,
        metrics_addr,
        health,
        stop,
        tasks,
    })
}

async fn wait_true(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Accepts TLS connections until `shutdown`, then lets open ones finish (bounded).
async fn serve_tls(
    listener: TcpListener,
    app: WebhookService,
    acceptor: TlsAcceptor,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let timer = TokioTimer::new();
    let connections = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        // Accept only with a connection slot free: past the limit, clients queue in the
        // kernel's backlog instead of costing memory here.
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, %peer, "cannot set TCP_NODELAY");
        }
        let acceptor = acceptor.clone();
        let service = app.clone();
        let timer = timer.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // Held for the life of the connection.
            let _permit = permit;
            let tls = match tokio::time::timeout(
                limits.handshake_timeout,
                acceptor.accept(ReadAhead::new(tcp)),
            )
            .await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, %peer, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .keep_alive(true)
                .timer(timer)
                .header_read_timeout(limits.header_read_timeout);
            builder
                .http2()
                .max_concurrent_streams(limits.max_streams_per_connection);
            let conn = builder
                .serve_connection(TokioIo::new(tls), service)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.drain_timeout) => tracing::warn!("drain timed out; closing open connections"),
    }
}
