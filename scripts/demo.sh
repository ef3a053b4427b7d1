#!/usr/bin/env bash
# End to end with no AWS account: start the ECR API emulator, seed one intact and one
# broken image, start the webhook, post sample AdmissionReviews, print each decision.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

work="$(mktemp -d)"
cleanup() {
    [ -n "${SERVER_PID:-}" ] && kill "$SERVER_PID" 2>/dev/null || true
    [ -n "${MOTO_PID:-}" ] && kill "$MOTO_PID" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "==> building ecr-preflight" >&2
cargo build --locked --quiet --bin ecr-preflight --example seed_demo

start_moto
echo "==> ECR emulator (moto) at $MOTO_ENDPOINT" >&2
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true

echo "==> seeding ECR: demo/shop:1.0 (intact), demo/shop:1.1 (a layer missing)" >&2
"$CARGO_TARGET_DIR/debug/examples/seed_demo" "$MOTO_ENDPOINT" "$work"

port="$(free_port)"
admin="$(free_port)"
"$CARGO_TARGET_DIR/debug/ecr-preflight" serve --insecure-self-signed \
    --listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$admin" \
    --ecr-endpoint-url "$MOTO_ENDPOINT" --mode enforce 2>"$work/server.log" &
SERVER_PID=$!
wait_port "$admin"
until curl -fsS "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1; do sleep 0.1; done
echo "==> webhook on https://127.0.0.1:$port (enforce mode)" >&2

for review in "$work"/reviews/*.json; do
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
printf '\n==> the webhook logged one line per decision:\n'
grep "admission decision" "$work/server.log" || true
