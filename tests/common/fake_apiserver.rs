//! A fake Kubernetes API server speaking the wire protocol the controller's kube client,
//! watchers, lease manager and event recorder use, over plain HTTP (as `kubectl proxy`
//! serves):
//! - LIST with `limit`/`continue` pages and the list's `resourceVersion`;
//! - WATCH (`?watch=true&resourceVersion=N`) as a chunked stream of JSON watch events,
//!   with BOOKMARK events when asked for, `timeoutSeconds`, and an ERROR event carrying a
//!   410 `Expired` Status when N is older than the compacted history;
//! - GET, POST (409 AlreadyExists), PUT (409 Conflict on a stale resourceVersion), PATCH
//!   (merge and strategic merge; server-side apply, with a 409 Conflict when another field
//!   manager owns a Lease's holderIdentity), DELETE.
//!
//! Tests drive it: put and delete objects (each a watch event), drop every open watch,
//! compact the history, read what the controller wrote (Events, the Lease) and the log of
//! requests.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Map, Value};
use tokio::sync::{broadcast, mpsc};

/// One change, as a watch delivers it.
#[derive(Debug, Clone)]
struct Change {
    rv: u64,
    resource: Resource,
    namespace: String,
    kind: &'static str,
    object: Value,
}

/// `api/v1` + `pods`, `apis/apps/v1` + `deployments`, …
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Resource {
    pub prefix: String,
    pub plural: String,
}

impl Resource {
    pub fn new(prefix: &str, plural: &str) -> Self {
        Resource {
            prefix: prefix.to_owned(),
            plural: plural.to_owned(),
        }
    }
}

#[derive(Default)]
struct Data {
    rv: u64,
    /// (resource, namespace, name) -> object.
    objects: BTreeMap<(Resource, String, String), Value>,
    /// Field manager owning a Lease's holderIdentity, by (namespace, name).
    lease_holders: HashMap<(String, String), String>,
    history: Vec<Change>,
    /// Watches from a resourceVersion below this get 410 Gone.
    compacted: u64,
    /// New watches are answered 503 (the API server is restarting, say).
    refuse_watches: bool,
    /// Every request is answered 503 (the API server is down behind its load balancer).
    unavailable: bool,
    /// Resources (plurals) the API server does not serve (a CRD not installed): 404.
    absent: std::collections::HashSet<String>,
    requests: Vec<String>,
    /// How long an Event POST takes to be answered.
    event_delay: Duration,
    /// Event POSTs being answered now, and the most at once.
    events_in_flight: usize,
    most_events_in_flight: usize,
    /// When each Event POST arrived.
    event_posts: Vec<std::time::Instant>,
}

struct Shared {
    data: Mutex<Data>,
    changes: broadcast::Sender<Change>,
    /// Bumped to end every open watch.
    drops: broadcast::Sender<()>,
    bookmark_every: Duration,
}

pub struct FakeApiServer {
    pub url: String,
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn kind_of(plural: &str) -> &'static str {
    match plural {
        "pods" => "Pod",
        "deployments" => "Deployment",
        "statefulsets" => "StatefulSet",
        "daemonsets" => "DaemonSet",
        "replicasets" => "ReplicaSet",
        "jobs" => "Job",
        "cronjobs" => "CronJob",
        "replicationcontrollers" => "ReplicationController",
        "leases" => "Lease",
        "events" => "Event",
        "namespaces" => "Namespace",
        "nodes" => "Node",
        "nodepools" => "NodePool",
        "secrets" => "Secret",
        _ => "Unknown",
    }
}

fn api_version_of(prefix: &str) -> String {
    prefix
        .strip_prefix("apis/")
        .or_else(|| prefix.strip_prefix("api/"))
        .unwrap_or(prefix)
        .to_owned()
}

