//! A pod's placement rules (node selector, required node affinity, tolerations) and how
//! they read against a node's labels and taints.

use std::collections::BTreeMap;

use super::{canonical, PoolFacts, ARCH, BETA_ARCH, BETA_OS, OS};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    Gt,
    Lt,
}

impl Operator {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "In" => Operator::In,
            "NotIn" => Operator::NotIn,
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            "Gt" => Operator::Gt,
            "Lt" => Operator::Lt,
            _ => return None,
        })
    }
}

/// `key operator values`, as in node affinity and NodePool requirements.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    pub values: Vec<String>,
}

impl Requirement {
    /// `None` for an operator Kubernetes does not know: the API server refuses such an
    /// object, so it never reaches a scheduler.
    pub fn new(key: &str, operator: &str, values: Vec<String>) -> Option<Self> {
        Some(Requirement {
            key: canonical(key).to_owned(),
            operator: Operator::parse(operator)?,
            values,
        })
    }

    /// Whether a node whose label `key` is `value` (absent: `None`) meets it.
    pub fn admits(&self, value: Option<&str>) -> bool {
        let number = |s: &str| s.trim().parse::<i64>().ok();
        let bound = || self.values.first().and_then(|v| number(v));
        match (self.operator, value) {
            (Operator::In, Some(v)) => self.values.iter().any(|x| x == v),
            (Operator::NotIn, Some(v)) => !self.values.iter().any(|x| x == v),
            (Operator::NotIn | Operator::DoesNotExist, None) => true,
            (Operator::Exists, Some(_)) => true,
            (Operator::Gt, Some(v)) => matches!((number(v), bound()), (Some(v), Some(b)) if v > b),
            (Operator::Lt, Some(v)) => matches!((number(v), bound()), (Some(v), Some(b)) if v < b),
            _ => false,
        }
    }

