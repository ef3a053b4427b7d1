#!/usr/bin/env bash
# Warm-path throughput and latency: the webhook with every answer cached, side by side with
# a bare axum + rustls baseline, both driven by h2load over TLS with keep-alive.
#
#   bash benches/warm_path.sh            # needs h2load (Debian: nghttp2-client)
#
# Env: REQUESTS (default 40000), CLIENTS (16), STREAMS (16, HTTP/2 only), RATE (1000 req/s
# for the latency run), ROUNDS (5), PIN=1 (each server on CPU 1 and h2load on CPU 0, so
# the load generator never takes the server's CPU; the same for both servers),
# WORKER_THREADS (the webhook's --worker-threads; default: its own default), REVIEW (the
# AdmissionReview posted; default tests/fixtures/deployment-10k-create.json; its images
# must be among those benches/bench_seed.rs pushes), PLATFORMS=1 (the platform check on:
# `serve --watch` against the demo's stand-in API server with two amd64 Nodes and a
# Graviton NodePool, config blobs served by docker-registry on loopback).
set -euo pipefail
. "$(dirname "$0")/../scripts/lib.sh"
cd "$ROOT"
command -v h2load >/dev/null || { echo "h2load not found: apt-get install nghttp2-client" >&2; exit 2; }

REQUESTS="${REQUESTS:-40000}" CLIENTS="${CLIENTS:-16}" STREAMS="${STREAMS:-16}" RATE="${RATE:-1000}"
server_cpu=() load_cpu=()
if [ -n "${PIN:-}" ]; then
    server_cpu=(taskset -c 1) load_cpu=(taskset -c 0)
    echo "pinned: servers on CPU 1, h2load on CPU 0"
fi
threads=()
[ -n "${WORKER_THREADS:-}" ] && threads=(--worker-threads "$WORKER_THREADS")
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

cargo build --locked --release --quiet --bin ecr-preflight --example baseline_server --example bench_seed \
    --example demo_cluster
bin="$CARGO_TARGET_DIR/release"
start_moto; pids+=("$MOTO_PID")
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_EC2_METADATA_DISABLED=true
watch=()
if [ -n "${PLATFORMS:-}" ]; then
    "$bin/examples/bench_seed" "$MOTO_ENDPOINT" "$work"
    start_registry AWS 123456789012-auth-token "$work/registry"; pids+=("$REGISTRY_PID")
    push_configs "$work" AWS 123456789012-auth-token
    "$bin/examples/demo_cluster" "$work" >"$work/cluster.url" & pids+=("$!")
    until [ -s "$work/cluster.url" ]; do sleep 0.1; done
    export KUBECONFIG="$work/kubeconfig"
    watch=(--watch --recheck-interval 1h --lease-namespace bench
        --ecr-registry-url "$REGISTRY_URL" --ecr-registry-ca-file "$REGISTRY_CA")
    echo "platform check on: serve --watch, 2 amd64 Nodes and a Graviton NodePool"
else
    "$bin/examples/bench_seed" "$MOTO_ENDPOINT"
fi
python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1])), separators=(",", ":")))' \
    "${REVIEW:-tests/fixtures/deployment-10k-create.json}" >"$work/review.json"

wh="$(free_port)"; admin="$(free_port)"; base="$(free_port)"
"${server_cpu[@]}" "$bin/ecr-preflight" serve "${threads[@]}" --insecure-self-signed --listen "127.0.0.1:$wh" \
    --metrics-listen "127.0.0.1:$admin" --ecr-endpoint-url "$MOTO_ENDPOINT" --mode enforce \
    --log-format json "${watch[@]}" 2>"$work/server.log" &
wh_pid=$!; pids+=("$wh_pid")
"${server_cpu[@]}" "$bin/examples/baseline_server" "$base" & base_pid=$!; pids+=("$base_pid")
wait_port "$wh"; wait_port "$base"
# With the platform check on, wait until the Nodes are listed (the decision line says
# where the platforms came from).
if [ -n "${PLATFORMS:-}" ]; then
    for _ in $(seq 1 100); do
        curl -fsS -k -o /dev/null -H 'content-type: application/json' --data-binary @"$work/review.json" \
            "https://127.0.0.1:$wh/validate" || true
        grep -q '"platforms":"nodes+nodepools"' "$work/server.log" && break
        sleep 0.2
    done
    grep -q '"platforms":"nodes+nodepools"' "$work/server.log" || { echo "the Nodes were never listed" >&2; exit 1; }