/// The resource of a kind, for tests putting objects.
pub fn resource_of(kind: &str) -> Resource {
    let (prefix, plural) = match kind {
        "Pod" => ("api/v1", "pods"),
        "ReplicationController" => ("api/v1", "replicationcontrollers"),
        "Deployment" => ("apis/apps/v1", "deployments"),
        "StatefulSet" => ("apis/apps/v1", "statefulsets"),
        "DaemonSet" => ("apis/apps/v1", "daemonsets"),
        "ReplicaSet" => ("apis/apps/v1", "replicasets"),
        "Job" => ("apis/batch/v1", "jobs"),
        "CronJob" => ("apis/batch/v1", "cronjobs"),
        "Lease" => ("apis/coordination.k8s.io/v1", "leases"),
        "Event" => ("apis/events.k8s.io/v1", "events"),
        "Node" => ("api/v1", "nodes"),
        "NodePool" => ("apis/karpenter.sh/v1", "nodepools"),
        "Secret" => ("api/v1", "secrets"),
        other => panic!("no resource for {other}"),
    };
    Resource::new(prefix, plural)
}

impl FakeApiServer {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        Self::start_on(listener).await
    }

    /// Serves on `listener` (for an API server that comes up late: a socket bound
    /// beforehand, see `common::Reserved`).
    pub async fn start_on(listener: tokio::net::TcpListener) -> Self {
        let shared = Arc::new(Shared {
            data: Mutex::new(Data {
                rv: 100,
                ..Data::default()
            }),
            changes: broadcast::channel(4096).0,
            drops: broadcast::channel(16).0,
            bookmark_every: Duration::from_millis(300),
        });
        let addr = listener.local_addr().expect("addr");
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeApiServer {
            url: format!("http://{addr}"),
            addr,
            shared,
            task,
        }
    }

    /// A kube client of the standard kind, configured for this server.
    pub fn client(&self) -> kube::Client {
        kube::Client::try_from(self.config()).expect("client")
    }

    /// The configuration naming this server.
    pub fn config(&self) -> kube::Config {
        kube::Config::new(self.url.parse().expect("url"))
    }

    /// The client the controller uses in production, for this server.
    pub fn controller_client(&self) -> kube::Client {
        ecr_preflight::watch::controller_client(self.config()).expect("client")
    }

    /// A kubeconfig file naming this server, for processes.
    pub fn kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\ncurrent-context: fake\nusers:\n- name: fake\n  user: {{}}\n",
            self.url
        );
        std::fs::write(&path, text).expect("kubeconfig");
        path
    }

    /// Creates or replaces `object` (its kind, namespace and name from itself): a watch
    /// event of type ADDED or MODIFIED.
    pub fn put(&self, mut object: Value) -> Value {
        let kind = object["kind"].as_str().expect("kind").to_owned();
        let resource = resource_of(&kind);
        // Cluster-scoped objects (Nodes, NodePools) have none.
        let ns = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let name = object["metadata"]["name"]
            .as_str()
            .expect("name")
            .to_owned();
        let mut data = self.shared.data.lock().expect("lock");
        let existed = data
            .objects
            .contains_key(&(resource.clone(), ns.clone(), name.clone()));
        stamp(&mut object, &mut data, &name);
        let event = if existed { "MODIFIED" } else { "ADDED" };
        self.shared
            .store(&mut data, resource, ns, name, object.clone(), event);
        object
    }

    pub fn delete(&self, kind: &str, namespace: &str, name: &str) {
        let mut data = self.shared.data.lock().expect("lock");
        self.shared
            .remove(&mut data, resource_of(kind), namespace, name);
    }

    /// Every object of `kind`.
    pub fn objects(&self, kind: &str) -> Vec<Value> {
        let resource = resource_of(kind);
        let data = self.shared.data.lock().expect("lock");
        data.objects
            .iter()
            .filter(|((r, _, _), _)| *r == resource)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Ends every open watch (as a dropped connection would).
    pub fn drop_watches(&self) {
        let _ = self.shared.drops.send(());
    }

    /// While set, new watches are answered 503 Service Unavailable.
    pub fn refuse_watches(&self, refuse: bool) {
        self.shared.data.lock().expect("lock").refuse_watches = refuse;
    }

    /// While set, every request is answered 503 Service Unavailable, and open watches end
    /// (an API server outage behind its load balancer).
    pub fn unavailable(&self, down: bool) {
        self.shared.data.lock().expect("lock").unavailable = down;
        if down {
            self.drop_watches();
        }
    }

    /// Serves `plural` (`false`: answers 404 for it, as for a CRD not installed).
    pub fn serve_resource(&self, plural: &str, served: bool) {
        let mut data = self.shared.data.lock().expect("lock");
        if served {
            data.absent.remove(plural);
        } else {
            data.absent.insert(plural.to_owned());
        }
    }

    /// Forgets the history: a watch resuming from an older resourceVersion gets 410 Gone.
    pub fn compact(&self) {
        let mut data = self.shared.data.lock().expect("lock");
        data.compacted = data.rv + 1;
        data.history.clear();
    }

    /// Event POSTs are answered after `delay` (a busy API server).
    pub fn slow_events(&self, delay: Duration) {
        self.shared.data.lock().expect("lock").event_delay = delay;
    }

    /// When each Event POST arrived, and the most answered at once.
    pub fn event_posts(&self) -> (Vec<std::time::Instant>, usize) {
        let data = self.shared.data.lock().expect("lock");
        (data.event_posts.clone(), data.most_events_in_flight)
    }

    /// `METHOD path?query` of every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.shared.data.lock().expect("lock").requests.clone()
    }
}