    /// Whether some value of the same key (or its absence) meets both this and `other`.
    pub fn compatible(&self, other: &Requirement) -> bool {
        let numbers = self
            .values
            .iter()
            .chain(&other.values)
            .filter_map(|v| v.trim().parse::<i64>().ok());
        let mut candidates: Vec<Option<String>> = vec![None, Some("\u{0}other".to_owned())];
        candidates.extend(self.values.iter().chain(&other.values).cloned().map(Some));
        candidates.extend(
            numbers.flat_map(|n| {
                [n.saturating_add(1), n.saturating_sub(1)].map(|m| Some(m.to_string()))
            }),
        );
        candidates
            .iter()
            .any(|c| self.admits(c.as_deref()) && other.admits(c.as_deref()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

impl TaintEffect {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "NoSchedule" => TaintEffect::NoSchedule,
            "PreferNoSchedule" => TaintEffect::PreferNoSchedule,
            "NoExecute" => TaintEffect::NoExecute,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taint {
    pub key: String,
    pub value: Option<String>,
    pub effect: TaintEffect,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Toleration {
    /// `None`: every key (with `exists`).
    pub key: Option<String>,
    /// `Exists`; else `Equal`, the default.
    pub exists: bool,
    pub value: Option<String>,
    /// `None`: every effect.
    pub effect: Option<TaintEffect>,
}

impl Toleration {
    fn tolerates(&self, taint: &Taint) -> bool {
        let effect = self.effect.is_none_or(|e| e == taint.effect);
        let key = self.key.as_deref().is_none_or(|k| k == taint.key);
        let value = self.exists
            || self.value.as_deref().unwrap_or_default()
                == taint.value.as_deref().unwrap_or_default();
        // An empty key tolerates everything only with Exists.
        let any_key_ok = self.key.is_some() || self.exists;
        effect && key && value && any_key_ok
    }
}

/// The rules of a pod's spec that decide which nodes it can land on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Placement {
    pub node_selector: BTreeMap<String, String>,
    /// Required node affinity: ORed terms of ANDed requirements. Empty: no affinity.
    pub terms: Vec<Vec<Requirement>>,
    /// `metadata.name` requirements of each term's `matchFields`, by term.
    pub name_fields: Vec<Vec<Requirement>>,
    pub tolerations: Vec<Toleration>,
    /// `spec.nodeName`: the node a pod is bound to (set by the scheduler, or by hand).
    pub node_name: Option<String>,
}

/// One required node-affinity term: its expressions and its fields, `None` where one names
/// an operator Kubernetes does not know (the term can then not be met).
pub type Term = (Option<Vec<Requirement>>, Option<Vec<Requirement>>);

impl Toleration {
    /// From a toleration's fields as the API has them.
    pub fn new(
        key: Option<&str>,
        operator: Option<&str>,
        value: Option<&str>,
        effect: Option<&str>,
    ) -> Self {
        Toleration {
            key: key.filter(|k| !k.is_empty()).map(str::to_owned),
            exists: operator == Some("Exists"),
            value: value.map(str::to_owned),
            effect: effect.and_then(TaintEffect::parse),
        }
    }
}

impl Placement {
    /// From a pod spec's parts: its node selector, its required node-affinity terms and
    /// its tolerations.
    pub fn new(
        node_selector: impl IntoIterator<Item = (String, String)>,
        terms: impl IntoIterator<Item = Term>,
        tolerations: Vec<Toleration>,
    ) -> Self {
        let mut placement = Placement {
            node_selector: node_selector
                .into_iter()
                .map(|(k, v)| (canonical(&k).to_owned(), v))
                .collect(),
            tolerations,
            ..Placement::default()
        };
        for term in terms {
            let (exprs, fields) = match term {
                (Some(exprs), Some(fields)) => (exprs, fields),
                // Unmeetable: an empty term matches nothing.
                _ => (Vec::new(), Vec::new()),
            };
            placement.terms.push(exprs);
            placement.name_fields.push(fields);
        }
        placement
    }

    /// The same placement for a pod bound to `node` (`spec.nodeName`), when it is.
    pub fn bound_to(mut self, node: Option<&str>) -> Self {
        self.node_name = node.filter(|n| !n.is_empty()).map(str::to_owned);
        self
    }

    /// Every `NoSchedule` and `NoExecute` taint is tolerated.
    pub fn tolerates(&self, taints: &[Taint]) -> bool {
        taints
            .iter()
            .filter(|t| t.effect != TaintEffect::PreferNoSchedule)
            .all(|t| self.tolerations.iter().any(|tol| tol.tolerates(t)))
    }

    /// The node selector and the required affinity admit a node named `name` with
    /// `labels`; for a NodePool's node (`pool`), a label the template does not set is met
    /// when the pool can set it.
    pub fn selects(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        pool: Option<&PoolFacts>,
    ) -> bool {
        let meets = |r: &Requirement| match (label(labels, &r.key), pool) {
            (None, Some(pool)) => pool.can_satisfy(&r.key, r),
            (value, _) => r.admits(value),
        };
        let selector_met = self.node_selector.iter().all(|(k, v)| {
            meets(&Requirement {
                key: k.clone(),
                operator: Operator::In,
                values: vec![v.clone()],
            })
        });
        if !selector_met {
            return false;
        }
        if self.terms.is_empty() {
            return true;
        }
        self.terms
            .iter()
            .zip(&self.name_fields)
            .any(|(exprs, fields)| {
                let named = |r: &Requirement| pool.is_some() || r.admits(Some(name));
                (!exprs.is_empty() || !fields.is_empty())
                    && exprs.iter().all(meets)
                    && fields.iter().all(named)
            })
    }
}

/// A node's label, the os and arch keys read under either name.
fn label<'a>(labels: &'a BTreeMap<String, String>, key: &str) -> Option<&'a str> {
    let alias = match key {
        OS => Some(BETA_OS),
        ARCH => Some(BETA_ARCH),
        _ => None,
    };
    labels
        .get(key)
        .or_else(|| alias.and_then(|a| labels.get(a)))
        .map(String::as_str)
}
