"""Chart tests: key fields of rendered objects, including the kinds (cert-manager,
ServiceMonitor) for which kubernetes-validate has no schema.

Usage: assert_rendered.py DEFAULT.yaml ALL_FEATURES.yaml
"""
import sys

import yaml


def load(path):
    with open(path) as f:
        return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(f) if d}


def one(objs, kind):
    found = [o for (k, _), o in objs.items() if k == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def check_default(objs):
    kinds = sorted(k for k, _ in objs)
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Deployment", "PodDisruptionBudget", "Role",
                     "RoleBinding", "Secret", "Service", "ServiceAccount",
                     "ValidatingWebhookConfiguration"], kinds
    dep = one(objs, "Deployment")
    spec = dep["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    c = pod["containers"][0]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert "--mode=warn" in c["args"] and "--timeout=3s" in c["args"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert "--watch" in c["args"] and "--recheck-interval=900s" in c["args"]
    assert "--lease-namespace=ecr-preflight" in c["args"] and "--lease-duration=15s" in c["args"]
    assert "--expiry-warning=604800s" in c["args"], "a week by default"
    assert "--lifecycle-forecast=true" in c["args"]
    assert "--lifecycle-preview=false" in c["args"] and "--restore-archived-in-use=false" in c["args"]
    assert "--registries=all" in c["args"] and "--read-pull-secrets=false" in c["args"]
    assert "--pin-digests=false" in c["args"]
    assert pod["automountServiceAccountToken"] is True, "the controller reads the cluster"
    assert {e["name"] for e in c["env"]} >= {"POD_NAME", "POD_NAMESPACE"}
    check_rbac(objs)
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {t["topologyKey"] for t in pod["topologySpreadConstraints"]} == {
        "topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    secret = one(objs, "Secret")
    vwc = one(objs, "ValidatingWebhookConfiguration")
    hooks = vwc["webhooks"]
    assert [h["name"] for h in hooks] == ["validate.ecr-preflight.io"]
    h = hooks[0]
    assert h["clientConfig"]["caBundle"] == secret["data"]["ca.crt"], "caBundle must be the CA that signed tls.crt"
    assert h["timeoutSeconds"] == 5 and h["failurePolicy"] == "Ignore"
    assert h["admissionReviewVersions"] == ["v1"] and h["sideEffects"] == "None"
    excluded = h["namespaceSelector"]["matchExpressions"][0]
    assert excluded["operator"] == "NotIn" and set(excluded["values"]) == {"ecr-preflight", "kube-system"}
    resources = {r for rule in h["rules"] for r in rule["resources"]}
    assert resources == {"pods", "pods/ephemeralcontainers", "replicationcontrollers", "deployments",
                         "statefulsets", "daemonsets", "replicasets", "jobs", "cronjobs"}, resources
    assert all(rule["operations"] == ["CREATE", "UPDATE"] for rule in h["rules"])


def check_rbac(objs):
    """Least privilege: read the workload kinds, Nodes and NodePools, write Events, and only its own Lease."""
    cr = one(objs, "ClusterRole")
    verbs = {(g, r): tuple(rule["verbs"]) for rule in cr["rules"] for g in rule["apiGroups"]
             for r in rule["resources"]}
    read = ("get", "list", "watch")
    assert verbs == {("", "pods"): read, ("", "replicationcontrollers"): read,
                     ("apps", "deployments"): read, ("apps", "statefulsets"): read,
                     ("apps", "daemonsets"): read, ("apps", "replicasets"): read,
                     ("batch", "jobs"): read, ("batch", "cronjobs"): read,
                     ("", "nodes"): read, ("karpenter.sh", "nodepools"): read,
                     ("events.k8s.io", "events"): ("create", "patch")}, verbs
    role = one(objs, "Role")
    assert role["metadata"]["namespace"] == "ecr-preflight"
    named = [r for r in role["rules"] if r.get("resourceNames")]
    assert named == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                      "resourceNames": ["ecr-preflight-watch"], "verbs": ["get", "update", "patch"]}]
    unnamed = [r for r in role["rules"] if not r.get("resourceNames")]
    assert [r["verbs"] for r in unnamed] == [["create"]]
    for binding in ("ClusterRoleBinding", "RoleBinding"):
        subject = one(objs, binding)["subjects"][0]
        assert subject["name"] == one(objs, "ServiceAccount")["metadata"]["name"]


