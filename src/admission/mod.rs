//! Review in, response out: the webhook's logic, independent of HTTP so that the server,
//! tests and fuzzers drive the same code.

mod decision_line;
pub mod objects;
mod pin;
pub mod review;

pub use decision_line::{json_line, DecisionLog};
pub use pin::{pin, Pin, PinResult, Pinned, PIN_ANNOTATION_PREFIX};

use std::borrow::Cow;
use std::time::Duration;

use kube::core::admission::{AdmissionResponse, AdmissionReview};
use kube::core::{DynamicObject, Status};
use tokio::time::Instant;

use crate::decision::{self, ContainerFinding, Disposition, Mode, OnError, Verdict};
use crate::engine::Engine;
use crate::findings::{Finding, ImageReport};
use crate::json::JsonError;
use crate::platforms::{Placement, PlatformSources};
use crate::pull_secrets::{Keyring, SecretReader};
use crate::workload::{ContainerImage, ContainerKind, WorkloadKind};
use review::{RequestView, ReviewView};

/// Distinct images checked per object; beyond it an image is `unknown` (a pod has a few
/// dozen containers at the very most).
pub const MAX_IMAGES_PER_OBJECT: usize = 256;

/// What to do with objects that have a controller owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OwnedObjects {
    /// Check and record only: the workload the user edits is where to stop a bad image.
    Audit,
    /// Apply the mode to them too.
    Enforce,
}

/// The admission policy in force for one request.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub mode: Mode,
    pub on_error: OnError,
    pub owned_objects: OwnedObjects,
}

/// A request the webhook cannot read: the client's fault, answered with HTTP 400.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("malformed AdmissionReview: {0}")]
    Malformed(String),
    #[error("AdmissionReview has no request")]
    NoRequest,
    #[error("malformed object in AdmissionReview: {0}")]
    MalformedObject(String),
}

/// The answer to one review, with what the log line and metrics need.
#[derive(Debug)]
pub struct Reviewed {
    /// The answer when it says more than "allowed": a denial, warnings or audit
    /// annotations. `None` for a plain allowed answer, which [`Reviewed::to_json`] writes
    /// directly (most answers are that one, and building kube's response types for it cost
    /// more than writing its few bytes).
    /// Boxed: kube's review type is kilobytes, and `Reviewed` moves through futures.
    pub response: Option<Box<AdmissionReview<DynamicObject>>>,
    pub uid: String,
    /// The request's kind name, as sent.
    pub kind: String,
    /// The kind, when it carries a pod template.
    pub workload: Option<WorkloadKind>,
    pub operation: String,
    pub namespace: String,
    pub name: String,
    /// `None` when the object was allowed without looking at images.
    pub verdict: Option<Verdict>,
    pub effective_mode: Mode,
    pub reports: Vec<ImageReport>,
    /// Where the platforms a pod can land on came from: `nodes`, `nodes+nodepools`, or
    /// `flag` (`--platforms`, when the cluster's are not known).
    pub platform_source: &'static str,
}

impl Reviewed {
    /// The AdmissionReview to answer with, as JSON.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        match &self.response {
            Some(review) => serde_json::to_vec(review),
            None => Ok(allowed_json(&self.uid)),
        }
    }

    pub fn disposition(&self) -> Disposition {
        self.verdict
            .as_ref()
            .map_or(Disposition::Allowed, |v| v.disposition)
    }
}

/// What a decision reads beyond the review and the registries, when this process has it.
#[derive(Clone, Copy, Default)]
pub struct Sources<'a> {
    /// The cluster's nodes and NodePools (once listed) and the config blobs' platforms.
    pub platforms: Option<&'a PlatformSources>,
    /// The pods' pull secrets (`--read-pull-secrets`).
    pub pull_secrets: Option<&'a SecretReader>,
}

/// Decides on one AdmissionReview body within `budget`; with the cluster's nodes and
/// NodePools (`sources.platforms`, once listed), also whether each image has a manifest for
/// every platform the pod can land on; with `sources.pull_secrets`, asks registries other
/// than ECR's with the pod's pull secrets.
pub async fn evaluate(
    engine: &Engine,
    policy: Policy,
    sources: Sources<'_>,
    body: &[u8],
    budget: Duration,
) -> Result<Reviewed, ReviewError> {
    let deadline = Instant::now() + budget;
    let request = request_of(body)?;
    let mut out = Reviewed {
        response: None,
        uid: request.uid.to_string(),
        kind: request.kind.kind.to_string(),
        workload: request.kind.workload_kind(),
        operation: request.operation.to_string(),
        namespace: request.namespace.as_deref().unwrap_or_default().to_owned(),
        name: request.name.as_deref().unwrap_or_default().to_owned(),
        verdict: None,
        effective_mode: policy.mode,
        reports: Vec::new(),
        platform_source: "flag",
    };
    let Some(ToCheck {
        containers,
        placement,
        pull_secrets,
    }) = containers_to_check(request, policy.owned_objects, &mut out)?
    else {
        return Ok(out);
    };
    let images: Vec<String> = containers.iter().map(|c| c.image.to_string()).collect();
    let keyring = pull_keyring(
        engine,
        sources,
        &out.namespace,
        &pull_secrets,
        &images,
        deadline,
    )
    .await;
    out.reports = check_bounded(engine, images, &keyring, deadline).await;
    if let Some((platforms, placement)) = sources.platforms.zip(placement) {
        let looked = Lookup {
            engine,
            keyring: &keyring,
            deadline,
        };
        check_platforms(looked, platforms, &placement, &containers, &mut out).await;
    }
    let verdict = decide_for(
        &containers,
        &out.reports,
        out.effective_mode,
        policy.on_error,
    );
    out.response = response_for(&out.uid, &verdict);
    out.verdict = Some(verdict);
    Ok(out)
}

