#!/usr/bin/env bash
# The controller at scale (benches/watch_bench.rs): REPOS repositories of 4 images, each run by
# 5 Pods (default 500: 10,000 Pods, 2,000 images; 5000: 100,000 Pods, 20,000 images).
# Usage: [INTERVAL=seconds] bash benches/watch.sh [REPOS]
# INTERVAL (default 20): the pass's interval, and the length of each load phase.
set -euo pipefail
. "$(dirname "$0")/../scripts/lib.sh"
cd "$ROOT"
cargo build --locked --release --quiet --example watch_bench
"$CARGO_TARGET_DIR/release/examples/watch_bench" "${INTERVAL:-20}" "${1:-500}"
