#!/usr/bin/env bash
# The controller at scale: 10,000 Pods, 2,000 images, 500 repositories (benches/watch_bench.rs).
# INTERVAL (seconds, default 20): the pass's interval, and the length of each load phase.
set -euo pipefail
. "$(dirname "$0")/../scripts/lib.sh"
cd "$ROOT"
cargo build --locked --release --quiet --example watch_bench
"$CARGO_TARGET_DIR/release/examples/watch_bench" "${INTERVAL:-20}"