/// Marks each image that lacks a manifest for a platform the pod can land on: an index by
/// its children, a single-arch image by its config blob (read once per digest). Nothing
/// changes while the cluster's nodes are not listed yet (`--platforms` applies) or where
/// the pod can land nowhere (not an image's problem). A pod bound to a node is judged by
/// that node; an ephemeral container of a pod bound to a node not known yet is not judged
/// at all (it runs on that node, whatever the others are: `kubectl debug` during an
/// incident must never be refused on a guess).
async fn check_platforms(
    lookup: Lookup<'_>,
    platforms: &PlatformSources,
    placement: &Placement,
    containers: &[ContainerImage<'_>],
    out: &mut Reviewed,
) {
    let Lookup {
        engine,
        keyring,
        deadline,
    } = lookup;
    let Some(landings) = platforms
        .cluster
        .landable(placement)
        .filter(|l| !l.is_empty())
    else {
        return;
    };
    out.platform_source = platforms.cluster.source();
    // Known images' platforms are looked up without a future (the warm path); only the
    // rest are read, concurrently.
    let mut found: Vec<_> = out
        .reports
        .iter()
        .map(|r| engine.known_platforms(&r.image).map(Ok))
        .collect();
    if found.iter().any(Option::is_none) {
        let configs = platforms.configs.as_deref();
        let reads = out
            .reports
            .iter()
            .zip(&found)
            .map(|(report, known)| async move {
                match known {
                    Some(known) => Some(known.clone()),
                    None => {
                        engine
                            .platforms_of(configs, &report.image, keyring, deadline)
                            .await
                    }
                }
            });
        found = futures::future::join_all(reads).await;
    }
    // Bound to a node the cluster's facts do not have yet: the landings are the cluster's.
    let unknown_node = placement.node_name.is_some() && !landings.iter().any(|l| l.bound.is_some());
    let only_ephemeral = |image: &str| {
        containers
            .iter()
            .filter(|c| c.image == image)
            .all(|c| c.kind == ContainerKind::Ephemeral)
    };
    for (report, available) in out.reports.iter_mut().zip(found) {
        if unknown_node && only_ephemeral(&report.image) {
            continue;
        }
        match available {
            Some(Ok(available)) => report.land(&landings, Some(&available)),
            Some(Err(why)) => {
                report.land(&landings, None);
                report.platform_unknown = Some(why);
            }
            None => report.land(&landings, None),
        }
    }
}

/// How a review's images are looked up: the engine, the pod's pull secrets' credentials,
/// and the decision's deadline.
#[derive(Clone, Copy)]
struct Lookup<'a> {
    engine: &'a Engine,
    keyring: &'a Keyring,
    deadline: Instant,
}

/// What a request asks to check, where its pods can land, and what they pull with.
struct ToCheck<'a> {
    containers: Vec<ContainerImage<'a>>,
    placement: Option<Placement>,
    pull_secrets: Vec<Cow<'a, str>>,
}

/// The request of an AdmissionReview body, as both webhooks read it.
fn request_of(body: &[u8]) -> Result<RequestView<'_>, ReviewError> {
    let view =
        ReviewView::parse(body).map_err(|e| ReviewError::Malformed(one_line(&e.to_string())))?;
    view.request.ok_or(ReviewError::NoRequest)
}