def check_all_features(objs):
    cert = one(objs, "Certificate")
    issuer = one(objs, "Issuer")
    assert cert["apiVersion"] == "cert-manager.io/v1" and issuer["apiVersion"] == "cert-manager.io/v1"
    assert cert["spec"]["secretName"] == "t-ecr-preflight-tls"
    assert cert["spec"]["issuerRef"] == {"kind": "Issuer", "name": issuer["metadata"]["name"]}
    assert "t-ecr-preflight.ecr-preflight.svc" in cert["spec"]["dnsNames"]
    assert "spec" in issuer and "selfSigned" in issuer["spec"]
    assert not [k for k, _ in objs if k == "Secret"], "cert-manager owns the Secret"
    vwc = one(objs, "ValidatingWebhookConfiguration")
    assert vwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == "ecr-preflight/t-ecr-preflight"
    hooks = {h["name"]: h for h in vwc["webhooks"]}
    assert set(hooks) == {"validate.ecr-preflight.io", "enforce.ecr-preflight.io", "audit.ecr-preflight.io"}
    assert hooks["enforce.ecr-preflight.io"]["clientConfig"]["service"]["path"] == "/validate/enforce"
    assert {"key": "ecr-preflight.io/mode", "operator": "In", "values": ["audit"]} in \
        hooks["audit.ecr-preflight.io"]["namespaceSelector"]["matchExpressions"]
    assert {"key": "ecr-preflight.io/mode", "operator": "NotIn", "values": ["enforce", "audit"]} in \
        hooks["validate.ecr-preflight.io"]["namespaceSelector"]["matchExpressions"]
    assert all("caBundle" not in h["clientConfig"] for h in hooks.values())
    assert all(h["failurePolicy"] == "Fail" and h["matchConditions"] for h in hooks.values())
    sm = one(objs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    assert sm["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s",
                                        "honorLabels": True}]
    assert sm["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == "ecr-preflight"
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod["priorityClassName"] == "system-cluster-critical"
    ports = {p["name"]: p["containerPort"] for p in pod["containers"][0]["ports"]}
    assert ports == {"webhook": 10443, "metrics": 10090}
    assert "--listen=[::]:10443" in pod["containers"][0]["args"]
    sa = one(objs, "ServiceAccount")
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    args = pod["containers"][0]["args"]
    assert "--watch-namespaces=shop,payments" in args and "--exclude-namespaces=kube-system" in args
    assert "--workload-metrics=false" in args and "--recheck-interval=600s" in args
    assert "--expiry-warning=1209600s" in args
    assert "--ecr-registry-url=https://123456789012.dkr.ecr.us-east-1.amazonaws.com" in args
    assert "--lifecycle-preview=true" in args and "--restore-archived-in-use=true" in args
    rule = one(objs, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(alerts) == {"ImageUnavailable", "ImageReverificationStalled", "ImageExpiringSoon"}, alerts
    assert "ecr_preflight_workload_image_expiry_timestamp_seconds" in alerts["ImageExpiringSoon"]["expr"]
    assert alerts["ImageExpiringSoon"]["expr"].endswith("< 1209600"), "the warning of the values"
    assert alerts["ImageUnavailable"]["for"] == "15m"
    assert "> 1200" in alerts["ImageReverificationStalled"]["expr"], "two intervals of 600 s"
    dash = one(objs, "ConfigMap")
    assert dash["metadata"]["labels"]["grafana_dashboard"] == "1"
    import json
    titles = [p["title"] for p in json.loads(dash["data"]["ecr-preflight.json"])["panels"]]
    assert {"Images in use by outcome", "Broken workloads", "ECR calls by source",
            "Images in use a lifecycle rule will expire or archive"} <= set(titles), titles
    assert "--read-pull-secrets=true" in args and "--pin-digests=true" in args
    mwc = one(objs, "MutatingWebhookConfiguration")
    assert mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == "ecr-preflight/t-ecr-preflight"
    [pin] = mwc["webhooks"]
    assert pin["clientConfig"]["service"]["path"] == "/mutate"
    assert pin["failurePolicy"] == "Ignore" and pin["reinvocationPolicy"] == "IfNeeded"
    assert pin["sideEffects"] == "None" and pin["matchConditions"]
    assert [(r["operations"], r["resources"]) for r in pin["rules"]] == [
        (["CREATE"], ["pods"]), (["UPDATE"], ["pods/ephemeralcontainers"])], pin["rules"]
    assert pin["namespaceSelector"] == hooks["validate.ecr-preflight.io"]["namespaceSelector"] or \
        {"key": "environment", "operator": "In", "values": ["prod", "staging"]} in \
        pin["namespaceSelector"]["matchExpressions"]
    pulling = objs[("ClusterRole", "t-ecr-preflight-pull-secrets")]
    assert pulling["rules"] == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}], \
        "get on Secrets only: never list or watch"
    binding = objs[("ClusterRoleBinding", "t-ecr-preflight-pull-secrets")]
    assert binding["roleRef"]["name"] == "t-ecr-preflight-pull-secrets"
    assert binding["subjects"][0]["name"] == sa["metadata"]["name"]
    np = one(objs, "NetworkPolicy")
    assert [r["ports"][0]["port"] for r in np["spec"]["ingress"]] == ["webhook", "metrics"]


if __name__ == "__main__":
    check_default(load(sys.argv[1]))
    check_all_features(load(sys.argv[2]))
    print("chart assertions: 2 passed, 0 failed")
