//! Decodes the review view with the pull reader: the members the decision reads, in one
//! pass, everything else skipped. Same result as the `serde` decoder in `review.rs`, which
//! tests and the fuzzer hold it to.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::de::IgnoredAny;

use super::review::{
    ContainerView, GroupVersionKind, MetadataView, ObjectField, ObjectView, OwnerReferenceView,
    RequestView, ReviewView, SpecView,
};
use crate::json::{JsonError, Reader, Result};

impl<'a> ReviewView<'a> {
    /// Decodes an AdmissionReview body.
    pub fn parse(body: &'a [u8]) -> std::result::Result<Self, JsonError> {
        let text = std::str::from_utf8(body).map_err(|e| JsonError {
            what: "invalid UTF-8",
            at: Some(e.valid_up_to()),
        })?;
        let mut r = Reader::new(text);
        let mut view = ReviewView { request: None };
        r.object(|r, key| {
            match key.as_ref() {
                "request" => {
                    view.request = if r.null() {
                        None
                    } else {
                        Some(read_request(r)?)
                    }
                }
                _ => r.skip()?,
            }
            Ok(())
        })?;
        r.end()?;
        Ok(view)
    }
}

impl<'a> ObjectView<'a> {
    /// Decodes an object kept raw; `null` reads as an empty object.
    pub fn parse(raw: &'a str) -> std::result::Result<Self, JsonError> {
        let mut r = Reader::new(raw);
        let view = if r.null() {
            ObjectView::default()
        } else {
            read_object(&mut r)?
        };
        r.end()?;
        Ok(view)
    }
}

fn missing(field: &'static str) -> JsonError {
    JsonError {
        what: field,
        at: None,
    }
}

fn read_request<'a>(r: &mut Reader<'a>) -> Result<RequestView<'a>> {
    let (mut uid, mut kind, mut operation) = (None, None::<GroupVersionKind<'a>>, None);
    let (mut namespace, mut name) = (None, None);
    let (mut object, mut old_object) = (ObjectField::Absent, ObjectField::Absent);
    r.object(|r, key| {
        match key.as_ref() {
            "uid" => uid = Some(r.string()?),
            "kind" => kind = Some(read_gvk(r)?),
            "operation" => operation = Some(r.string()?),
            "namespace" => namespace = r.opt_string()?,
            "name" => name = r.opt_string()?,
            "object" => object = read_object_field(r, kind.as_ref())?,
            "oldObject" => old_object = read_object_field(r, kind.as_ref())?,
            _ => r.skip()?,
        }
        Ok(())
    })?;
    Ok(RequestView {
        uid: uid.ok_or_else(|| missing("missing field `uid` in request"))?,
        kind: kind.ok_or_else(|| missing("missing field `kind` in request"))?,
        operation: operation.ok_or_else(|| missing("missing field `operation` in request"))?,
        namespace,
        name,
        object,
        old_object,
    })
}

/// Decoded now when the kind is known to carry a pod template, skipped when known not to,
/// kept raw when the kind comes later. As in the `serde` decoder, a skipped `null` is
/// `Skipped`.
fn read_object_field<'a>(
    r: &mut Reader<'a>,
    kind: Option<&GroupVersionKind<'a>>,
) -> Result<ObjectField<'a>> {
    Ok(match kind {
        Some(k) if k.workload_kind().is_some() => match r.null() {
            true => ObjectField::Absent,
            false => ObjectField::Parsed(Box::new(read_object(r)?)),
        },
        Some(_) => {
            r.skip()?;
            ObjectField::Skipped
        }
        None if r.null() => ObjectField::Absent,
        None => ObjectField::Raw(r.raw()?),
    })
}

fn read_gvk<'a>(r: &mut Reader<'a>) -> Result<GroupVersionKind<'a>> {
    let (mut group, mut kind) = (Cow::Borrowed(""), None);
    r.object(|r, key| {
        match key.as_ref() {
            "group" => group = r.string()?,
            "kind" => kind = Some(r.string()?),
            _ => r.skip()?,
        }
        Ok(())
    })?;
    Ok(GroupVersionKind {
        group,
        kind: kind.ok_or_else(|| missing("missing field `kind` in kind"))?,
    })
}

fn read_object<'a>(r: &mut Reader<'a>) -> Result<ObjectView<'a>> {
    let mut view = ObjectView::default();
    r.object(|r, key| {
        match key.as_ref() {
            "metadata" => view.metadata = read_metadata(r)?,
            "spec" => view.spec = if r.null() { None } else { Some(read_spec(r)?) },
            _ => r.skip()?,
        }
        Ok(())
    })?;
    Ok(view)
}

fn read_metadata<'a>(r: &mut Reader<'a>) -> Result<MetadataView<'a>> {
    let mut view = MetadataView::default();
    r.object(|r, key| {
        match key.as_ref() {
            "name" => view.name = r.opt_string()?,
            "generateName" => view.generate_name = r.opt_string()?,
            "namespace" => view.namespace = r.opt_string()?,
            "ownerReferences" => {
                view.owner_references = if r.null() {
                    None
                } else {
                    let mut owners = Vec::new();
                    r.array(|r| {
                        owners.push(read_owner(r)?);
                        Ok(())
                    })?;
                    Some(owners)
                }
            }
            "annotations" => {
                view.annotations = if r.null() {
                    None
                } else {
                    let mut keys = BTreeMap::new();
                    r.object(|r, key| {
                        r.skip()?;
                        keys.insert(key, IgnoredAny);
                        Ok(())
                    })?;
                    Some(keys)
                }
            }
            _ => r.skip()?,
        }
        Ok(())
    })?;
    Ok(view)
}

fn read_owner<'a>(r: &mut Reader<'a>) -> Result<OwnerReferenceView<'a>> {
    let (mut kind, mut controller) = (Cow::Borrowed(""), None);
    r.object(|r, key| {
        match key.as_ref() {
            "kind" => kind = r.string()?,
            "controller" => controller = if r.null() { None } else { Some(r.bool()?) },
            _ => r.skip()?,
        }
        Ok(())
    })?;
    Ok(OwnerReferenceView { kind, controller })
}

fn read_spec<'a>(r: &mut Reader<'a>) -> Result<SpecView<'a>> {
    let mut view = SpecView::default();
    r.object(|r, key| {
        match key.as_ref() {
            "containers" => view.containers = read_containers(r)?,
            "initContainers" => view.init_containers = read_containers(r)?,
            "ephemeralContainers" => view.ephemeral_containers = read_containers(r)?,
            "template" => view.template = read_boxed_object(r)?,
            "jobTemplate" => view.job_template = read_boxed_object(r)?,
            _ => r.skip()?,
        }
        Ok(())
    })?;
    Ok(view)
}

fn read_boxed_object<'a>(r: &mut Reader<'a>) -> Result<Option<Box<ObjectView<'a>>>> {
    if r.null() {
        Ok(None)
    } else {
        read_object(r).map(|o| Some(Box::new(o)))
    }
}

fn read_containers<'a>(r: &mut Reader<'a>) -> Result<Option<Vec<ContainerView<'a>>>> {
    if r.null() {
        return Ok(None);
    }
    let mut containers = Vec::new();
    r.array(|r| {
        let (mut name, mut image) = (Cow::Borrowed(""), None);
        r.object(|r, key| {
            match key.as_ref() {
                "name" => name = r.string()?,
                "image" => image = r.opt_string()?,
                _ => r.skip()?,
            }
            Ok(())
        })?;
        containers.push(ContainerView { name, image });
        Ok(())
    })?;
    Ok(Some(containers))
}
