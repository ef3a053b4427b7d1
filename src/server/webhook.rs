//! The webhook's HTTP face: `POST /validate` in the configured mode and
//! `POST /validate/<mode>` in that one, as a plain hyper service.
//!
//! A router and extractors cost the warm path about a microsecond a request (route
//! matching, a boxed service clone, query decoding) for two fixed paths and one query
//! parameter; here they are a string match. Bounds: bodies over [`MAX_BODY_BYTES`] get
//! 413 before they are read in full, and at most [`MAX_IN_FLIGHT`] reviews are read and
//! decided at once (the rest wait for a slot), which bounds the memory of bodies held.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::Semaphore;

use crate::admission::DecisionLog;
use crate::admission::{self, Policy, Reviewed};
use crate::decision::Mode;
use crate::engine::Engine;
use crate::findings::Finding;
use crate::metrics::{self, AdmissionLabels, Metrics};
use crate::platforms::PlatformSources;
use crate::pull_secrets::SecretReader;
use crate::workload::WorkloadKind;

/// An UPDATE carries `object` and `oldObject`, each up to the API server's 3 MiB.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Reviews decided at once; more wait for a slot, which bounds the memory of bodies held.
pub const MAX_IN_FLIGHT: usize = 512;
/// The API server sends `?timeout=`; answering this much before it leaves time for the reply.
const TIMEOUT_MARGIN: Duration = Duration::from_millis(500);
/// The smallest budget a request is given, however short its timeout.
const MIN_BUDGET: Duration = Duration::from_millis(100);

/// Shared by every webhook request.
pub struct WebhookState {
    pub engine: Arc<Engine>,
    pub policy: Policy,
    /// `--timeout`.
    pub timeout: Duration,
    pub metrics: Arc<Metrics>,
    pub decision_log: DecisionLog,
    /// The cluster's nodes and NodePools (when the controller runs in this process) and the
    /// config blobs' platforms.
    pub platforms: Option<PlatformSources>,
    /// The pods' pull secrets, read through the API server (`--read-pull-secrets`).
    pub pull_secrets: Option<SecretReader>,
    /// `/mutate` pins Pods' images to the digests checked (`--pin-digests`).
    pub pin_digests: bool,
}

/// The webhook as a hyper service; cheap to clone per connection.
#[derive(Clone)]
pub struct WebhookService {
    state: Arc<WebhookState>,
    in_flight: Arc<Semaphore>,
}

