//! `POST /mutate` (`--pin-digests`): each Pod's images written by tag are rewritten to the
//! digest the check found intact (`repo:tag@sha256:…`), so that every node pulls what was
//! checked. docs/pinning.md says why and what it changes.
//!
//! Pods only: a workload's template pinned would run the old digest on every later rollout.
//! CREATE pins every container, init container and ephemeral container; UPDATE (an
//! ephemeral container added) only the containers it adds. An image already carrying a
//! digest, one the check did not find intact, or one it does not check (`--registries`) is
//! left as written. Each pin is recorded as the annotation
//! `pinned.ecr-preflight.dev/<container>: <the reference as written>`. A review sent again
//! (`reinvocationPolicy: IfNeeded`) finds its images pinned and changes nothing.

use std::time::Duration;

use base64::Engine as _;
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, ReplaceOperation};
use tokio::time::Instant;

use super::review::{ContainerView, ObjectView, SpecView};
use super::{allowed_response, objects, one_line, pull_keyring, request_of, ReviewError, Sources};
use crate::engine::Engine;
use crate::findings::Outcome;
use crate::image::Reference;
use crate::pull_secrets::Keyring;
use crate::workload::WorkloadKind;

/// The annotation prefix of a pin: `pinned.ecr-preflight.dev/<container name>`.
pub const PIN_ANNOTATION_PREFIX: &str = "pinned.ecr-preflight.dev/";

/// Why an image was pinned or not, as `ecr_preflight_images_pinned_total{result}` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinResult {
    /// Rewritten to the digest the check found intact.
    Pinned,
    /// Already written with a digest.
    ByDigest,
    /// The check did not find it intact (missing, not found, unknown...): left as written.
    Unverified,
    /// Not checked (`--registries`), or a malformed reference: left as written.
    Skipped,
}

impl PinResult {
    pub fn as_str(self) -> &'static str {
        match self {
            PinResult::Pinned => "pinned",
            PinResult::ByDigest => "by_digest",
            PinResult::Unverified => "unverified",
            PinResult::Skipped => "skipped",
        }
    }
}

/// One container's image, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub container: String,
    /// As written.
    pub image: String,
    /// What it was rewritten to, when pinned.
    pub pinned: Option<String>,
    pub result: PinResult,
}

/// The answer to one `/mutate` review, with what the log line and metrics need.
#[derive(Debug)]
pub struct Pinned {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub pins: Vec<Pin>,
    /// The AdmissionReview to answer with, as JSON.
    pub json: Vec<u8>,
}

/// Where one container sits in the pod spec, and its image.
struct Slot<'v> {
    list: &'static str,
    index: usize,
    name: &'v str,
    image: &'v str,
}

/// Pins the images of the Pod in one AdmissionReview body, within `budget`. Never denies.
pub async fn pin(
    engine: &Engine,
    sources: Sources<'_>,
    body: &[u8],
    budget: Duration,
) -> Result<Pinned, ReviewError> {
    let deadline = Instant::now() + budget;
    let request = request_of(body)?;
    let mut pinned = Pinned {
        uid: request.uid.to_string(),
        namespace: request.namespace.as_deref().unwrap_or_default().to_owned(),
        name: request.name.as_deref().unwrap_or_default().to_owned(),
        pins: Vec::new(),
        json: Vec::new(),
    };
    let operation = request.operation.clone();
    let is_pod = request.kind.workload_kind() == Some(WorkloadKind::Pod);
    let malformed =
        |e: crate::json::JsonError| ReviewError::MalformedObject(one_line(&e.to_string()));
    let object = match (is_pod, operation.as_ref()) {
        (true, "CREATE" | "UPDATE") => request.object.resolve().map_err(malformed)?,
        _ => None,
    };
    let old = match operation.as_ref() {
        "UPDATE" => request.old_object.resolve().map_err(malformed)?,
        _ => None,
    };
    let mut patch = Vec::new();
    if let Some(object) = object.filter(|o| !objects::is_mirror_pod(o)) {
        if pinned.name.is_empty() {
            pinned.name = object.metadata.name_or_generate_name().to_owned();
        }
        let slots = slots(&object, old.as_ref());
        let names = objects::pull_secrets_of(WorkloadKind::Pod, &object);
        let images: Vec<String> = slots.iter().map(|s| s.image.to_owned()).collect();
        let keyring = pull_keyring(
            engine,
            sources,
            &pinned.namespace,
            &names,
            &images,
            deadline,
        )
        .await;
        pinned.pins = decide(engine, &slots, &keyring, deadline).await;
        // An UPDATE (pods/ephemeralcontainers) changes the spec's ephemeral containers only.
        let annotate = old.is_none();
        patch = patch_for(&object, &slots, &pinned.pins, annotate);
    }
    pinned.json = answer(&pinned.uid, patch)
        .map_err(|e| ReviewError::Malformed(format!("cannot write the answer: {e}")))?;
    Ok(pinned)
}

