#!/usr/bin/env bash
# Cold path and storm benchmarks against the ECR API emulator (see benches/emulator_bench.rs).
set -euo pipefail
. "$(dirname "$0")/../scripts/lib.sh"
cd "$ROOT"
cargo build --locked --release --quiet --example emulator_bench
start_moto
trap 'kill "$MOTO_PID" 2>/dev/null || true' EXIT
"$CARGO_TARGET_DIR/release/examples/emulator_bench" "$MOTO_ENDPOINT"
