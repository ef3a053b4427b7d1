//! Where an admitted object's pod template sits, which images it names, and where its pods
//! can land, read from the review's borrowed view.

use std::borrow::Cow;
use std::collections::BTreeSet;

use super::review::{ContainerView, ObjectView, RequirementView, SpecView};
use crate::platforms::Placement;
use crate::workload::spec::{self, PodSpecSource, RawRequirement, RawTerm, RawToleration};
use crate::workload::{ContainerImage, ContainerKind, WorkloadKind};

/// The pod spec of an object of `kind`, wherever it sits.
pub fn pod_spec<'o, 'a>(
    kind: WorkloadKind,
    object: &'o ObjectView<'a>,
) -> Option<&'o SpecView<'a>> {
    let spec = object.spec.as_ref()?;
    match kind {
        WorkloadKind::Pod => Some(spec),
        WorkloadKind::CronJob => {
            let job = spec.job_template.as_ref()?.spec.as_ref()?;
            job.template.as_ref()?.spec.as_ref()
        }
        _ => spec.template.as_ref()?.spec.as_ref(),
    }
}

/// Where the pod (or the pods of the template) can land: its node selector, required node
/// affinity, tolerations and bound node.
pub fn placement_of(kind: WorkloadKind, object: &ObjectView<'_>) -> Option<Placement> {
    pod_spec(kind, object).map(spec::placement)
}

/// Every container of a pod spec with an image: containers, init containers (native
/// sidecars included), ephemeral containers.
pub fn container_images<'a>(spec: &SpecView<'a>) -> Vec<ContainerImage<'a>> {
    spec::images(spec)
}

fn raw<'s>(r: &'s RequirementView<'_>) -> RawRequirement<'s> {
    RawRequirement {
        key: &r.key,
        operator: &r.operator,
        values: r.values.iter().flatten().map(|v| &**v).collect(),
    }
}

/// The webhook reads pods and templates through the review's borrowed view.
impl<'a> PodSpecSource<'a> for SpecView<'a> {
    fn pull_secrets(&self) -> Vec<Cow<'a, str>> {
        self.image_pull_secrets
            .iter()
            .flatten()
            .filter(|s| !s.name.is_empty())
            .map(|s| s.name.clone())
            .collect()
    }

    fn containers(&self) -> Vec<(ContainerKind, Cow<'a, str>, Option<Cow<'a, str>>)> {
        let groups: [(&Option<Vec<ContainerView<'a>>>, ContainerKind); 3] = [
            (&self.init_containers, ContainerKind::Init),
            (&self.containers, ContainerKind::Container),
            (&self.ephemeral_containers, ContainerKind::Ephemeral),
        ];
        groups
            .into_iter()
            .flat_map(|(list, kind)| {
                list.iter()
                    .flatten()
                    .map(move |c| (kind, c.name.clone(), c.image.clone()))
            })
            .collect()
    }

    fn node_selector(&self) -> Vec<(&str, &str)> {
        self.node_selector
            .iter()
            .flatten()
            .map(|(k, v)| (&**k, &**v))
            .collect()
    }

    fn required_terms(&self) -> Vec<RawTerm<'_>> {
        self.affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| n.required.as_ref())
            .and_then(|r| r.node_selector_terms.as_ref())
            .into_iter()
            .flatten()
            .map(|t| {
                let exprs = t.match_expressions.iter().flatten().map(raw).collect();
                let fields = t.match_fields.iter().flatten().map(raw).collect();
                (exprs, fields)
            })
            .collect()
    }

    fn tolerations(&self) -> Vec<RawToleration<'_>> {
        self.tolerations
            .iter()
            .flatten()
            .map(|t| RawToleration {
                key: t.key.as_deref(),
                operator: t.operator.as_deref(),
                value: t.value.as_deref(),
                effect: t.effect.as_deref(),
            })
            .collect()
    }

    fn node_name(&self) -> Option<&str> {
        self.node_name.as_deref()
    }
}

/// The names of the pull secrets of an object's pod spec.
pub fn pull_secrets_of<'a>(kind: WorkloadKind, object: &ObjectView<'a>) -> Vec<Cow<'a, str>> {
    pod_spec(kind, object)
        .map(PodSpecSource::pull_secrets)
        .unwrap_or_default()
}

/// The images of an object (empty when it has no pod spec).
pub fn images_of<'a>(kind: WorkloadKind, object: &ObjectView<'a>) -> Vec<ContainerImage<'a>> {
    pod_spec(kind, object)
        .map(container_images)
        .unwrap_or_default()
}

/// The containers whose image is new on UPDATE: an image already in `old` is not checked
/// again, so an edit that keeps a since-broken image is never blocked.
pub fn new_images<'a>(
    current: Vec<ContainerImage<'a>>,
    old: &[ContainerImage<'_>],
) -> Vec<ContainerImage<'a>> {
    let before: BTreeSet<&str> = old.iter().map(|c| c.image.as_ref()).collect();
    current
        .into_iter()
        .filter(|c| !before.contains(c.image.as_ref()))
        .collect()
}

/// Controlled by another object (a Pod of a ReplicaSet, a ReplicaSet of a Deployment, …).
pub fn has_controller_owner(object: &ObjectView<'_>) -> bool {
    object
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true))
}

/// Static pods mirrored by the kubelet; their images are the node's business.
pub fn is_mirror_pod(object: &ObjectView<'_>) -> bool {
    object
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"))
}
