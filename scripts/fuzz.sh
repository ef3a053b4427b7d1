#!/usr/bin/env bash
# Runs each cargo-fuzz target for FUZZ_SECONDS (default 60) on the corpus kept in
# fuzz/corpus/. The machine has only the stable toolchain; cargo fuzz passes -Z flags, so
# RUSTC_BOOTSTRAP=1 lets stable accept them. Crashes land in fuzz/artifacts/<target>/;
# each one found becomes a regression test under tests/.
#   bash scripts/fuzz.sh [TARGET ...]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
seconds="${FUZZ_SECONDS:-60}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(reference manifest admission)
# The fuzz build has its own flags, so its own target directory.
unset CARGO_TARGET_DIR
fuzz_target_dir="${FUZZ_TARGET_DIR:-$ROOT/fuzz/target}"
for target in "${targets[@]}"; do
    echo "==> fuzzing $target for ${seconds}s" >&2
    RUSTC_BOOTSTRAP=1 cargo fuzz run --target-dir "$fuzz_target_dir" "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1
done
