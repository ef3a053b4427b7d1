//! One reading of a pod spec, for the webhook and the controller alike: which containers
//! name an image, and where the pods can land. The webhook reads a spec through the
//! review's borrowed view, the controller through k8s-openapi's type; each only says where
//! the fields are ([`PodSpecSource`]), and what is made of them is decided here, once.

use std::borrow::Cow;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, PodSpec};

use super::{ContainerImage, ContainerKind};
use crate::platforms::{Placement, Requirement, Toleration};

/// A node-affinity requirement as written: `key operator values`.
pub struct RawRequirement<'s> {
    pub key: &'s str,
    pub operator: &'s str,
    pub values: Vec<&'s str>,
}

/// A toleration as written.
pub struct RawToleration<'s> {
    pub key: Option<&'s str>,
    pub operator: Option<&'s str>,
    pub value: Option<&'s str>,
    pub effect: Option<&'s str>,
}

/// One required node-affinity term: its `matchExpressions` and its `matchFields`.
pub type RawTerm<'s> = (Vec<RawRequirement<'s>>, Vec<RawRequirement<'s>>);

/// Where a pod spec's fields are, however it was read. `'a` is how long the containers'
/// names and images can be borrowed for.
pub trait PodSpecSource<'a> {
    /// Every container with its image as written (`None`: none given): init containers
    /// (native sidecars among them), containers, ephemeral containers.
    fn containers(&self) -> Vec<(ContainerKind, Cow<'a, str>, Option<Cow<'a, str>>)>;
    fn node_selector(&self) -> Vec<(&str, &str)>;
    /// The terms of `requiredDuringSchedulingIgnoredDuringExecution`.
    fn required_terms(&self) -> Vec<RawTerm<'_>>;
    fn tolerations(&self) -> Vec<RawToleration<'_>>;
    /// `spec.nodeName`.
    fn node_name(&self) -> Option<&str>;
    /// The names of `imagePullSecrets`, empty ones left out.
    fn pull_secrets(&self) -> Vec<Cow<'a, str>>;
}

/// The containers that name an image. An empty or absent image names none: a workload's
/// template may leave it to be set later, and the pods made from it are checked then.
pub fn images<'a>(spec: &impl PodSpecSource<'a>) -> Vec<ContainerImage<'a>> {
    spec.containers()
        .into_iter()
        .filter_map(|(kind, name, image)| {
            Some(ContainerImage {
                name,
                kind,
                image: image.filter(|i| !i.is_empty())?,
            })
        })
        .collect()
}

/// Where the pods of `spec` can land: node selector, required node affinity, tolerations,
/// and the node a pod is bound to.
pub fn placement<'a>(spec: &impl PodSpecSource<'a>) -> Placement {
    let selector = spec
        .node_selector()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let requirement = |r: &RawRequirement<'_>| {
        let values = r.values.iter().map(|v| (*v).to_owned()).collect();
        Requirement::new(r.key, r.operator, values)
    };
    let terms: Vec<_> = spec
        .required_terms()
        .iter()
        .map(|(exprs, fields)| {
            (
                exprs.iter().map(requirement).collect(),
                fields.iter().map(requirement).collect(),
            )
        })
        .collect();
    let tolerations = spec
        .tolerations()
        .iter()
        .map(|t| Toleration::new(t.key, t.operator, t.value, t.effect))
        .collect();
    Placement::new(selector, terms, tolerations).bound_to(spec.node_name())
}

fn raw(r: &NodeSelectorRequirement) -> RawRequirement<'_> {
    RawRequirement {
        key: &r.key,
        operator: &r.operator,
        values: r.values.iter().flatten().map(String::as_str).collect(),
    }
}

/// The controller's watchers read pods and templates with k8s-openapi.
impl<'a> PodSpecSource<'a> for &'a PodSpec {
    fn pull_secrets(&self) -> Vec<Cow<'a, str>> {
        let spec: &'a PodSpec = self;
        spec.image_pull_secrets
            .iter()
            .flatten()
            .filter(|s| !s.name.is_empty())
            .map(|s| Cow::Borrowed(s.name.as_str()))
            .collect()
    }

    fn containers(&self) -> Vec<(ContainerKind, Cow<'a, str>, Option<Cow<'a, str>>)> {
        let spec: &'a PodSpec = self;
        let init = spec.init_containers.iter().flatten();
        let ephemeral = spec.ephemeral_containers.iter().flatten();
        let named = |kind, name: &'a String, image: &'a Option<String>| {
            (
                kind,
                Cow::Borrowed(name.as_str()),
                image.as_deref().map(Cow::Borrowed),
            )
        };
        init.map(|c| named(ContainerKind::Init, &c.name, &c.image))
            .chain(
                spec.containers
                    .iter()
                    .map(|c| named(ContainerKind::Container, &c.name, &c.image)),
            )
            .chain(ephemeral.map(|c| named(ContainerKind::Ephemeral, &c.name, &c.image)))
            .collect()
    }

    fn node_selector(&self) -> Vec<(&str, &str)> {
        self.node_selector
            .iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    fn required_terms(&self) -> Vec<RawTerm<'_>> {
        self.affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| {
                n.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|r| r.node_selector_terms.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|term| {
                let exprs = term.match_expressions.iter().flatten().map(raw).collect();
                let fields = term.match_fields.iter().flatten().map(raw).collect();
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
