#!/usr/bin/env bash
# End to end with no AWS account: start the ECR API emulator, seed one intact and one
# broken image, start a stand-in Kubernetes API server with a Deployment and a CronJob on
# them, start the webhook with its controller (serve --watch), post sample AdmissionReviews
# and print each decision, for ECR's images and for a second registry's (docker-registry on
# loopback, as Docker Hub or a private Harbor would be); then show the controller's
# inventory; post a pod that may land on
# the cluster's Graviton NodePool with an amd64-only image (its platform read from its config
# blob, served by a real OCI registry on loopback); put a lifecycle policy and show its
# forecast; delete the Deployment's image from ECR, and show the controller noticing
# (inventory, Events, report).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

work="$(mktemp -d)"
cleanup() {
    [ -n "${SERVER_PID:-}" ] && kill "$SERVER_PID" 2>/dev/null || true
    [ -n "${CLUSTER_PID:-}" ] && kill "$CLUSTER_PID" 2>/dev/null || true
    [ -n "${MOTO_PID:-}" ] && kill "$MOTO_PID" 2>/dev/null || true
    [ -n "${REGISTRY_PID:-}" ] && kill "$REGISTRY_PID" 2>/dev/null || true
    [ -n "${OTHER_PID:-}" ] && kill "$OTHER_PID" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "==> building ecr-preflight" >&2
cargo build --locked --quiet --bin ecr-preflight --example seed_demo --example demo_cluster

start_moto
echo "==> ECR emulator (moto) at $MOTO_ENDPOINT" >&2
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true

# A registry other than ECR's, anonymous as Docker Hub's public images are: one intact
# image, and one whose layer the registry's storage lost.
start_registry "" "" "$work/other"
OTHER_PID=$REGISTRY_PID OTHER_CA=$REGISTRY_CA
other_host="${REGISTRY_URL#https://}"
mapfile -t intact_other < <(push_image tools/cli 1.0)
mapfile -t broken_other < <(push_image tools/cli 1.1)
[ "${#intact_other[@]}" -eq 4 ] && [ "${#broken_other[@]}" -eq 4 ] || { echo "pushing to the second registry failed" >&2; exit 1; }
lose_blob "$work/other" "${broken_other[2]}"
echo "==> a second registry (docker-registry, TLS, anonymous pulls) at $other_host:" >&2
echo "    tools/cli:1.0 (intact), tools/cli:1.1 (layer ${broken_other[2]:0:19}... lost from its storage)" >&2

echo "==> seeding ECR: demo/shop:1.0 (intact), demo/shop:1.1 (a layer missing)" >&2
"$CARGO_TARGET_DIR/debug/examples/seed_demo" "$MOTO_ENDPOINT" "$work" \
    "$other_host/tools/cli:1.0" "${intact_other[0]}" "$other_host/tools/cli:1.1"

# ECR's registry API (where nodes pull from) for the images' config blobs: docker-registry
# accepting the Basic credentials of the emulator's GetAuthorizationToken.
registry_user=AWS registry_password=123456789012-auth-token
start_registry "$registry_user" "$registry_password" "$work/registry"
push_configs "$work" "$registry_user" "$registry_password"
echo "==> OCI registry (docker-registry, TLS + htpasswd) at $REGISTRY_URL: the images' config blobs" >&2

"$CARGO_TARGET_DIR/debug/examples/demo_cluster" "$work" >"$work/cluster.url" &
CLUSTER_PID=$!
until [ -s "$work/cluster.url" ]; do sleep 0.1; done
api="$(cat "$work/cluster.url")"
export KUBECONFIG="$work/kubeconfig"
echo "==> stand-in Kubernetes API server at $api: Deployment shop/web on demo/shop:1.0, Deployment shop/tools on" >&2
echo "    $other_host/tools/cli:1.0, CronJob shop/nightly on demo/shop:1.1," >&2
echo "    two linux/amd64 Nodes, a Karpenter NodePool 'graviton' (arm64, tainted arch=arm64:NoSchedule)" >&2

port="$(free_port)"
admin="$(free_port)"
"$CARGO_TARGET_DIR/debug/ecr-preflight" serve --insecure-self-signed \
    --listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$admin" \
    --ecr-endpoint-url "$MOTO_ENDPOINT" --mode enforce \
    --ecr-registry-url "$REGISTRY_URL" --ecr-registry-ca-file "$REGISTRY_CA" \
    --registry-ca-file "$OTHER_CA" \
    --watch --recheck-interval 4s --lease-namespace ecr-preflight 2>"$work/server.log" &
SERVER_PID=$!
wait_port "$admin"
until curl -fsS "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1; do sleep 0.1; done
echo "==> webhook on https://127.0.0.1:$port (enforce mode), controller re-verifying every 4s" >&2

post_reviews() {
    local review name path
    for review in "$1"/*.json; do
        name="$(basename "$review" .json)"
        path="/validate"
        case "$name" in *warn*) path="/validate/warn" ;; esac
        printf '\n--- %s  (POST %s)\n' "$name" "$path"
        curl -sS -k -H 'content-type: application/json' --data-binary @"$review" \
            "https://127.0.0.1:$port$path?timeout=10s" |
            python3 -c '
import json, sys
r = json.load(sys.stdin)["response"]
print("allowed:", r["allowed"])
if not r["allowed"]:
    print("message:", r["status"]["message"])
for w in r.get("warnings") or []:
    print("warning:", w)
'
    done
}
post_reviews "$work/reviews"
printf '\n==> images of the second registry are checked as deeply (--registries, default all):\n'
post_reviews "$work/other-registry-reviews"
printf '\n==> the webhook logged one line per decision:\n'
grep "admission decision" "$work/server.log" || true

inventory() {
    curl -fsS "http://127.0.0.1:$admin/inventory" | python3 -c '
import json, sys
for w in json.load(sys.stdin)["workloads"]:
    for c in w["containers"]:
        line = "/".join((w["namespace"], w["kind"], w["name"])) + "  " + c["name"] + ": " + c["outcome"]
        print(line + ("  (" + c["problem"] + ")" if c["problem"] else ""))
        if c.get("expires_at"):
            r = c["expiry_rule"]
            print("    lifecycle rule %d (%s) will %s it at %s" % (r["priority"], r["description"], c["expiry_action"], c["expires_at"]))
'
}
outcome_of() {
    curl -fsS "http://127.0.0.1:$admin/inventory" | python3 -c '
import json, sys
print(next((c["outcome"] for w in json.load(sys.stdin)["workloads"] if w["name"] == sys.argv[1] for c in w["containers"]), ""))' "$1"
}

printf '\n==> the controller verified every image the cluster runs (GET /inventory):\n'
until [ "$(outcome_of web)" = "ok" ] && [ "$(outcome_of tools)" = "ok" ]; do sleep 0.2; done
inventory

platforms_of_web() {
    curl -fsS "http://127.0.0.1:$admin/inventory" | python3 -c '
import json, sys
print(", ".join(next((w["platforms"] for w in json.load(sys.stdin)["workloads"] if w["name"] == "web"), [])))'
}
until [ -n "$(platforms_of_web)" ]; do sleep 0.2; done
printf '\n==> the Nodes and NodePools say where each pod can land; shop/web: %s\n' "$(platforms_of_web)"
printf '==> a pod tolerating the Graviton taint may land on arm64; demo/shop:1.0 is amd64 only (its config blob says):\n'
post_reviews "$work/platform-reviews"
grep "admission decision" "$work/server.log" | tail -n 2 || true

printf '\n==> putting a lifecycle policy on demo/shop: expire every image 5 days after its push\n'
"$VENV/bin/python" - "$MOTO_ENDPOINT" <<'PY'
import json, sys, boto3
ecr = boto3.client("ecr", endpoint_url=sys.argv[1], region_name="us-east-1")
ecr.put_lifecycle_policy(repositoryName="demo/shop", lifecyclePolicyText=json.dumps({"rules": [
    {"rulePriority": 1, "description": "five days at most", "selection": {"tagStatus": "any",
     "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 5}, "action": {"type": "expire"}}]}))
PY
expiry_of_web() {
    curl -fsS "http://127.0.0.1:$admin/inventory" | python3 -c '
import json, sys
print(next((c["expires_at"] or "" for w in json.load(sys.stdin)["workloads"] if w["name"] == "web" for c in w["containers"]), ""))'
}
until [ -n "$(expiry_of_web)" ]; do sleep 0.2; done
printf '==> the next pass forecasts it for the images in use (within the 7-day warning: an ImageExpiring Event):\n'
inventory

printf '\n==> deleting demo/shop:1.0 from ECR (BatchDeleteImage), as a lifecycle policy would\n'
"$VENV/bin/python" - "$MOTO_ENDPOINT" <<'PY'
import sys, boto3
ecr = boto3.client("ecr", endpoint_url=sys.argv[1], region_name="us-east-1")
ecr.batch_delete_image(repositoryName="demo/shop", imageIds=[{"imageTag": "1.0"}])
PY
until [ "$(outcome_of web)" = "not_found" ]; do sleep 0.2; done
printf '==> within one interval, the inventory says so:\n'
inventory
printf '\n==> and the controller posted Warning Events (events.k8s.io/v1), once each: the forecast, then the breakage:\n'
curl -fsS "$api/apis/events.k8s.io/v1/namespaces/shop/events" | python3 -c '
import json, sys
for e in json.load(sys.stdin)["items"]:
    print(e["type"], e["reason"], e["regarding"]["kind"] + "/" + e["regarding"]["name"] + ":", e["note"])'

printf '\n==> ecr-preflight report (one list of the cluster, verified once; exit 1: an image in use is broken):\n'
set +e
"$CARGO_TARGET_DIR/debug/ecr-preflight" report --ecr-endpoint-url "$MOTO_ENDPOINT" \
    --ecr-registry-url "$REGISTRY_URL" --ecr-registry-ca-file "$REGISTRY_CA" \
    --registry-ca-file "$OTHER_CA" 2>/dev/null
echo "exit code: $?"
set -e
