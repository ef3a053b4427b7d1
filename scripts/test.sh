#!/usr/bin/env bash
# Runs the whole test suite: unit tests, and integration tests against the ECR API
# emulator, which this script installs (once, into .venv-test) and starts, and an OCI
# registry (docker-registry, installed with apt when missing; each test starts its own).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_registry
start_moto
log="$(mktemp)"
trap 'kill "$MOTO_PID" 2>/dev/null || true; rm -f "$log"' EXIT
export ECR_PREFLIGHT_TEST_ECR_ENDPOINT="$MOTO_ENDPOINT"
echo "==> ECR emulator at $MOTO_ENDPOINT" >&2
status=0
cargo test --locked --all-targets "$@" 2>&1 | tee "$log" || status=$?
# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
