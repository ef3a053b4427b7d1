//! A borrowed view of an AdmissionReview v1: only what the decision needs, decoded without
//! copying strings that need no unescaping. `k8s-openapi` stays the reference shape; a test
//! decodes every fixture both ways and compares the images.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Debug, Deserialize)]
pub struct ReviewView<'a> {
    #[serde(borrow, rename = "apiVersion")]
    pub api_version: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub request: Option<RequestView<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestView<'a> {
    #[serde(borrow)]
    pub uid: Cow<'a, str>,
    #[serde(borrow)]
    pub kind: GroupVersionKind<'a>,
    #[serde(borrow, default)]
    pub sub_resource: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub operation: Cow<'a, str>,
    #[serde(borrow, default)]
    pub namespace: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
    #[serde(default)]
    pub dry_run: Option<bool>,
    /// Left raw: decoded only for kinds that carry a pod template, so an unrelated kind
    /// whose spec happens to use the same field names differently is never misread.
    #[serde(borrow, default)]
    pub object: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub old_object: Option<&'a RawValue>,
}

#[derive(Debug, Deserialize)]
pub struct GroupVersionKind<'a> {
    #[serde(borrow, default)]
    pub group: Cow<'a, str>,
    #[serde(borrow, default)]
    pub version: Cow<'a, str>,
    #[serde(borrow)]
    pub kind: Cow<'a, str>,
}

/// Any object with metadata and a spec that may hold a pod spec somewhere.
#[derive(Debug, Default, Deserialize)]
pub struct ObjectView<'a> {
    #[serde(borrow, default)]
    pub metadata: MetadataView<'a>,
    #[serde(borrow, default)]
    pub spec: Option<SpecView<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetadataView<'a> {
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub generate_name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub namespace: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub owner_references: Option<Vec<OwnerReferenceView<'a>>>,
    /// Only the keys matter (mirror pods); values are skipped unread.
    #[serde(borrow, default)]
    pub annotations: Option<BTreeMap<Cow<'a, str>, IgnoredAny>>,
}

#[derive(Debug, Deserialize)]
pub struct OwnerReferenceView<'a> {
    #[serde(borrow, default)]
    pub kind: Cow<'a, str>,
    #[serde(default)]
    pub controller: Option<bool>,
}

/// The union of the specs that lead to a pod spec: a Pod's own spec (containers at the top),
/// a workload's `template`, and a CronJob's `jobTemplate`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecView<'a> {
    #[serde(borrow, default)]
    pub containers: Option<Vec<ContainerView<'a>>>,
    #[serde(borrow, default)]
    pub init_containers: Option<Vec<ContainerView<'a>>>,
    #[serde(borrow, default)]
    pub ephemeral_containers: Option<Vec<ContainerView<'a>>>,
    #[serde(borrow, default)]
    pub template: Option<Box<ObjectView<'a>>>,
    #[serde(borrow, default)]
    pub job_template: Option<Box<ObjectView<'a>>>,
}

#[derive(Debug, Deserialize)]
pub struct ContainerView<'a> {
    #[serde(borrow, default)]
    pub name: Cow<'a, str>,
    #[serde(borrow, default)]
    pub image: Option<Cow<'a, str>>,
}

impl<'a> ReviewView<'a> {
    pub fn parse(body: &'a [u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }
}

impl<'a> ObjectView<'a> {
    /// Decodes a raw object; `null` reads as an empty object.
    pub fn parse(raw: &'a RawValue) -> Result<Self, serde_json::Error> {
        let parsed: Option<ObjectView<'a>> = serde_json::from_str(raw.get())?;
        Ok(parsed.unwrap_or_default())
    }
}