/// The AdmissionReview allowing the Pod with `patch`. The patch is written as the API
/// server reads it, base64 in a string (kube's response type would write a byte array).
fn answer(uid: &str, patch: Vec<PatchOperation>) -> Result<Vec<u8>, serde_json::Error> {
    let mut review = serde_json::to_value(allowed_response(uid).into_review())?;
    let response = review
        .get_mut("response")
        .and_then(serde_json::Value::as_object_mut);
    if let (Some(response), false) = (response, patch.is_empty()) {
        let bytes = serde_json::to_vec(&Patch(patch))?;
        response.insert("patchType".into(), "JSONPatch".into());
        let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
        response.insert("patch".into(), encoded.into());
    }
    serde_json::to_vec(&review)
}

/// Every container with an image, where it sits; on UPDATE only the ephemeral containers
/// the update adds.
fn slots<'v>(object: &'v ObjectView<'_>, old: Option<&ObjectView<'_>>) -> Vec<Slot<'v>> {
    let Some(spec) = object.spec.as_ref() else {
        return Vec::new();
    };
    let lists: [(&'static str, &Option<Vec<ContainerView<'_>>>); 3] = [
        ("initContainers", &spec.init_containers),
        ("containers", &spec.containers),
        ("ephemeralContainers", &spec.ephemeral_containers),
    ];
    let existing = |name: &str| {
        old.and_then(|o| o.spec.as_ref())
            .is_some_and(|s: &SpecView<'_>| {
                s.ephemeral_containers
                    .iter()
                    .flatten()
                    .any(|c| c.name == name)
            })
    };
    lists
        .into_iter()
        .filter(|(list, _)| old.is_none() || *list == "ephemeralContainers")
        .flat_map(|(list, containers)| {
            containers
                .iter()
                .flatten()
                .enumerate()
                .filter_map(move |(index, c)| {
                    let image = c.image.as_deref().filter(|i| !i.is_empty())?;
                    Some(Slot {
                        list,
                        index,
                        name: &c.name,
                        image,
                    })
                })
        })
        .filter(|slot| !existing(slot.name))
        .collect()
}

/// Checks the images written by tag (each distinct one once) and says what becomes of each
/// container's.
async fn decide(
    engine: &Engine,
    slots: &[Slot<'_>],
    keyring: &Keyring,
    deadline: Instant,
) -> Vec<Pin> {
    let mut by_tag: Vec<String> = slots
        .iter()
        .filter(|s| !has_digest(s.image))
        .map(|s| s.image.to_owned())
        .collect();
    by_tag.sort();
    by_tag.dedup();
    let reports = engine.check_pulling(&by_tag, keyring, deadline).await;
    slots
        .iter()
        .map(|slot| {
            let report = reports.iter().find(|r| r.image == slot.image);
            let (result, pinned) = match report {
                None => (PinResult::ByDigest, None),
                Some(r) if r.outcome() == Outcome::Skipped => (PinResult::Skipped, None),
                Some(r) if r.outcome() != Outcome::Ok || r.upstream.is_some() => {
                    (PinResult::Unverified, None)
                }
                Some(r) => match engine.resolved_digest(&r.image) {
                    Some(digest) => (
                        PinResult::Pinned,
                        Some(pinned_reference(slot.image, &digest)),
                    ),
                    None => (PinResult::Unverified, None),
                },
            };
            Pin {
                container: slot.name.to_owned(),
                image: slot.image.to_owned(),
                pinned,
                result,
            }
        })
        .collect()
}

fn has_digest(image: &str) -> bool {
    Reference::parse(image).map_or(true, |r| r.digest.is_some())
}

/// `image` (written by tag, or with none: `latest`) with `digest` after its tag.
fn pinned_reference(image: &str, digest: &str) -> String {
    match Reference::parse(image) {
        Ok(r) if r.tag.is_none() => format!("{image}:latest@{digest}"),
        _ => format!("{image}@{digest}"),
    }
}

/// The JSON Patch that rewrites each pinned image and, with `annotate`, records it in an
/// annotation.
fn patch_for(
    object: &ObjectView<'_>,
    slots: &[Slot<'_>],
    pins: &[Pin],
    annotate: bool,
) -> Vec<PatchOperation> {
    let mut ops = Vec::new();
    let mut annotations = object.metadata.annotations.is_some();
    for (slot, pin) in slots.iter().zip(pins) {
        let Some(pinned) = &pin.pinned else {
            continue;
        };
        let index = slot.index.to_string();
        ops.push(PatchOperation::Replace(ReplaceOperation {
            path: PointerBuf::from_tokens(["spec", slot.list, index.as_str(), "image"]),
            value: serde_json::Value::String(pinned.clone()),
        }));
        if !annotate {
            continue;
        }
        if !annotations {
            ops.push(PatchOperation::Add(AddOperation {
                path: PointerBuf::from_tokens(["metadata", "annotations"]),
                value: serde_json::json!({}),
            }));
            annotations = true;
        }
        let key = format!("{PIN_ANNOTATION_PREFIX}{}", slot.name);
        ops.push(PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(["metadata", "annotations", key.as_str()]),
            value: serde_json::Value::String(slot.image.to_owned()),
        }));
    }
    ops
}
