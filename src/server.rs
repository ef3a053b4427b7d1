//! The HTTP faces: the TLS webhook listener and the plain admin listener.
//!
//! The webhook accepts with `TCP_NODELAY` (Nagle plus delayed ACKs stall small responses by
//! ~40 ms), speaks HTTP/1.1 with keep-alive as the API server calls it, and HTTP/2 by ALPN.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::admission::{self, Policy, Reviewed};
use crate::check::{Engine, Finding};
use crate::coarse_timer::CoarseTimer;
use crate::decision::Mode;
use crate::decision_log::DecisionLog;
use crate::metrics::{self, AdmissionLabels, Metrics};
use crate::workload::WorkloadKind;

/// An UPDATE carries `object` and `oldObject`, each up to the API server's 3 MiB.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Reviews decided at once; more wait for a slot, which bounds the memory of bodies held.
pub const MAX_IN_FLIGHT: usize = 512;
/// The API server sends `?timeout=`; answering this much before it leaves time for the reply.
const TIMEOUT_MARGIN: Duration = Duration::from_millis(500);
/// The smallest budget a request is given, however short its timeout.
const MIN_BUDGET: Duration = Duration::from_millis(100);
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

/// Shared by every webhook request.
pub struct WebhookState {
    pub engine: Arc<Engine>,
    pub policy: Policy,
    /// `--timeout`.
    pub timeout: Duration,
    pub metrics: Arc<Metrics>,
    pub decision_log: DecisionLog,
}

/// The webhook's routes: `/validate` in the configured mode, `/validate/<mode>` in that one.
pub fn webhook_router(state: Arc<WebhookState>) -> Router {
    Router::new()
        .route("/validate", post(validate_default))
        .route("/validate/{mode}", post(validate_with_mode))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            MAX_IN_FLIGHT,
        ))
        .with_state(state)
}

#[derive(Debug, serde::Deserialize)]
struct Params {
    timeout: Option<String>,
}

async fn validate_default(
    State(state): State<Arc<WebhookState>>,
    Query(params): Query<Params>,
    body: Bytes,
) -> Response {
    let mode = state.policy.mode;
    handle(&state, mode, params.timeout.as_deref(), &body).await
}

async fn validate_with_mode(
    State(state): State<Arc<WebhookState>>,
    Path(mode): Path<String>,
    Query(params): Query<Params>,
    body: Bytes,
) -> Response {
    match mode.parse::<Mode>() {
        Ok(mode) => handle(&state, mode, params.timeout.as_deref(), &body).await,
        Err(e) => (StatusCode::NOT_FOUND, e).into_response(),
    }
}

/// The decision budget: `--timeout`, or the API server's timeout less a margin if smaller.
pub fn budget(flag: Duration, param: Option<&str>) -> Duration {
    let from_param = param
        .and_then(|p| humantime::parse_duration(p.trim()).ok())
        .map(|t| t.saturating_sub(TIMEOUT_MARGIN));
    from_param.map_or(flag, |p| p.min(flag)).max(MIN_BUDGET)
}

async fn handle(state: &WebhookState, mode: Mode, timeout: Option<&str>, body: &[u8]) -> Response {
    let started = Instant::now();
    let policy = Policy {
        mode,
        ..state.policy
    };
    match admission::review(&state.engine, policy, body, budget(state.timeout, timeout)).await {
        Ok(reviewed) => {
            let elapsed = started.elapsed();
            record(&state.metrics, &reviewed, elapsed);
            state.decision_log.record(&reviewed, elapsed);
            match serde_json::to_vec(&reviewed.review) {
                Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
                Err(e) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot encode response: {e}"),
                )
                    .into_response(),
            }
        }
        Err(e) => {
            let labels = AdmissionLabels {
                kind: "other",
                operation: "other",
                decision: "error",
            };
            state
                .metrics
                .admission_requests
                .get_or_create(&labels)
                .inc();
            state
                .metrics
                .admission_duration
                .observe(started.elapsed().as_secs_f64());
            tracing::info!(error = %e, "rejected malformed review");
            (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response()
        }
    }
}

fn record(metrics: &Metrics, r: &Reviewed, elapsed: Duration) {
    let kind =
        WorkloadKind::from_group_kind(&r.group, &r.kind).map_or("other", WorkloadKind::as_str);
    let labels = AdmissionLabels {
        kind,
        operation: metrics::operation_label(&r.operation),
        decision: r.disposition().as_str(),
    };
    metrics.admission_requests.get_or_create(&labels).inc();
    metrics.admission_duration.observe(elapsed.as_secs_f64());
    for report in &r.reports {
        let missing = match &report.finding {
            Finding::Checked(platforms) => platforms.iter().map(|p| p.missing.len()).sum(),
            _ => 0,
        };
        metrics.image_checked(report.outcome(), missing);
    }
}

/// Liveness and readiness, shared with the admin listener.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
}

impl Health {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

/// `/healthz`, `/readyz` (ready only while the webhook listener serves) and `/metrics`.
pub fn admin_router(health: Arc<Health>, metrics: Arc<Metrics>) -> Router {
    Router::new()
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
pub async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
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
    pub webhook_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub health: Arc<Health>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Turns readiness off only: requests are still served.
    pub fn set_unready(&self) {
        self.health.set_ready(false);
    }

    /// Turns readiness off and starts draining: no new connections, open requests finish.
    pub fn shutdown(&self) {
        self.health.set_ready(false);
        let _ = self.stop.send(true);
    }

    /// Waits until both listeners have drained.
    pub async fn wait(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Serves the webhook over TLS on `webhook` and the admin routes on `admin`.
pub fn start(
    webhook: TcpListener,
    admin: TcpListener,
    app: Router,
    tls: Arc<rustls::ServerConfig>,
    limits: Limits,
    metrics: Arc<Metrics>,
) -> io::Result<Running> {
    let webhook_addr = webhook.local_addr()?;
    let metrics_addr = admin.local_addr()?;
    let health = Arc::new(Health::default());
    let (stop, stopped) = watch::channel(false);
    let admin_app = admin_router(health.clone(), metrics);
    let mut admin_stop = stopped.clone();
    let admin_task = tokio::spawn(async move {
        let serve = axum::serve(admin, admin_app).with_graceful_shutdown(async move {
            let _ = admin_stop.wait_for(|s| *s).await;
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "admin listener failed");
        }
    });
    health.set_ready(true);
    let webhook_task = tokio::spawn(serve_tls(
        webhook,
        app,
        TlsAcceptor::from(tls),
        limits,
        wait_true(stopped),
    ));
    Ok(Running {
        webhook_addr,
        metrics_addr,
        health,
        stop,
        tasks: vec![webhook_task, admin_task],
    })
}

async fn wait_true(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Accepts TLS connections until `shutdown`, then lets open ones finish (bounded).
async fn serve_tls(
    listener: TcpListener,
    app: Router,
    acceptor: TlsAcceptor,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .keep_alive(true)
        .timer(CoarseTimer::start())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .max_concurrent_streams(limits.max_streams_per_connection);
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
        let service = TowerToHyperService::new(app.clone());
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // Held for the life of the connection.
            let _permit = permit;
            let tls =
                match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, %peer, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
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
