//! A repository's lifecycle policy, as GetLifecyclePolicy returns its text, read into typed
//! rules and checked as ECR checks it before accepting a policy: unique priorities; within
//! each storage class a `tagStatus: any` rule last and one rule at most selecting untagged
//! images; `tagged` with a prefix or a pattern list (not both), `untagged` with neither, at
//! most four wildcards a pattern, days for the `since*` counts; `sinceImagePulled` only to
//! archive, `sinceImageTransitioned` only on archived images, which only it selects.

use serde::Deserialize;

/// The rules in priority order (lowest `rulePriority` first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub priority: u32,
    pub description: Option<String>,
    pub tags: TagSelection,
    pub storage_class: StorageClass,
    pub count: Count,
    pub action: Action,
}

/// Which images a rule selects by their tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagSelection {
    Any,
    Untagged,
    /// Every prefix starts one of the image's tags.
    Prefixes(Vec<String>),
    /// Every pattern matches one of the image's tags.
    Patterns(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageClass {
    Standard,
    Archive,
}

impl StorageClass {
    pub fn as_str(self) -> &'static str {
        match self {
            StorageClass::Standard => "standard",
            StorageClass::Archive => "archive",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// Keep the newest N (by push time) of the images the rule selects.
    MoreThan(u32),
    SincePushed {
        days: u32,
    },
    SincePulled {
        days: u32,
    },
    SinceTransitioned {
        days: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Expire,
    /// `transition` to `archive`.
    Archive,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Expire => "expire",
            Action::Archive => "archive",
        }
    }
}

/// Why a policy text is not a policy ECR would accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("lifecycle policy: {0}")]
pub struct PolicyError(String);

/// At most this many `*` in one tag pattern.
const MAX_WILDCARDS: usize = 4;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPolicy {
    rules: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRule {
    rule_priority: i64,
    description: Option<String>,
    selection: RawSelection,
    action: RawAction,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSelection {
    tag_status: String,
    tag_prefix_list: Option<Vec<String>>,
    tag_pattern_list: Option<Vec<String>>,
    storage_class: Option<String>,
    count_type: String,
    count_unit: Option<String>,
    count_number: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawAction {
    #[serde(rename = "type")]
    kind: String,
    target_storage_class: Option<String>,
}

impl Policy {
    /// Reads and checks a policy's JSON text.
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let raw: RawPolicy =
            serde_json::from_str(text).map_err(|e| PolicyError(format!("not valid JSON: {e}")))?;
        let mut rules = raw
            .rules
            .into_iter()
            .map(Rule::from_raw)
            .collect::<Result<Vec<_>, _>>()?;
        rules.sort_by_key(|r| r.priority);
        let twice = rules.windows(2).find_map(|w| match w {
            [a, b] if a.priority == b.priority => Some(a.priority),
            _ => None,
        });
        if let Some(p) = twice {
            return Err(PolicyError(format!("two rules have rulePriority {p}")));
        }
        for class in [StorageClass::Standard, StorageClass::Archive] {
            let mut in_class = rules.iter().filter(|r| r.storage_class == class);
            let mut untagged: Option<u32> = None;
            while let Some(r) = in_class.next() {
                if r.tags == TagSelection::Any {
                    if let Some(after) = in_class.clone().next() {
                        return Err(PolicyError(format!(
                            "rule {} selects tagStatus any, so it must be the last rule of storage class {} (rule {} comes after it)",
                            r.priority,
                            class.as_str(),
                            after.priority
                        )));
                    }
                }
                if r.tags == TagSelection::Untagged {
                    if let Some(first) = untagged {
                        return Err(PolicyError(format!(
                            "rules {first} and {} both select untagged images of storage class {}: only one rule may",
                            r.priority,
                            class.as_str()
                        )));
                    }
                    untagged = Some(r.priority);
                }
            }
        }
        Ok(Policy { rules })
    }
}

impl Rule {
    fn from_raw(raw: RawRule) -> Result<Rule, PolicyError> {
        let priority = u32::try_from(raw.rule_priority)
            .ok()
            .filter(|p| *p >= 1)
            .ok_or_else(|| {
                PolicyError(format!(
                    "rulePriority {} must be a positive integer",
                    raw.rule_priority
                ))
            })?;
        let at = |what: String| PolicyError(format!("rule {priority}: {what}"));
        let s = raw.selection;
        let tags = match (s.tag_status.as_str(), s.tag_prefix_list, s.tag_pattern_list) {
            ("any", None, None) => TagSelection::Any,
            ("untagged", None, None) => TagSelection::Untagged,
            ("tagged", Some(p), None) if !p.is_empty() => TagSelection::Prefixes(p),
            ("tagged", None, Some(p)) if !p.is_empty() => {
                if let Some(bad) = p.iter().find(|p| p.matches('*').count() > MAX_WILDCARDS) {
                    return Err(at(format!(
                        "tag pattern {bad:?} has more than {MAX_WILDCARDS} wildcards"
                    )));
                }
                TagSelection::Patterns(p)
            }
            ("tagged", Some(_), Some(_)) => {
                return Err(at("give tagPrefixList or tagPatternList, not both".into()))
            }
            ("tagged", _, _) => {
                return Err(at(
                    "tagStatus tagged needs a tagPrefixList or a tagPatternList".into(),
                ))
            }
            ("any" | "untagged", _, _) => {
                return Err(at(format!(
                    "tagStatus {} takes no tagPrefixList or tagPatternList",
                    s.tag_status
                )))
            }
            (other, _, _) => return Err(at(format!("unknown tagStatus {other:?}"))),
        };
        let storage_class = match s.storage_class.as_deref() {
            None | Some("standard") => StorageClass::Standard,
            Some("archive") => StorageClass::Archive,
            Some(other) => return Err(at(format!("unknown storageClass {other:?}"))),
        };
        let number = u32::try_from(s.count_number)
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| {
                at(format!(
                    "countNumber {} must be a positive integer",
                    s.count_number
                ))
            })?;
        let days = |unit: Option<&str>| match unit {
            Some("days") => Ok(number),
            Some(other) => Err(at(format!("countUnit {other:?}: only days"))),
            None => Err(at(format!(
                "countType {} needs countUnit days",
                s.count_type
            ))),
        };
        let count = match s.count_type.as_str() {
            "imageCountMoreThan" if s.count_unit.is_none() => Count::MoreThan(number),
            "imageCountMoreThan" => return Err(at("imageCountMoreThan takes no countUnit".into())),
            "sinceImagePushed" => Count::SincePushed {
                days: days(s.count_unit.as_deref())?,
            },
            "sinceImagePulled" => Count::SincePulled {
                days: days(s.count_unit.as_deref())?,
            },
            "sinceImageTransitioned" => Count::SinceTransitioned {
                days: days(s.count_unit.as_deref())?,
            },
            other => return Err(at(format!("unknown countType {other:?}"))),
        };
        let action = match (
            raw.action.kind.as_str(),
            raw.action.target_storage_class.as_deref(),
        ) {
            ("expire", None) => Action::Expire,
            ("transition", Some("archive")) => Action::Archive,
            ("transition", _) => {
                return Err(at("transition needs targetStorageClass archive".into()))
            }
            (other, _) => return Err(at(format!("unknown action {other:?}"))),
        };
        if action == Action::Archive && storage_class == StorageClass::Archive {
            return Err(at("an archived image cannot be archived again".into()));
        }
        let transitioned = matches!(count, Count::SinceTransitioned { .. });
        if transitioned && storage_class != StorageClass::Archive {
            return Err(at(
                "sinceImageTransitioned selects archived images: storageClass archive".into(),
            ));
        }
        if !transitioned && storage_class == StorageClass::Archive {
            return Err(at(format!(
                "storageClass archive takes countType sinceImageTransitioned, not {}",
                s.count_type
            )));
        }
        if matches!(count, Count::SincePulled { .. }) && action == Action::Expire {
            return Err(at(
                "sinceImagePulled can only archive (transition), not expire".into(),
            ));
        }
        Ok(Rule {
            priority,
            description: raw.description,
            tags,
            storage_class,
            count,
            action,
        })
    }

    /// Whether the rule's tag and storage-class criteria select an image.
    pub fn selects(&self, tags: &[String], storage: StorageClass) -> bool {
        storage == self.storage_class
            && match &self.tags {
                TagSelection::Any => true,
                TagSelection::Untagged => tags.is_empty(),
                TagSelection::Prefixes(p) => p
                    .iter()
                    .all(|p| tags.iter().any(|t| t.starts_with(p.as_str()))),
                TagSelection::Patterns(p) => {
                    p.iter().all(|p| tags.iter().any(|t| wildcard_match(p, t)))
                }
            }
    }
}

/// `*` matches any run of characters (none included); everything else itself; the whole tag.
pub fn wildcard_match(pattern: &str, tag: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = tag.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = rest.get(at + part.len()..).unwrap_or_default(),
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}
