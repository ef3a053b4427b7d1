//! A borrowed view of an AdmissionReview v1: only what the decision needs, decoded without
//! copying strings that need no unescaping. Its `Deserialize` impls here are its one
//! description: the webhook decodes it with the pull reader (`crate::json`), tests and the
//! fuzzer hold that to `serde_json`, and the CLI decodes YAML documents with it.
//! `k8s-openapi` stays the reference shape; a test decodes every fixture both ways and
//! compares the images.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::de::{Error as _, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::json::{JsonError, Reader, RAW_VALUE};
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

impl<'a> ReviewView<'a> {
    /// Decodes an AdmissionReview body with the pull reader.
    pub fn parse(body: &'a [u8]) -> Result<Self, JsonError> {
        let text = std::str::from_utf8(body).map_err(|e| JsonError {
            what: "invalid UTF-8".into(),
            at: Some(e.valid_up_to()),
        })?;
        let mut reader = Reader::new(text);
        let view = ReviewView::deserialize(&mut reader)?;
        reader.end()?;
        Ok(view)
    }

    /// The reference decoder, with `serde_json`: slower, as it validates every value.
    pub fn parse_with_serde(body: &'a [u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }
}

impl<'a> ObjectView<'a> {
    /// Decodes an object kept raw; `null` reads as an empty object.
    pub fn parse(raw: &'a str) -> Result<Self, JsonError> {
        let mut reader = Reader::new(raw);
        let view = Option::<ObjectView>::deserialize(&mut reader)?.unwrap_or_default();
        reader.end()?;
        Ok(view)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RequestView<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RequestVisitor)
    }
}

/// A string borrowed from the input when it needs no unescaping (`Cow`'s own `Deserialize`
/// always copies).
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// A value's JSON text, borrowed from the input: the pull reader gives it when asked under
/// [`RAW_VALUE`]; `serde_json` through its own `RawValue`.
struct RawJson<'a>(&'a str);

impl<'de> Deserialize<'de> for RawJson<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RawVisitor;
        impl<'de> Visitor<'de> for RawVisitor {
            type Value = RawJson<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(RawJson(v))
            }
            fn visit_newtype_struct<D: Deserializer<'de>>(
                self,
                deserializer: D,
            ) -> Result<Self::Value, D::Error> {
                <&'de RawValue>::deserialize(deserializer).map(|raw| RawJson(raw.get()))
            }
        }
        deserializer.deserialize_newtype_struct(RAW_VALUE, RawVisitor)
    }
}

struct RequestVisitor;

impl<'de> serde::de::Visitor<'de> for RequestVisitor {
    type Value = RequestView<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an AdmissionRequest object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut uid = None;
        let mut kind: Option<GroupVersionKind<'de>> = None;
        let mut operation = None;
        let (mut namespace, mut name) = (None, None);
        let (mut object, mut old_object) = (ObjectField::Absent, ObjectField::Absent);
        let text = |t: Option<Text<'de>>| t.map(|t| t.0);
        while let Some(key) = map.next_key::<Text<'de>>()? {
            match key.0.as_ref() {
                "uid" => uid = Some(map.next_value::<Text>()?.0),
                "kind" => kind = Some(map.next_value()?),
                "operation" => operation = Some(map.next_value::<Text>()?.0),
                "namespace" => namespace = text(map.next_value()?),
                "name" => name = text(map.next_value()?),
                "object" => object = next_object(&mut map, kind.as_ref())?,
                "oldObject" => old_object = next_object(&mut map, kind.as_ref())?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let missing = |field: &str| A::Error::custom(format!("missing field `{field}` in request"));
        Ok(RequestView {
            uid: uid.ok_or_else(|| missing("uid"))?,
            kind: kind.ok_or_else(|| missing("kind"))?,
            operation: operation.ok_or_else(|| missing("operation"))?,
            namespace,
            name,
            object,
            old_object,
        })
    }
}

fn next_object<'de, A: MapAccess<'de>>(
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
        None => match map.next_value::<Option<RawJson<'de>>>()? {
            Some(raw) => ObjectField::Raw(raw.0),
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
    /// Where the pod can land: read for the platform check.
    #[serde(borrow, default)]
    pub node_selector: Option<BTreeMap<Cow<'a, str>, Cow<'a, str>>>,
    #[serde(borrow, default)]
    pub affinity: Option<AffinityView<'a>>,
    #[serde(borrow, default)]
    pub tolerations: Option<Vec<TolerationView<'a>>>,
    /// The node a pod is bound to: a running pod's (an ephemeral container's UPDATE).
    #[serde(borrow, default)]
    pub node_name: Option<Cow<'a, str>>,
    /// The Secrets a kubelet pulls with (`--read-pull-secrets`).
    #[serde(borrow, default)]
    pub image_pull_secrets: Option<Vec<PullSecretView<'a>>>,
}

/// One of `imagePullSecrets`: a Secret's name in the pod's namespace.
#[derive(Debug, PartialEq, Deserialize)]
pub struct PullSecretView<'a> {
    #[serde(borrow, default)]
    pub name: Cow<'a, str>,
}

/// `affinity`: only the required node affinity matters here.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AffinityView<'a> {
    #[serde(borrow, default)]
    pub node_affinity: Option<NodeAffinityView<'a>>,
}

#[derive(Debug, Default, PartialEq, Deserialize)]
pub struct NodeAffinityView<'a> {
    #[serde(
        borrow,
        default,
        rename = "requiredDuringSchedulingIgnoredDuringExecution"
    )]
    pub required: Option<NodeSelectorView<'a>>,
}

#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelectorView<'a> {
    #[serde(borrow, default)]
    pub node_selector_terms: Option<Vec<NodeSelectorTermView<'a>>>,
}

#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelectorTermView<'a> {
    #[serde(borrow, default)]
    pub match_expressions: Option<Vec<RequirementView<'a>>>,
    #[serde(borrow, default)]
    pub match_fields: Option<Vec<RequirementView<'a>>>,
}

#[derive(Debug, Default, PartialEq, Deserialize)]
pub struct RequirementView<'a> {
    #[serde(borrow, default)]
    pub key: Cow<'a, str>,
    #[serde(borrow, default)]
    pub operator: Cow<'a, str>,
    #[serde(borrow, default)]
    pub values: Option<Vec<Cow<'a, str>>>,
}

#[derive(Debug, Default, PartialEq, Deserialize)]
pub struct TolerationView<'a> {
    #[serde(borrow, default)]
    pub key: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub operator: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub value: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub effect: Option<Cow<'a, str>>,
}

#[derive(Debug, PartialEq, Deserialize)]
pub struct ContainerView<'a> {
    #[serde(borrow, default)]
    pub name: Cow<'a, str>,
    #[serde(borrow, default)]
    pub image: Option<Cow<'a, str>>,
}