/// Sets resourceVersion, uid and creationTimestamp as the API server does.
fn stamp(object: &mut Value, data: &mut Data, name: &str) {
    data.rv += 1;
    let meta = object["metadata"].as_object_mut().expect("metadata");
    meta.insert("resourceVersion".into(), json!(data.rv.to_string()));
    meta.entry("uid")
        .or_insert_with(|| json!(format!("uid-{name}-{}", data.rv)));
    meta.entry("creationTimestamp")
        .or_insert_with(|| json!("2026-11-30T00:00:00Z"));
}

impl Shared {
    fn store(
        &self,
        data: &mut Data,
        resource: Resource,
        ns: String,
        name: String,
        object: Value,
        event: &str,
    ) {
        data.objects
            .insert((resource.clone(), ns.clone(), name), object.clone());
        self.record(data, resource, ns, object, event);
    }

    fn remove(&self, data: &mut Data, resource: Resource, ns: &str, name: &str) -> Option<Value> {
        let mut object =
            data.objects
                .remove(&(resource.clone(), ns.to_owned(), name.to_owned()))?;
        data.rv += 1;
        object["metadata"]["resourceVersion"] = json!(data.rv.to_string());
        self.record(data, resource, ns.to_owned(), object.clone(), "DELETED");
        Some(object)
    }

    fn record(
        &self,
        data: &mut Data,
        resource: Resource,
        namespace: String,
        object: Value,
        event: &str,
    ) {
        let kind = kind_of(&resource.plural);
        let change = Change {
            rv: data.rv,
            resource,
            namespace,
            kind,
            object: json!({"type": event, "object": object}),
        };
        data.history.push(change.clone());
        let _ = self.changes.send(change);
    }
}

/// The parts of a request path.
struct Target {
    resource: Resource,
    namespace: Option<String>,
    name: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (prefix, rest) = match *parts.first()? {
        "api" => (parts.get(..2)?.join("/"), parts.get(2..)?),
        "apis" => (parts.get(..3)?.join("/"), parts.get(3..)?),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
        _ => (None, rest),
    };
    let (plural, name) = match rest {
        [plural] => (*plural, None),
        [plural, name] => (*plural, Some((*name).to_owned())),
        _ => return None,
    };
    Some(Target {
        resource: Resource::new(&prefix, plural),
        namespace,
        name,
    })
}

fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    });
    (
        StatusCode::from_u16(code).expect("code"),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// An Event POST: counted while it is answered, after the configured delay.
async fn create_event(shared: &Shared, target: &Target, body: &[u8]) -> Response {
    let delay = {
        let mut data = shared.data.lock().expect("lock");
        data.event_posts.push(std::time::Instant::now());
        data.events_in_flight += 1;
        data.most_events_in_flight = data.most_events_in_flight.max(data.events_in_flight);
        data.event_delay
    };
    tokio::time::sleep(delay).await;
    let response = create(shared, target, body);
    shared.data.lock().expect("lock").events_in_flight -= 1;
    response
}

fn json_response(code: StatusCode, v: &Value) -> Response {
    (code, [("content-type", "application/json")], v.to_string()).into_response()
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let method = request.method().clone();
    let uri = request.uri().clone();
    let headers = request.headers().clone();
    let query: HashMap<String, String> = uri.query().map(url_pairs).unwrap_or_default();
    shared
        .data
        .lock()
        .expect("lock")
        .requests
        .push(format!("{method} {uri}"));
    if shared.data.lock().expect("lock").unavailable {
        return status(
            503,
            "ServiceUnavailable",
            "the API server is down for the test",
        );
    }
    let Some(target) = parse_path(uri.path()) else {
        return status(404, "NotFound", &format!("no route {}", uri.path()));
    };
    if shared
        .data
        .lock()
        .expect("lock")
        .absent
        .contains(&target.resource.plural)
    {
        return status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
    }
    let body = axum::body::to_bytes(request.into_body(), 8 << 20)
        .await
        .unwrap_or_default();
    match (&method, &target.name) {
        (&Method::GET, None) if is_true(query.get("watch")) => watch(&shared, &target, &query),
        (&Method::GET, None) => list(&shared, &target, &query),
        (&Method::GET, Some(name)) => get(&shared, &target, name),
        (&Method::POST, None) if target.resource.plural == "events" => {
            create_event(&shared, &target, &body).await
        }
        (&Method::POST, None) => create(&shared, &target, &body),
        (&Method::PUT, Some(name)) => replace(&shared, &target, name, &body),
        (&Method::PATCH, Some(name)) => patch(&shared, &target, name, &headers, &query, &body),
        (&Method::DELETE, Some(name)) => {
            let ns = target.namespace.clone().unwrap_or_default();
            let mut data = shared.data.lock().expect("lock");
            match shared.remove(&mut data, target.resource.clone(), &ns, name) {
                Some(o) => json_response(StatusCode::OK, &o),
                None => status(404, "NotFound", "not found"),
            }
        }
        _ => status(405, "MethodNotAllowed", "method not allowed"),
    }
}

fn url_pairs(q: &str) -> HashMap<String, String> {
    q.split('&')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_owned(), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = s
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(decoded)) => {
                out.push(decoded);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_true(v: Option<&String>) -> bool {
    matches!(v.map(String::as_str), Some("true" | "1"))
}

fn matches(target: &Target, resource: &Resource, ns: &str) -> bool {
    *resource == target.resource && target.namespace.as_deref().is_none_or(|t| t == ns)
}

fn list(shared: &Shared, target: &Target, query: &HashMap<String, String>) -> Response {
    let data = shared.data.lock().expect("lock");
    let items: Vec<&Value> = data
        .objects
        .iter()
        .filter(|((r, ns, _), _)| matches(target, r, ns))
        .map(|(_, v)| v)
        .collect();
    let offset: usize = query
        .get("continue")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let page: Vec<&Value> = items.iter().skip(offset).take(limit).copied().collect();
    let next = offset + page.len();
    let kind = kind_of(&target.resource.plural);
    let mut meta = Map::new();
    meta.insert("resourceVersion".into(), json!(data.rv.to_string()));
    if next < items.len() {
        meta.insert("continue".into(), json!(next.to_string()));
    }
    let body = json!({
        "kind": format!("{kind}List"),
        "apiVersion": api_version_of(&target.resource.prefix),
        "metadata": meta,
        "items": page,
    });
    json_response(StatusCode::OK, &body)
}

fn watch(shared: &Arc<Shared>, target: &Target, query: &HashMap<String, String>) -> Response {
    let from: u64 = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let bookmarks = is_true(query.get("allowWatchBookmarks"));
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(290));
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(256);
    let (backlog, mut changes, expired) = {
        let data = shared.data.lock().expect("lock");
        if data.refuse_watches {
            return status(503, "ServiceUnavailable", "watches refused for the test");
        }
        let expired = from != 0 && from < data.compacted;
        let backlog: Vec<Change> = data
            .history
            .iter()
            .filter(|c| c.rv > from && matches(target, &c.resource, &c.namespace))
            .cloned()
            .collect();
        (backlog, shared.changes.subscribe(), expired)
    };
    let mut drops = shared.drops.subscribe();
    let target_resource = target.resource.clone();
    let target_ns = target.namespace.clone();
    let shared = shared.clone();
    let kind = kind_of(&target.resource.plural);
    let api_version = api_version_of(&target.resource.prefix);
    tokio::spawn(async move {
        let line = |v: &Value| Ok(Bytes::from(format!("{v}\n")));
        if expired {
            let gone = json!({"type": "ERROR", "object": {
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("too old resource version: {from}"), "reason": "Expired", "code": 410}});
            let _ = tx.send(line(&gone)).await;
            return;
        }
        let mut last = from;
        for c in backlog {
            last = c.rv;
            if tx.send(line(&c.object)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut tick = tokio::time::interval(shared.bookmark_every);
        loop {
            tokio::select! {
                change = changes.recv() => match change {
                    Ok(c) if c.rv > last && c.resource == target_resource
                        && target_ns.as_deref().is_none_or(|t| t == c.namespace) => {
                        last = c.rv;
                        if tx.send(line(&c.object)).await.is_err() { return; }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                },
                _ = tick.tick(), if bookmarks => {
                    // Changes are broadcast under the lock: every change up to `rv` is in
                    // the channel once it is read, and is sent before the bookmark that
                    // says the stream has reached `rv` (as the API server promises).
                    let rv = shared.data.lock().expect("lock").rv;
                    while let Ok(c) = changes.try_recv() {
                        if c.rv > last && c.resource == target_resource
                            && target_ns.as_deref().is_none_or(|t| t == c.namespace) {
                            last = c.rv;
                            if tx.send(line(&c.object)).await.is_err() { return; }
                        }
                    }
                    let bookmark = json!({"type": "BOOKMARK", "object": {
                        "kind": kind, "apiVersion": api_version,
                        "metadata": {"resourceVersion": rv.to_string()}}});
                    last = last.max(rv);
                    if tx.send(line(&bookmark)).await.is_err() { return; }
                }
                _ = drops.recv() => return,
                () = tokio::time::sleep_until(deadline) => return,
            }
        }
    });
    let stream = tokio_stream_from(rx);
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .expect("response")
}

fn tokio_stream_from(
    mut rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn get(shared: &Shared, target: &Target, name: &str) -> Response {
    let data = shared.data.lock().expect("lock");
    let key = (
        target.resource.clone(),
        target.namespace.clone().unwrap_or_default(),
        name.to_owned(),
    );
    match data.objects.get(&key) {
        Some(o) => json_response(StatusCode::OK, o),
        None => status(
            404,
            "NotFound",
            &format!("{} {name} not found", target.resource.plural),
        ),
    }
}

fn create(shared: &Shared, target: &Target, body: &[u8]) -> Response {
    let Ok(mut object) = serde_json::from_slice::<Value>(body) else {
        return status(400, "BadRequest", "body is not JSON");
    };
    let ns = target.namespace.clone().unwrap_or_default();
    let name = match object["metadata"]["name"].as_str() {
        Some(n) => n.to_owned(),
        None => match object["metadata"]["generateName"].as_str() {
            Some(g) => format!("{g}{}", shared.data.lock().expect("lock").rv),
            None => return status(422, "Invalid", "metadata.name is required"),
        },
    };
    object["metadata"]["name"] = json!(name);
    object["metadata"]["namespace"] = json!(ns);
    let mut data = shared.data.lock().expect("lock");
    let key = (target.resource.clone(), ns.clone(), name.clone());
    if data.objects.contains_key(&key) {
        return status(409, "AlreadyExists", &format!("{name} already exists"));
    }
    stamp(&mut object, &mut data, &name);
    shared.store(
        &mut data,
        target.resource.clone(),
        ns,
        name,
        object.clone(),
        "ADDED",
    );
    json_response(StatusCode::CREATED, &object)
}

fn replace(shared: &Shared, target: &Target, name: &str, body: &[u8]) -> Response {
    let Ok(mut object) = serde_json::from_slice::<Value>(body) else {
        return status(400, "BadRequest", "body is not JSON");
    };
    let ns = target.namespace.clone().unwrap_or_default();
    let mut data = shared.data.lock().expect("lock");
    let key = (target.resource.clone(), ns.clone(), name.to_owned());
    let Some(current) = data.objects.get(&key) else {
        return status(404, "NotFound", "not found");
    };
    let sent = object["metadata"]["resourceVersion"].as_str();
    if sent.is_some() && sent != current["metadata"]["resourceVersion"].as_str() {
        return status(409, "Conflict", "the object has been modified; please apply your changes to the latest version and try again");
    }
    stamp(&mut object, &mut data, name);
    shared.store(
        &mut data,
        target.resource.clone(),
        ns,
        name.to_owned(),
        object.clone(),
        "MODIFIED",
    );
    json_response(StatusCode::OK, &object)
}

fn patch(
    shared: &Shared,
    target: &Target,
    name: &str,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    body: &[u8],
) -> Response {
    let Ok(patch) = serde_json::from_slice::<Value>(body) else {
        return status(400, "BadRequest", "patch is not JSON");
    };
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let apply = content_type.starts_with("application/apply-patch");
    let manager = query.get("fieldManager").cloned().unwrap_or_default();
    let ns = target.namespace.clone().unwrap_or_default();
    let mut data = shared.data.lock().expect("lock");
    let key = (target.resource.clone(), ns.clone(), name.to_owned());
    let current = match data.objects.get(&key) {
        Some(o) => o.clone(),
        None if apply => json!({"metadata": {"name": name, "namespace": ns}}),
        None => return status(404, "NotFound", "not found"),
    };
    if let Some(sent) = patch["metadata"]["resourceVersion"].as_str() {
        if Some(sent) != current["metadata"]["resourceVersion"].as_str() {
            return status(409, "Conflict", "the object has been modified");
        }
    }
    let lease_key = (ns.clone(), name.to_owned());
    if target.resource.plural == "leases" {
        let holder = current["spec"]["holderIdentity"]
            .as_str()
            .unwrap_or_default();
        let wanted = patch["spec"].get("holderIdentity");
        let owner = data
            .lease_holders
            .get(&lease_key)
            .cloned()
            .unwrap_or_default();
        if apply
            && wanted.is_some_and(|w| w.as_str() != Some(holder))
            && !holder.is_empty()
            && owner != manager
        {
            return status(
                409,
                "Conflict",
                &format!(
                    "Apply failed with 1 conflict: conflict with \"{owner}\": .spec.holderIdentity"
                ),
            );
        }
        match wanted {
            Some(Value::Null) => {
                data.lease_holders.remove(&lease_key);
            }
            Some(_) => {
                data.lease_holders.insert(lease_key, manager);
            }
            None => {}
        }
    }
    let mut object = current;
    merge(&mut object, &patch);
    let existed = data.objects.contains_key(&key);
    stamp(&mut object, &mut data, name);
    let event = if existed { "MODIFIED" } else { "ADDED" };
    shared.store(
        &mut data,
        target.resource.clone(),
        ns,
        name.to_owned(),
        object.clone(),
        event,
    );
    json_response(StatusCode::OK, &object)
}

/// A Deployment, its ReplicaSet and one Pod running `image` at `digest`.
pub fn put_deployment(api: &FakeApiServer, ns: &str, name: &str, image: &str, digest: &str) {
    let template = json!({"spec": {"containers": [{"name": "app", "image": image}]}});
    let d = api.put(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"namespace": ns, "name": name},
        "spec": {"selector": {}, "template": template}}));
    let owner = |kind: &str, o: &Value| {
        json!([{"apiVersion": "apps/v1", "kind": kind,
        "name": o["metadata"]["name"], "uid": o["metadata"]["uid"], "controller": true}])
    };
    let rs = api.put(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"namespace": ns, "name": format!("{name}-5d8f"), "ownerReferences": owner("Deployment", &d)},
        "spec": {"selector": {}, "template": template}}));
    api.put(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": ns, "name": format!("{name}-5d8f-x1"), "ownerReferences": owner("ReplicaSet", &rs)},
        "spec": template["spec"],
        "status": {"phase": "Running", "containerStatuses": [{"name": "app", "image": image,
            "imageID": format!("{}@{digest}", repository_of(image)),
            "ready": true, "restartCount": 0}]}}));
}

/// `image` without its tag or digest (a registry's port is kept).
fn repository_of(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    let name_start = image.rfind('/').map_or(0, |slash| slash + 1);
    match image[name_start..].find(':') {
        Some(colon) => &image[..name_start + colon],
        None => image,
    }
}

/// JSON merge patch (RFC 7386): null deletes, objects merge, anything else replaces.
fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = strip_nulls(patch),
    }
}

fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}
