#!/usr/bin/env bash
# Runs the whole test suite: unit tests, and integration tests against the ECR API
# emulator, which this script installs (once, into .venv-test) and starts.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

start_moto
trap 'kill "$MOTO_PID" 2>/dev/null || true' EXIT
export ECR_PREFLIGHT_TEST_ECR_ENDPOINT="$MOTO_ENDPOINT"
echo "==> ECR emulator at $MOTO_ENDPOINT" >&2
cargo test --locked --all-targets "$@"