/// The credentials of the pull secrets `names` (in `namespace`) when `sources` reads them
/// and one of `images` is asked at a registry other than ECR's; else none.
async fn pull_keyring(
    engine: &Engine,
    sources: Sources<'_>,
    namespace: &str,
    names: &[Cow<'_, str>],
    images: &[String],
    deadline: Instant,
) -> Keyring {
    match sources.pull_secrets {
        Some(reader) if !names.is_empty() && engine.asks_other_registries(images) => {
            let names: Vec<&str> = names.iter().map(|n| &**n).collect();
            read_keyring(reader, namespace, &names, deadline).await
        }
        _ => Keyring::default(),
    }
}

/// The pod's pull secrets' credentials, read within half of what is left of the budget (the
/// check needs the rest); none when they cannot be read in time.
async fn read_keyring(
    reader: &SecretReader,
    namespace: &str,
    names: &[&str],
    deadline: Instant,
) -> Keyring {
    let now = Instant::now();
    let by = now + deadline.saturating_duration_since(now) / 2;
    tokio::time::timeout_at(by, reader.keyring(namespace, names))
        .await
        .unwrap_or_else(|_| {
            tracing::warn!(namespace, "pull secrets not read within the decision's budget; registries are asked without them");
            Keyring::default()
        })
}

/// The containers whose images this request asks to check: none for kinds without a pod
/// template, operations other than CREATE and UPDATE, mirror pods, and images an UPDATE
/// keeps. Fills in the name from the object, and audits owned objects when so configured.
fn containers_to_check<'a>(
    request: RequestView<'a>,
    owned_objects: OwnedObjects,
    out: &mut Reviewed,
) -> Result<Option<ToCheck<'a>>, ReviewError> {
    let Some(kind) = out.workload else {
        return Ok(None);
    };
    let operation = request.operation.as_ref();
    if operation != "CREATE" && operation != "UPDATE" {
        return Ok(None);
    }
    let malformed = |e: JsonError| ReviewError::MalformedObject(one_line(&e.to_string()));
    let Some(object) = request.object.resolve().map_err(malformed)? else {
        return Ok(None);
    };
    if out.name.is_empty() {
        out.name = object.metadata.name_or_generate_name().to_owned();
    }
    if kind == WorkloadKind::Pod && objects::is_mirror_pod(&object) {
        return Ok(None);
    }
    let mut containers = objects::images_of(kind, &object);
    if operation == "UPDATE" {
        let old = request
            .old_object
            .resolve()
            .map_err(malformed)?
            .unwrap_or_default();
        containers = objects::new_images(containers, &objects::images_of(kind, &old));
    }
    if containers.is_empty() {
        return Ok(None);
    }
    if objects::has_controller_owner(&object) && owned_objects == OwnedObjects::Audit {
        out.effective_mode = Mode::Audit;
    }
    Ok(Some(ToCheck {
        placement: objects::placement_of(kind, &object),
        pull_secrets: objects::pull_secrets_of(kind, &object),
        containers,
    }))
}

/// Reports for `images` (the engine checks each distinct one once), the first
/// [`MAX_IMAGES_PER_OBJECT`] distinct ones checked and the rest `unknown`.
async fn check_bounded(
    engine: &Engine,
    mut images: Vec<String>,
    keyring: &Keyring,
    deadline: Instant,
) -> Vec<ImageReport> {
    images.sort();
    images.dedup();
    let unchecked = images.split_off(images.len().min(MAX_IMAGES_PER_OBJECT));
    let mut reports = engine.check_pulling(&images, keyring, deadline).await;
    reports.extend(unchecked.into_iter().map(|image| {
        let why = format!("not checked: the object names more than {MAX_IMAGES_PER_OBJECT} images");
        ImageReport::new(image, Finding::Unknown(why), false)
    }));
    reports
}

/// The AdmissionReview answering `verdict`, when it says more than a plain "allowed".
fn response_for(uid: &str, verdict: &Verdict) -> Option<Box<AdmissionReview<DynamicObject>>> {
    if verdict.message.is_none()
        && verdict.warnings.is_empty()
        && verdict.audit_annotations.is_empty()
    {
        return None;
    }
    let mut response = allowed_response(uid);
    if let Some(message) = &verdict.message {
        response.allowed = false;
        response.result = Status::failure(message, "Forbidden").with_code(403);
    }
    if !verdict.warnings.is_empty() {
        response.warnings = Some(verdict.warnings.clone());
    }
    response.audit_annotations = verdict.audit_annotations.clone();
    Some(Box::new(response.into_review()))
}

/// Pairs each container with its image's report and decides.
fn decide_for(
    containers: &[ContainerImage<'_>],
    reports: &[ImageReport],
    mode: Mode,
    on_error: OnError,
) -> Verdict {
    let findings: Vec<ContainerFinding<'_>> = containers
        .iter()
        .filter_map(|c| {
            let report = reports.iter().find(|r| r.image == c.image)?;
            Some(ContainerFinding {
                container: &c.name,
                kind: c.kind,
                report,
            })
        })
        .collect();
    decision::decide(mode, on_error, &findings)
}

/// The plain allowed AdmissionReview for `uid`, byte for byte what serializing
/// `allowed_response(uid).into_review()` gives (a test holds it to that).
pub fn allowed_json(uid: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(160 + uid.len());
    out.extend_from_slice(
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"#,
    );
    // Writing a string to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, uid);
    out.extend_from_slice(br#","allowed":true,"status":{}}}"#);
    out
}

/// An allowed response for `uid`. `AdmissionResponse` keeps one field private, so it is
/// built from `invalid` (which sets the v1 type meta) and then made an allowed one.
pub fn allowed_response(uid: &str) -> AdmissionResponse {
    let mut response = AdmissionResponse::invalid("");
    response.uid = uid.to_owned();
    response.allowed = true;
    response.result = Status::default();
    response
}

fn one_line(s: &str) -> String {
    decision::truncate(&s.replace(['\n', '\r'], " "), 300)
}
