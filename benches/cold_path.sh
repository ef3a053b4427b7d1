#!/usr/bin/env bash
# The first admission of a never-seen image: decision time against the time inside ECR calls,
# with RTT_MS (default 25) added to every call by a proxy (see benches/cold_path.rs).
#
#   bash benches/cold_path.sh            # RTT_MS=25 IMAGES=15
set -euo pipefail
. "$(dirname "$0")/../scripts/lib.sh"
cd "$ROOT"
cargo build --locked --release --quiet --example cold_path
start_moto
trap 'kill "$MOTO_PID" 2>/dev/null || true' EXIT
"$CARGO_TARGET_DIR/release/examples/cold_path" "$MOTO_ENDPOINT" "${RTT_MS:-25}" "${IMAGES:-15}"
