//! The containers of the objects read: what `check` checks and reports on.

use serde::Deserialize;

use super::input::{Document, InputError};
use crate::admission::objects;
use crate::admission::review::ObjectView;
use crate::workload::{ContainerKind, WorkloadKind};

/// A container of an object read from the input.
#[derive(Debug, Clone)]
pub struct Subject {
    pub file: String,
    pub document: usize,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub container: String,
    pub container_kind: ContainerKind,
    pub image: String,
}

/// Every container of every object with a pod template; objects that do not decode are
/// input errors.
pub fn subjects(documents: &[Document], errors: &mut Vec<InputError>) -> Vec<Subject> {
    let mut out = Vec::new();
    for doc in documents {
        let kind = doc
            .object
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or_default();
        let group = doc
            .object
            .get("apiVersion")
            .and_then(|v| v.as_str())
            .and_then(|v| v.rsplit_once('/').map(|(g, _)| g))
            .unwrap_or_default();
        let Some(workload_kind) = WorkloadKind::from_group_kind(group, kind) else {
            continue;
        };
        let view = match ObjectView::deserialize(&doc.object) {
            Ok(v) => v,
            Err(e) => {
                errors.push(InputError {
                    file: doc.file.clone(),
                    document: Some(doc.index),
                    message: format!("malformed {kind}: {e}"),
                });
                continue;
            }
        };
        let name = view.metadata.name_or_generate_name().to_owned();
        let namespace = view.metadata.namespace.as_deref().map(str::to_owned);
        for c in objects::images_of(workload_kind, &view) {
            out.push(Subject {
                file: doc.file.clone(),
                document: doc.index,
                kind: kind.to_owned(),
                namespace: namespace.clone(),
                name: name.clone(),
                container: c.name.into_owned(),
                container_kind: c.kind,
                image: c.image.into_owned(),
            });
        }
    }
    out
}
