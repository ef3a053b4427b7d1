#!/usr/bin/env bash
# Checks the Helm chart, the rendered manifests and the Dockerfile:
#   helm lint --strict (default values and every feature on), the renderings validated
#   against Kubernetes 1.31 and 1.34 schemas (strict), chart assertions for the kinds
#   without schemas, the PrometheusRule's alerts (promtool check rules, and promtool test
#   rules with series as the product exports them through the ServiceMonitor),
#   manifests/ecr-preflight.yaml up to date, hadolint.
# With --update, rewrites manifests/ecr-preflight.yaml instead of checking it.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"
ensure_helm
ensure_chart_tools
ensure_promtool
chart=charts/ecr-preflight
all="$chart/ci/all-features-values.yaml"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$HELM" lint --strict "$chart"
"$HELM" lint --strict "$chart" -f "$all"
"$HELM" template t "$chart" -n ecr-preflight >"$work/default.yaml"
"$HELM" template t "$chart" -n ecr-preflight -f "$all" >"$work/all.yaml"
for version in 1.31.0 1.34.0; do
    for rendering in default all; do
        echo "==> kubernetes-validate $version $rendering" >&2
        "$VENV/bin/kubernetes-validate" -k "$version" --strict --quiet "$work/$rendering.yaml"
    done
done
"$VENV/bin/python" "$chart/ci/assert_rendered.py" "$work/default.yaml" "$work/all.yaml"

# The alerts as Prometheus reads them: the rendered PrometheusRule's groups, checked, then
# unit-tested (charts/ecr-preflight/ci/alerts_test.yaml) with the default values and with
# every feature on (another `for` and warning window).
for rendering in default all; do
    values=()
    [ "$rendering" = all ] && values=(-f "$all")
    mkdir -p "$work/alerts-$rendering"
    "$HELM" template t "$chart" -n ecr-preflight "${values[@]}" --set prometheusRule.enabled=true \
        --show-only templates/prometheusrule.yaml >"$work/alerts-$rendering/rule.yaml"
    "$VENV/bin/python" - "$work/alerts-$rendering/rule.yaml" "$work/alerts-$rendering/rules.yaml" <<'PY'
import sys, yaml
rule = yaml.safe_load(open(sys.argv[1]))
yaml.safe_dump({"groups": rule["spec"]["groups"]}, open(sys.argv[2], "w"), sort_keys=False)
PY
    promtool check rules "$work/alerts-$rendering/rules.yaml"
    cp "$chart/ci/alerts_test_$rendering.yaml" "$work/alerts-$rendering/test.yaml"
    promtool test rules "$work/alerts-$rendering/test.yaml"
done

# The example IAM policies name exactly the actions the code calls (the all-features one),
# and the default one only the read actions of what is on by default.
"$VENV/bin/python" - "$chart/examples" src/registry/ecr <<'PY'
import json, pathlib, re, sys
examples, sources = sys.argv[1], pathlib.Path(sys.argv[2])
def actions(name):
    policy = json.load(open(f"{examples}/{name}"))
    return {a for s in policy["Statement"] for a in s["Action"]}
called = {a for f in sorted(sources.glob("*.rs"))
          for a in re.findall(r'"(ecr:[A-Za-z]+)"', f.read_text())}
everything = actions("iam-policy-all-features.json")
assert everything == called, f"policy {sorted(everything)} != code {sorted(called)}"
default = actions("iam-policy.json")
assert default == {"ecr:BatchGetImage", "ecr:BatchCheckLayerAvailability",
                   "ecr:GetLifecyclePolicy", "ecr:DescribeImages",
                   "ecr:GetAuthorizationToken", "ecr:DescribePullThroughCacheRules"}, sorted(default)
print("IAM examples: the code's", len(called), "actions")
PY

# The plain manifests: the chart with cert-manager certificates (Helm's generated keys
# change on every render and must never be committed).
render_manifests() {
    {
        echo "# Rendered from charts/ecr-preflight by scripts/chart.sh --update; do not edit."
        echo "# Needs cert-manager. Apply: kubectl create namespace ecr-preflight && kubectl apply -f manifests/ecr-preflight.yaml"
        "$HELM" template ecr-preflight "$chart" -n ecr-preflight --set certManager.enabled=true
    }
}
if [ "${1:-}" = "--update" ]; then
    mkdir -p manifests
    render_manifests >manifests/ecr-preflight.yaml
    echo "==> manifests/ecr-preflight.yaml updated" >&2
elif ! diff -u manifests/ecr-preflight.yaml <(render_manifests) >"$work/manifests.diff"; then
    cat "$work/manifests.diff" >&2
    echo "manifests/ecr-preflight.yaml is stale: run bash scripts/chart.sh --update" >&2
    exit 1
fi
if grep -q "BEGIN .*PRIVATE KEY\|tls.key:" manifests/ecr-preflight.yaml; then
    echo "manifests/ecr-preflight.yaml carries a private key" >&2
    exit 1
fi

"$VENV/bin/hadolint" --failure-threshold warning Dockerfile
echo "==> chart, manifests and Dockerfile: ok" >&2
