#!/usr/bin/env bash
# Two builds of the webhook side by side on the warm path: the same cached review posted to
# each in interleaved rounds, so that a shared machine's drift falls on both alike. Prints
# each round's server CPU per request and the medians. For judging a change to the hot path
# (docs/performance.md), where one warm_path.sh run against another is too noisy.
#
#   bash benches/warm_ab.sh A_BINARY B_BINARY     # needs h2load (Debian: nghttp2-client)
#
# Env: REQUESTS (default 40000), CLIENTS (16), STREAMS (16), ROUNDS (8), PROTOS ("h1 h2"),
# REVIEW (as for warm_path.sh). Both servers on CPU 1 and h2load on CPU 0.
set -euo pipefail
. "$(dirname "$0")/../scripts/lib.sh"
cd "$ROOT"
[ $# -eq 2 ] || { echo "usage: $0 A_BINARY B_BINARY" >&2; exit 2; }
command -v h2load >/dev/null || { echo "h2load not found: apt-get install nghttp2-client" >&2; exit 2; }
a_bin="$(realpath "$1")" b_bin="$(realpath "$2")"
REQUESTS="${REQUESTS:-40000}" CLIENTS="${CLIENTS:-16}" STREAMS="${STREAMS:-16}" ROUNDS="${ROUNDS:-8}"
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

cargo build --locked --release --quiet --example bench_seed
start_moto; pids+=("$MOTO_PID")
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_EC2_METADATA_DISABLED=true
"$CARGO_TARGET_DIR/release/examples/bench_seed" "$MOTO_ENDPOINT"
python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1])), separators=(",", ":")))' \
    "${REVIEW:-tests/fixtures/deployment-10k-create.json}" >"$work/review.json"

declare -A port pid
for side in a b; do
    bin_var="${side}_bin"
    port[$side]="$(free_port)"
    taskset -c 1 "${!bin_var}" serve --insecure-self-signed --listen "127.0.0.1:${port[$side]}" \
        --metrics-listen "127.0.0.1:$(free_port)" --ecr-endpoint-url "$MOTO_ENDPOINT" \
        --log-format json 2>"$work/$side.log" &
    pid[$side]=$!; pids+=("${pid[$side]}")
    wait_port "${port[$side]}"
    curl -fsS -k -H 'content-type: application/json' --data-binary @"$work/review.json" \
        "https://127.0.0.1:${port[$side]}/validate" \
        | python3 -c 'import json,sys; r=json.load(sys.stdin)["response"]; assert r["allowed"] is True and not r.get("warnings"), r'
done
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"; }
median() { python3 -c "import statistics,sys; print(round(statistics.median(map(float, sys.argv[1:])), 2))" "$@"; }
declare -A samples
for round in $(seq 1 "$ROUNDS"); do
    for proto in ${PROTOS:-h1 h2}; do
        flags=(--h1); [ "$proto" = h2 ] && flags=(-m "$STREAMS")
        # Alternate which side goes first, so neither always runs on a warmer machine.
        order="a b"; [ $((round % 2)) -eq 0 ] && order="b a"
        for side in $order; do
            c0=$(cpu "${pid[$side]}")
            taskset -c 0 h2load "${flags[@]}" -n "$REQUESTS" -c "$CLIENTS" -H 'content-type: application/json' \
                -d "$work/review.json" "https://127.0.0.1:${port[$side]}/validate" >"$work/h2load.out" 2>&1
            grep -q "succeeded, 0 errored" "$work/h2load.out" || grep -q " $REQUESTS succeeded" "$work/h2load.out" \
                || { cat "$work/h2load.out" >&2; exit 1; }
            c1=$(cpu "${pid[$side]}")
            us=$(python3 -c "print(round(($c1-$c0)/$REQUESTS*1e6, 2))")
            samples[$side$proto]="${samples[$side$proto]:-} $us"
            printf '#%s %s %s: %s us/request\n' "$round" "$proto" "$side" "$us"
        done
    done
done
for proto in ${PROTOS:-h1 h2}; do
    echo "median $proto server CPU/request (us): A $(median ${samples[a$proto]}), B $(median ${samples[b$proto]})"
done
