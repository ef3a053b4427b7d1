//! Table tests of "which platforms can this pod land on": node selectors (GA and beta
//! keys), required node affinity (terms ORed, expressions ANDed, every operator), taints
//! and tolerations, Karpenter NodePool templates.

use std::collections::BTreeMap;

use ecr_preflight::platforms::{
    landable, Cluster, NodeFacts, Placement, PoolFacts, Requirement, Taint, TaintEffect,
};
use k8s_openapi::api::core::v1::PodSpec;
use serde_json::{json, Value};

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn node(name: &str, os: &str, arch: &str, extra: &[(&str, &str)], taints: Vec<Taint>) -> NodeFacts {
    let mut l = labels(&[("kubernetes.io/os", os), ("kubernetes.io/arch", arch)]);
    l.extend(labels(extra));
    NodeFacts {
        name: name.to_owned(),
        labels: l,
        taints,
    }
}

fn taint(key: &str, value: &str, effect: TaintEffect) -> Taint {
    Taint {
        key: key.to_owned(),
        value: Some(value.to_owned()),
        effect,
    }
}

/// 3 amd64 and 2 arm64 Linux nodes (one arm64 labelled team=a), 1 Windows node tainted
/// os=windows:NoSchedule.
fn cluster() -> Cluster {
    let windows = taint("os", "windows", TaintEffect::NoSchedule);
    Cluster {
        nodes: vec![
            node("a1", "linux", "amd64", &[], vec![]),
            node("a2", "linux", "amd64", &[], vec![]),
            node("a3", "linux", "amd64", &[("team", "a")], vec![]),
            node("g1", "linux", "arm64", &[("team", "a")], vec![]),
            node("g2", "linux", "arm64", &[], vec![]),
            node("w1", "windows", "amd64", &[], vec![windows]),
        ],
        pools: Vec::new(),
    }
}

fn placement(spec: Value) -> Placement {
    let mut spec = spec;
    spec["containers"] = json!([{"name": "app", "image": "x"}]);
    let spec: PodSpec = serde_json::from_value(spec).expect("pod spec");
    ecr_preflight::workload::spec::placement(&&spec)
}

/// "linux/amd64 x3" per landing, pools in brackets.
fn landings(p: &Placement, c: &Cluster) -> Vec<String> {
    landable(p, c)
        .into_iter()
        .map(|l| {
            let mut s = format!("{} x{}", l.platform, l.nodes);
            if !l.pools.is_empty() {
                s.push_str(&format!(" [{}]", l.pools.join(",")));
            }
            s
        })
        .collect()
}

fn affinity(terms: Value) -> Value {
    json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}})
}

