//! A borrowed view of an AdmissionReview v1: only what the decision needs, decoded without
//! copying strings that need no unescaping. The webhook decodes it with the pull reader
//! (`review_reader.rs`); the `serde` decoder here is the reference it is held to, and the
//! one the CLI uses on YAML documents. `k8s-openapi` stays the reference shape; a test
//! decodes every fixture both ways and compares the images.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::json::JsonError;
use crate::workload::kind::WorkloadKind;

#[derive(Debug, PartialEq, Deserialize)]
pub struct ReviewView<'a> {
    #[serde(borrow)]
    pub request: Option<RequestView<'a>>,
}

/// The request, decoded in one pass. `kind` comes before `object` in what the API server
/// sends, so the object is decoded straight into a view when its kind carries a pod template
/// and skipped otherwise; only when `kind` comes late is it kept raw and decoded after.
#[derive(Debug, PartialEq)]
pub struct RequestView<'a> {
    pub uid: Cow<'a, str>,
    pub kind: GroupVersionKind<'a>,
    pub operation: Cow<'a, str>,
    pub namespace: Option<Cow<'a, str>>,
    pub name: Option<Cow<'a, str>>,
    pub object: ObjectField<'a>,
    pub old_object: ObjectField<'a>,
}

/// `object` or `oldObject`, as far as it was decoded.
#[derive(Debug, Default, PartialEq)]
pub enum ObjectField<'a> {
    /// Absent or `null`.
    #[default]
    Absent,
    Parsed(Box<ObjectView<'a>>),
    /// Seen before `kind`: decoded on demand.
    Raw(&'a str),
    /// The kind carries no pod template: skipped unread.
    Skipped,
}

impl<'a> ObjectField<'a> {
    /// The object's view, decoding a raw one now. `None` when absent or skipped.
    pub fn resolve(self) -> Result<Option<ObjectView<'a>>, JsonError> {
        match self {
            ObjectField::Parsed(view) => Ok(Some(*view)),
            ObjectField::Raw(raw) => ObjectView::parse(raw).map(Some),
            ObjectField::Absent | ObjectField::Skipped => Ok(None),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RequestView<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RequestVisitor)
    }
}

struct RequestVisitor;

impl<'de> serde::de::Visitor<'de> for RequestVisitor {
    type Value = RequestView<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an AdmissionRequest object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        use serde::de::Error;
        let mut uid = None;
        let mut kind: Option<GroupVersionKind<'de>> = None;
        let mut operation = None;
        let (mut namespace, mut name) = (None, None);
        let (mut object, mut old_object) = (ObjectField::Absent, ObjectField::Absent);
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "uid" => uid = Some(map.next_value()?),
                "kind" => kind = Some(map.next_value()?),
                "operation" => operation = Some(map.next_value()?),
                "namespace" => namespace = map.next_value()?,
                "name" => name = map.next_value()?,
                "object" => object = next_object(&mut map, kind.as_ref())?,
                "oldObject" => old_object = next_object(&mut map, kind.as_ref())?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(RequestView {
            uid: uid.ok_or_else(|| A::Error::missing_field("uid"))?,
            kind: kind.ok_or_else(|| A::Error::missing_field("kind"))?,
            operation: operation.ok_or_else(|| A::Error::missing_field("operation"))?,
            namespace,
            name,
            object,
            old_object,
        })
    }
}

fn next_object<'de, A: serde::de::MapAccess<'de>>(
    map: &mut A,
    kind: Option<&GroupVersionKind<'de>>,
) -> Result<ObjectField<'de>, A::Error> {
    Ok(match kind {
        Some(k) if k.workload_kind().is_some() => {
            match map.next_value::<Option<ObjectView<'de>>>()? {
                Some(view) => ObjectField::Parsed(Box::new(view)),
                None => ObjectField::Absent,
            }
        }
        Some(_) => {
            map.next_value::<IgnoredAny>()?;
            ObjectField::Skipped
        }
        None => match map.next_value::<Option<&'de RawValue>>()? {
            Some(raw) => ObjectField::Raw(raw.get()),
            None => ObjectField::Absent,
        },
    })
}

#[derive(Debug, PartialEq, Deserialize)]
pub struct GroupVersionKind<'a> {
    #[serde(borrow, default)]
    pub group: Cow<'a, str>,
    #[serde(borrow)]
    pub kind: Cow<'a, str>,
}

impl GroupVersionKind<'_> {
    /// The workload kind, when group and kind name one that carries a pod template.
    pub fn workload_kind(&self) -> Option<WorkloadKind> {
        WorkloadKind::from_group_kind(&self.group, &self.kind)
    }
}

/// Any object with metadata and a spec that may hold a pod spec somewhere.
#[derive(Debug, Default, PartialEq, Deserialize)]
pub struct ObjectView<'a> {
    #[serde(borrow, default)]
    pub metadata: MetadataView<'a>,
    #[serde(borrow, default)]
    pub spec: Option<SpecView<'a>>,
}

#[derive(Debug, Default, PartialEq, Deserialize)]
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

impl MetadataView<'_> {
    /// The name, or the prefix the API server will complete it from (`generateName`).
    pub fn name_or_generate_name(&self) -> &str {
        self.name
            .as_deref()
            .or(self.generate_name.as_deref())
            .unwrap_or_default()
    }
}

#[derive(Debug, PartialEq, Deserialize)]
pub struct OwnerReferenceView<'a> {
    #[serde(borrow, default)]
    pub kind: Cow<'a, str>,
    #[serde(default)]
    pub controller: Option<bool>,
}

/// The union of the specs that lead to a pod spec: a Pod's own spec (containers at the top),
/// a workload's `template`, and a CronJob's `jobTemplate`.
#[derive(Debug, Default, PartialEq, Deserialize)]
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

#[derive(Debug, PartialEq, Deserialize)]
pub struct ContainerView<'a> {
    #[serde(borrow, default)]
    pub name: Cow<'a, str>,
    #[serde(borrow, default)]
    pub image: Option<Cow<'a, str>>,
}

impl<'a> ReviewView<'a> {
    /// The reference decoder, with `serde_json`: slower, as it validates every value.
    pub fn parse_with_serde(body: &'a [u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }
}