fi
# Warm the caches and prove the answer is the real one (allowed, all three images checked).
curl -fsS -k -H 'content-type: application/json' --data-binary @"$work/review.json" "https://127.0.0.1:$wh/validate" \
    | python3 -c 'import json,sys; r=json.load(sys.stdin)["response"]; assert r["allowed"] is True and not r.get("warnings"), r; print("warm: allowed")'

h2() { "${load_cpu[@]}" h2load "$@" -H 'content-type: application/json' -d "$work/review.json" 2>&1; }
# CPU seconds (user + system) a process has used so far.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"; }
rps() { awk '/^finished in/ { for (i=1;i<=NF;i++) if ($i ~ /req\/s/) print $(i-1) }' ; }
p99() { sort -n -k3 "$1" | awk '{ a[NR]=$3 } END { i=int(NR*0.99); if (i<1) i=1; printf "%.3f", a[i]/1000 }'; }
p50() { sort -n -k3 "$1" | awk '{ a[NR]=$3 } END { i=int(NR*0.50); if (i<1) i=1; printf "%.3f", a[i]/1000 }'; }

ROUNDS="${ROUNDS:-5}"
declare -A ratios cpu_ours cpu_base
printf '\n%-34s %14s %14s\n' "run" "ecr-preflight" "baseline"
for round in $(seq 1 "$ROUNDS"); do
  for proto in h1 h2; do
    flags=(--h1); [ "$proto" = h2 ] && flags=(-m "$STREAMS")
    c0=$(cpu "$wh_pid")
    a=$(h2 "${flags[@]}" -n "$REQUESTS" -c "$CLIENTS" "https://127.0.0.1:$wh/validate" | rps)
    c1=$(cpu "$wh_pid"); b0=$(cpu "$base_pid")
    b=$(h2 "${flags[@]}" -n "$REQUESTS" -c "$CLIENTS" "https://127.0.0.1:$base/validate" | rps)
    b1=$(cpu "$base_pid")
    ratio=$(python3 -c "print(round($a/$b, 3))")
    ratios[$proto]="${ratios[$proto]:-} $ratio"
    printf '%-34s %14s %14s   ratio %s\n' "#$round $proto throughput (req/s)" "$a" "$b" "$ratio"
    ours_us=$(python3 -c "print(round(($c1-$c0)/$REQUESTS*1e6, 1))")
    base_us=$(python3 -c "print(round(($b1-$b0)/$REQUESTS*1e6, 1))")
    cpu_ours[$proto]="${cpu_ours[$proto]:-} $ours_us"; cpu_base[$proto]="${cpu_base[$proto]:-} $base_us"
    printf '%-34s %14s %14s\n' "#$round $proto server CPU/request (us)" "$ours_us" "$base_us"
  done
done
median() { python3 -c "import statistics,sys; print(statistics.median(map(float, sys.argv[1:])))" "$@"; }
for proto in h1 h2; do
    echo "median $proto throughput ratio over $ROUNDS rounds: $(median ${ratios[$proto]})"
    # The steadier measure on a shared machine: CPU the server spent per request.
    echo "median $proto server CPU/request (us): ecr-preflight $(median ${cpu_ours[$proto]}), baseline $(median ${cpu_base[$proto]})"
done
per_client=$(( RATE / 10 )); n=$(( RATE * 20 ))
h2 --h1 -c 10 --rps "$per_client" -n "$n" --log-file "$work/wh.log" "https://127.0.0.1:$wh/validate" >/dev/null
h2 --h1 -c 10 --rps "$per_client" -n "$n" --log-file "$work/base.log" "https://127.0.0.1:$base/validate" >/dev/null
printf '%-30s %14s %14s\n' "h1 p50 at ${RATE} req/s (ms)" "$(p50 "$work/wh.log")" "$(p50 "$work/base.log")"
printf '%-30s %14s %14s\n' "h1 p99 at ${RATE} req/s (ms)" "$(p99 "$work/wh.log")" "$(p99 "$work/base.log")"
non200=$(awk '$2 != 200' "$work/wh.log" | wc -l)
echo "non-200 answers from ecr-preflight in the latency run: $non200"
echo "decision log lines written: $(grep -c '"admission decision"' "$work/server.log")"
