#!/usr/bin/env bash
# Peak RSS of the webhook process idle, and of an engine holding 100,000 cached blob entries.
set -euo pipefail
. "$(dirname "$0")/../scripts/lib.sh"
cd "$ROOT"
cargo build --locked --release --quiet --bin ecr-preflight --example memory_footprint
bin="$CARGO_TARGET_DIR/release"
port="$(free_port)"; admin="$(free_port)"
AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_EC2_METADATA_DISABLED=true \
    "$bin/ecr-preflight" serve --insecure-self-signed --listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$admin" 2>/dev/null &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT
wait_port "$admin"; sleep 1
echo "ecr-preflight serve, idle: $(grep -E 'VmRSS|VmHWM' "/proc/$pid/status" | tr -s ' \n' ' ')"
"$bin/examples/memory_footprint" 100 1000
