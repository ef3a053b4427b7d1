//! A fault-injecting HTTP proxy between the webhook and the ECR emulator: it forwards
//! requests to the emulator, or answers as a failing ECR would, and records when each call
//! came and went (for measuring the webhook's own time around its ECR calls).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Every answer this late.
    Latency(Duration),
    /// HTTP 500 from the service.
    ServerError,
    /// `ThrottlingException` for the next N calls, then normal answers.
    Throttle(usize),
    /// `AccessDeniedException` naming the action.
    AccessDenied,
    /// A 200 whose JSON is cut short.
    MalformedJson,
    /// The connection is reset in the middle of the response body.
    ResetMidResponse,
}

struct Shared {
    fault: Mutex<Fault>,
    upstream: String,
    client: reqwest::Client,
    calls: AtomicUsize,
    /// When each call arrived and when its answer was handed back, in arrival order.
    spans: Mutex<Vec<(Instant, Instant)>>,
    /// Calls the proxy answers itself, as ECR would (calls the emulator lacks), by action.
    answers: Mutex<std::collections::HashMap<String, String>>,
    /// The action of each call, in arrival order.
    actions: Mutex<Vec<String>>,
}

#[derive(Clone)]
pub struct FaultProxy {
    pub url: String,
    shared: Arc<Shared>,
}

impl FaultProxy {
    pub async fn start(upstream: &str) -> Self {
        let shared = Arc::new(Shared {
            fault: Mutex::new(Fault::None),
            upstream: upstream.to_owned(),
            client: reqwest::Client::new(),
            calls: AtomicUsize::new(0),
            spans: Mutex::new(Vec::new()),
            answers: Mutex::default(),
            actions: Mutex::default(),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let addr = super::serve_loopback(app).await;
        FaultProxy {
            url: format!("http://{addr}"),
            shared,
        }
    }

    pub fn set(&self, fault: Fault) {
        *self.shared.fault.lock().expect("lock") = fault;
    }

    /// ECR calls that reached the proxy.
    pub fn calls(&self) -> usize {
        self.shared.calls.load(Ordering::SeqCst)
    }

    /// Answers every call of `action` (`DescribePullThroughCacheRules`) with `body`, as ECR
    /// would, instead of forwarding it.
    pub fn answer(&self, action: &str, body: serde_json::Value) {
        self.shared
            .answers
            .lock()
            .expect("lock")
            .insert(action.to_owned(), body.to_string());
    }

    /// How many calls of `action` reached the proxy.
    pub fn calls_of(&self, action: &str) -> usize {
        let actions = self.shared.actions.lock().expect("lock");
        actions.iter().filter(|a| *a == action).count()
    }

    /// The spans of the calls since the last time this was asked, taken out.
    pub fn take_spans(&self) -> Vec<(Instant, Instant)> {
        std::mem::take(&mut *self.shared.spans.lock().expect("lock"))
    }
}

fn aws_error(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = serde_json::json!({"__type": kind, "message": message}).to_string();
    (
        status,
        [
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amzn-errortype", kind),
        ],
        body,
    )
        .into_response()
}

async fn handle(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let arrived = Instant::now();
    let response = answer(&shared, headers, body).await;
    shared
        .spans
        .lock()
        .expect("lock")
        .push((arrived, Instant::now()));
    response
}

async fn answer(shared: &Shared, headers: HeaderMap, body: Bytes) -> Response {
    shared.calls.fetch_add(1, Ordering::SeqCst);
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let action = target.rsplit('.').next().unwrap_or_default().to_owned();
    shared.actions.lock().expect("lock").push(action.clone());
    let answered = shared.answers.lock().expect("lock").get(&action).cloned();
    if let Some(body) = answered {
        return (
            StatusCode::OK,
            [("content-type", "application/x-amz-json-1.1")],
            body,
        )
            .into_response();
    }
    let fault = {
        let mut fault = shared.fault.lock().expect("lock");
        let current = *fault;
        if let Fault::Throttle(n) = current {
            *fault = if n > 1 {
                Fault::Throttle(n - 1)
            } else {
                Fault::None
            };
        }
        current
    };
    match fault {
        Fault::ServerError => {
            return aws_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ServerException",
                "internal error",
            )
        }
        Fault::Throttle(_) => {
            return aws_error(
                StatusCode::BAD_REQUEST,
                "ThrottlingException",
                "Rate exceeded",
            )
        }
        Fault::AccessDenied => {
            let message = format!("User: arn:aws:sts::123456789012:assumed-role/ecr-preflight/x is not authorized to perform: ecr:{action}");
            return aws_error(StatusCode::BAD_REQUEST, "AccessDeniedException", &message);
        }
        Fault::MalformedJson => {
            return (
                StatusCode::OK,
                [("content-type", "application/x-amz-json-1.1")],
                "{\"images\": [{\"imageId\"",
            )
                .into_response()
        }
        Fault::Latency(d) => tokio::time::sleep(d).await,
        Fault::None | Fault::ResetMidResponse => {}
    }
    let mut request = shared.client.post(&shared.upstream).body(body);
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let upstream = match request.send().await {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status =
        StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = upstream
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/x-amz-json-1.1")
        .to_owned();
    let bytes = upstream.bytes().await.unwrap_or_default();
    if fault == Fault::ResetMidResponse {
        let half = bytes.slice(..bytes.len() / 2);
        let stream = futures::stream::iter(vec![
            Ok::<Bytes, std::io::Error>(half),
            Err(std::io::Error::other("reset")),
        ]);
        return (
            status,
            [("content-type", content_type)],
            Body::from_stream(stream),
        )
            .into_response();
    }
    (status, [("content-type", content_type)], bytes).into_response()
}