impl WebhookService {
    pub fn new(state: Arc<WebhookState>) -> Self {
        WebhookService {
            state,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }
}

type Answer = Response<Full<Bytes>>;

impl hyper::service::Service<Request<Incoming>> for WebhookService {
    type Response = Answer;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Answer, Infallible>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.serve(request).await) })
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Answer {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn json(body: Vec<u8>) -> Answer {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

impl WebhookService {
    async fn serve(self, request: Request<Incoming>) -> Answer {
        let route = match request.uri().path() {
            "/validate" => Route::Validate(self.state.policy.mode),
            "/mutate" if self.state.pin_digests => Route::Mutate,
            "/mutate" => {
                return text(
                    StatusCode::NOT_FOUND,
                    "pinning is off: serve --pin-digests turns /mutate on\n",
                )
            }
            path => match path.strip_prefix("/validate/") {
                Some(name) => match name.parse::<Mode>() {
                    Ok(mode) => Route::Validate(mode),
                    Err(e) => return text(StatusCode::NOT_FOUND, e),
                },
                None => return text(StatusCode::NOT_FOUND, "not found\n"),
            },
        };
        if request.method() != Method::POST {
            let mut answer = text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n");
            answer
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return answer;
        }
        let timeout = request
            .uri()
            .query()
            .and_then(timeout_param)
            .map(str::to_owned);
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
            return too_large();
        }
        // Held until the answer is built; the semaphore is never closed.
        let Ok(_slot) = self.in_flight.acquire().await else {
            return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
        };
        let body = match Limited::new(request.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
        {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => return too_large(),
            Err(e) => return text(StatusCode::BAD_REQUEST, format!("cannot read body: {e}\n")),
        };
        match route {
            Route::Validate(mode) => handle(&self.state, mode, timeout.as_deref(), &body).await,
            Route::Mutate => mutate(&self.state, timeout.as_deref(), &body).await,
        }
    }
}

/// What a path asks for.
enum Route {
    Validate(Mode),
    Mutate,
}

/// `/mutate`: the Pod's images pinned to the digests checked; never a denial.
async fn mutate(state: &WebhookState, timeout: Option<&str>, body: &[u8]) -> Answer {
    let sources = admission::Sources {
        platforms: None,
        pull_secrets: state.pull_secrets.as_ref(),
    };
    let budget = budget(state.timeout, timeout);
    match admission::pin(&state.engine, sources, body, budget).await {
        Ok(pinned) => {
            for pin in &pinned.pins {
                state
                    .metrics
                    .images_pinned
                    .get_or_create(&metrics::ResultLabels {
                        result: pin.result.as_str(),
                    })
                    .inc();
            }
            let done: Vec<String> = pinned
                .pins
                .iter()
                .filter_map(|p| Some(format!("{}={}", p.container, p.pinned.as_ref()?)))
                .collect();
            tracing::info!(
                uid = %pinned.uid,
                namespace = %pinned.namespace,
                name = %pinned.name,
                pinned = ?done,
                images = pinned.pins.len(),
                "admission pin"
            );
            json(pinned.json)
        }
        Err(e) => {
            tracing::info!(error = %e, "rejected malformed review");
            text(StatusCode::BAD_REQUEST, format!("{e}\n"))
        }
    }
}

fn too_large() -> Answer {
    text(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body over {MAX_BODY_BYTES} bytes\n"),
    )
}

/// The `timeout` query parameter as the API server sends it (`timeout=10s`).
fn timeout_param(query: &str) -> Option<&str> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("timeout="))
}

/// The decision budget: `--timeout`, or the API server's timeout less a margin if smaller.
pub fn budget(flag: Duration, param: Option<&str>) -> Duration {
    let from_param = param
        .and_then(|p| humantime::parse_duration(p.trim()).ok())
        .map(|t| t.saturating_sub(TIMEOUT_MARGIN));
    from_param.map_or(flag, |p| p.min(flag)).max(MIN_BUDGET)
}

async fn handle(state: &WebhookState, mode: Mode, timeout: Option<&str>, body: &[u8]) -> Answer {
    let started = Instant::now();
    let policy = Policy {
        mode,
        ..state.policy
    };
    let sources = admission::Sources {
        platforms: state.platforms.as_ref(),
        pull_secrets: state.pull_secrets.as_ref(),
    };
    let budget = budget(state.timeout, timeout);
    match admission::evaluate(&state.engine, policy, sources, body, budget).await {
        Ok(reviewed) => {
            let elapsed = started.elapsed();
            record(&state.metrics, &reviewed, elapsed);
            state.decision_log.record(&reviewed, elapsed);
            match reviewed.to_json() {
                Ok(body) => json(body),
                Err(e) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot encode response: {e}\n"),
                ),
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
            text(StatusCode::BAD_REQUEST, format!("{e}\n"))
        }
    }
}

fn record(metrics: &Metrics, r: &Reviewed, elapsed: Duration) {
    let kind = r.workload.map_or("other", WorkloadKind::as_str);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeout_parameter_is_found_among_others() {
        assert_eq!(timeout_param("timeout=10s"), Some("10s"));
        assert_eq!(timeout_param("a=1&timeout=3s&b=2"), Some("3s"));
        assert_eq!(timeout_param("xtimeout=3s"), None);
        assert_eq!(timeout_param(""), None);
    }

    #[test]
    fn the_budget_is_the_smaller_of_flag_and_parameter_less_a_margin() {
        let flag = Duration::from_secs(3);
        assert_eq!(budget(flag, None), flag);
        assert_eq!(budget(flag, Some("10s")), flag);
        assert_eq!(budget(flag, Some("2s")), Duration::from_millis(1500));
        assert_eq!(budget(flag, Some("100ms")), MIN_BUDGET);
        assert_eq!(budget(flag, Some("nonsense")), flag);
    }
}