#[test]
fn selectors_affinity_and_taints_against_nodes() {
    let c = cluster();
    let windows_toleration = json!({"tolerations": [{"key": "os", "operator": "Equal", "value": "windows", "effect": "NoSchedule"}]});
    let cases: Vec<(&str, Value, Vec<&str>)> = vec![
        (
            "no rules: every untainted node",
            json!({}),
            vec!["linux/amd64 x3", "linux/arm64 x2"],
        ),
        (
            "the windows taint tolerated",
            windows_toleration.clone(),
            vec!["linux/amd64 x3", "linux/arm64 x2", "windows/amd64 x1"],
        ),
        (
            "a toleration of every taint (no key, Exists)",
            json!({"tolerations": [{"operator": "Exists"}]}),
            vec!["linux/amd64 x3", "linux/arm64 x2", "windows/amd64 x1"],
        ),
        (
            "a toleration of another value",
            json!({"tolerations": [{"key": "os", "value": "linux", "effect": "NoSchedule"}]}),
            vec!["linux/amd64 x3", "linux/arm64 x2"],
        ),
        (
            "a toleration of another effect",
            json!({"tolerations": [{"key": "os", "operator": "Exists", "effect": "NoExecute"}]}),
            vec!["linux/amd64 x3", "linux/arm64 x2"],
        ),
        (
            "nodeSelector arch amd64",
            json!({"nodeSelector": {"kubernetes.io/arch": "amd64"}}),
            vec!["linux/amd64 x3"],
        ),
        (
            "nodeSelector with the beta key",
            json!({"nodeSelector": {"beta.kubernetes.io/arch": "arm64"}}),
            vec!["linux/arm64 x2"],
        ),
        (
            "nodeSelector os linux with the windows taint tolerated",
            json!({"nodeSelector": {"kubernetes.io/os": "linux"}, "tolerations": windows_toleration["tolerations"]}),
            vec!["linux/amd64 x3", "linux/arm64 x2"],
        ),
        (
            "nodeSelector on a custom label",
            json!({"nodeSelector": {"team": "a"}}),
            vec!["linux/amd64 x1", "linux/arm64 x1"],
        ),
        (
            "nodeSelector nobody has",
            json!({"nodeSelector": {"team": "b"}}),
            vec![],
        ),
        (
            "affinity In",
            affinity(
                json!([{"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["arm64"]}]}]),
            ),
            vec!["linux/arm64 x2"],
        ),
        (
            "affinity NotIn",
            affinity(
                json!([{"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "NotIn", "values": ["arm64"]}]}]),
            ),
            vec!["linux/amd64 x3"],
        ),
        (
            "affinity Exists",
            affinity(json!([{"matchExpressions": [{"key": "team", "operator": "Exists"}]}])),
            vec!["linux/amd64 x1", "linux/arm64 x1"],
        ),
        (
            "affinity DoesNotExist",
            affinity(json!([{"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]}])),
            vec!["linux/amd64 x2", "linux/arm64 x1"],
        ),
        (
            "affinity with the beta key",
            affinity(
                json!([{"matchExpressions": [{"key": "beta.kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}]),
            ),
            vec!["linux/amd64 x3"],
        ),
        (
            "expressions of a term ANDed",
            affinity(
                json!([{"matchExpressions": [{"key": "team", "operator": "In", "values": ["a"]}, {"key": "kubernetes.io/arch", "operator": "In", "values": ["arm64"]}]}]),
            ),
            vec!["linux/arm64 x1"],
        ),
        (
            "terms ORed",
            affinity(json!([
            {"matchExpressions": [{"key": "team", "operator": "In", "values": ["a"]}, {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]},
            {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["arm64"]}]}])),
            vec!["linux/amd64 x1", "linux/arm64 x2"],
        ),
        (
            "an empty term matches nothing",
            affinity(json!([{}])),
            vec![],
        ),
        (
            "matchFields on the node's name",
            affinity(
                json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["g2"]}]}]),
            ),
            vec!["linux/arm64 x1"],
        ),
        (
            "nodeSelector and affinity both apply",
            json!({"nodeSelector": {"kubernetes.io/arch": "amd64"},
            "affinity": affinity(json!([{"matchExpressions": [{"key": "team", "operator": "Exists"}]}]))["affinity"]}),
            vec!["linux/amd64 x1"],
        ),
    ];
    for (name, spec, want) in cases {
        assert_eq!(landings(&placement(spec), &c), want, "{name}");
    }
}

#[test]
fn numeric_operators_and_effects() {
    let c = Cluster {
        nodes: vec![
            node("small", "linux", "amd64", &[("cores", "4")], vec![]),
            node("big", "linux", "arm64", &[("cores", "64")], vec![]),
            node(
                "soft",
                "linux",
                "arm64",
                &[],
                vec![taint("spot", "true", TaintEffect::PreferNoSchedule)],
            ),
            node(
                "evict",
                "linux",
                "amd64",
                &[],
                vec![taint("maintenance", "true", TaintEffect::NoExecute)],
            ),
            node("bare", "linux", "", &[], vec![]),
        ],
        pools: Vec::new(),
    };
    let gt = affinity(
        json!([{"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["8"]}]}]),
    );
    assert_eq!(landings(&placement(gt), &c), ["linux/arm64 x1"]);
    let lt = affinity(
        json!([{"matchExpressions": [{"key": "cores", "operator": "Lt", "values": ["8"]}]}]),
    );
    assert_eq!(landings(&placement(lt), &c), ["linux/amd64 x1"]);
    // PreferNoSchedule keeps no pod away; NoExecute does; a node without an arch is no platform.
    assert_eq!(
        landings(&placement(json!({})), &c),
        ["linux/amd64 x1", "linux/arm64 x2"]
    );
    let tolerate = json!({"tolerations": [{"key": "maintenance", "operator": "Exists"}]});
    assert_eq!(
        landings(&placement(tolerate), &c),
        ["linux/amd64 x2", "linux/arm64 x2"]
    );
}

fn pool(
    name: &str,
    template_labels: &[(&str, &str)],
    requirements: &[(&str, &str, &[&str])],
    taints: Vec<Taint>,
) -> PoolFacts {
    PoolFacts {
        name: name.to_owned(),
        labels: labels(template_labels),
        requirements: requirements
            .iter()
            .map(|(k, op, v)| {
                Requirement::new(k, op, v.iter().map(|s| (*s).to_owned()).collect())
                    .expect("operator")
            })
            .collect(),
        taints,
    }
}

#[test]
fn nodepool_templates_count_as_nodes_to_come() {
    let c = Cluster {
        nodes: vec![node("a1", "linux", "amd64", &[], vec![])],
        pools: vec![
            pool(
                "general",
                &[],
                &[
                    ("kubernetes.io/arch", "In", &["amd64", "arm64"]),
                    ("karpenter.sh/capacity-type", "In", &["spot", "on-demand"]),
                ],
                vec![],
            ),
            pool(
                "graviton",
                &[("team", "a")],
                &[("kubernetes.io/arch", "In", &["arm64"])],
                vec![],
            ),
            pool(
                "gpu",
                &[],
                &[("kubernetes.io/arch", "In", &["amd64"])],
                vec![taint("nvidia.com/gpu", "true", TaintEffect::NoSchedule)],
            ),
            pool("unconstrained", &[], &[], vec![]),
            pool(
                "windows",
                &[],
                &[
                    ("kubernetes.io/os", "In", &["windows"]),
                    ("kubernetes.io/arch", "In", &["amd64"]),
                ],
                vec![taint("os", "windows", TaintEffect::NoSchedule)],
            ),
        ],
    };
    let cases: Vec<(&str, Value, Vec<&str>)> = vec![
        (
            "no rules: the untainted pools, either arch when unconstrained",
            json!({}),
            vec![
                "linux/amd64 x1 [general,unconstrained]",
                "linux/arm64 x0 [general,graviton,unconstrained]",
            ],
        ),
        (
            "a label only a template sets",
            json!({"nodeSelector": {"team": "a"}}),
            vec!["linux/arm64 x0 [graviton]"],
        ),
        (
            "a label Karpenter sets (capacity type; the existing node has none)",
            json!({"nodeSelector": {"karpenter.sh/capacity-type": "spot", "kubernetes.io/arch": "amd64"}}),
            vec!["linux/amd64 x0 [general,unconstrained]"],
        ),
        (
            "a capacity type the pool's requirement excludes",
            json!({"nodeSelector": {"karpenter.sh/capacity-type": "reserved"}}),
            vec![
                "linux/amd64 x0 [unconstrained]",
                "linux/arm64 x0 [graviton,unconstrained]",
            ],
        ),
        (
            "a zone (set by Karpenter; the existing node has none)",
            json!({"nodeSelector": {"topology.kubernetes.io/zone": "us-east-1a"}}),
            vec![
                "linux/amd64 x0 [general,unconstrained]",
                "linux/arm64 x0 [general,graviton,unconstrained]",
            ],
        ),
        (
            "the gpu taint tolerated",
            json!({"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}], "nodeSelector": {"kubernetes.io/arch": "amd64"}}),
            vec!["linux/amd64 x1 [general,gpu,unconstrained]"],
        ),
        (
            "windows pods tolerate the windows pool",
            json!({"nodeSelector": {"kubernetes.io/os": "windows"}, "tolerations": [{"key": "os", "value": "windows", "effect": "NoSchedule"}]}),
            vec!["windows/amd64 x0 [windows]"],
        ),
        (
            "affinity NotIn on arch",
            affinity(
                json!([{"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "NotIn", "values": ["arm64"]}]}]),
            ),
            vec!["linux/amd64 x1 [general,unconstrained]"],
        ),
    ];
    for (name, spec, want) in cases {
        assert_eq!(landings(&placement(spec), &c), want, "{name}");
    }
}

#[test]
fn what_is_behind_a_platform_reads_as_a_sentence() {
    let c = Cluster {
        nodes: (0..3)
            .map(|i| node(&format!("g{i}"), "linux", "arm64", &[], vec![]))
            .collect(),
        pools: vec![pool(
            "general",
            &[],
            &[("kubernetes.io/arch", "In", &["arm64"])],
            vec![],
        )],
    };
    let l = landable(&placement(json!({})), &c);
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].behind(), "3 nodes, NodePool general");
    let one = Cluster {
        nodes: vec![node("g", "linux", "arm64", &[], vec![])],
        pools: Vec::new(),
    };
    assert_eq!(landable(&placement(json!({})), &one)[0].behind(), "1 node");
}

#[test]
fn unknown_operators_make_a_term_unmeetable() {
    let spec = affinity(
        json!([{"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "Near", "values": ["arm64"]}]}]),
    );
    assert!(landings(&placement(spec), &cluster()).is_empty());
    assert!(Requirement::new("k", "Near", vec![]).is_none());
}

#[test]
fn answers_are_kept_until_a_node_or_pool_really_changes() {
    use ecr_preflight::platforms::ClusterFacts;
    use std::sync::Arc;
    let facts = ClusterFacts::new();
    let any = placement(json!({}));
    assert!(
        facts.landable(&any).is_none(),
        "unknown before the Nodes are listed"
    );
    let a1 = node("a1", "linux", "amd64", &[], vec![]);
    facts.nodes_listed([("a1".to_owned(), a1.clone())].into_iter().collect());
    let first = facts.landable(&any).expect("listed");
    // The same labels and taints again (a status update): the answer is kept.
    facts.node("a1", Some(a1));
    let again = facts.landable(&any).expect("listed");
    assert!(
        Arc::ptr_eq(&first, &again),
        "kept across an update that changes nothing"
    );
    // A new arm64 node: answered afresh.
    facts.node("g1", Some(node("g1", "linux", "arm64", &[], vec![])));
    let after = facts.landable(&any).expect("listed");
    assert_eq!(after.len(), 2, "{after:?}");
    facts.node("g1", None);
    assert_eq!(facts.landable(&any).expect("listed").len(), 1);
}

#[test]
fn a_pod_bound_to_a_node_lands_on_that_node_only() {
    let c = cluster();
    // Bound to the Windows node: it runs there, taint or no toleration (it is already
    // bound; the scheduler's rules no longer apply).
    let bound = placement(json!({"nodeName": "w1"}));
    assert_eq!(landings(&bound, &c), ["windows/amd64 x1"]);
    let l = &landable(&bound, &c)[0];
    assert_eq!(l.bound.as_deref(), Some("w1"));
    assert_eq!(l.behind(), "node w1");
    assert_eq!(
        landings(&placement(json!({"nodeName": "g2"})), &c),
        ["linux/arm64 x1"]
    );
    // A node not known: the cluster's set, as for an unbound pod.
    assert_eq!(
        landings(&placement(json!({"nodeName": "ghost"})), &c),
        landings(&placement(json!({})), &c)
    );
}
