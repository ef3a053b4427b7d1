#!/usr/bin/env bash
# Soak: the release server under a fixed mixed load against the ECR emulator for
# SOAK_SECONDS (default 600): CACHED_RPS (450) admissions of a ~10 KB Deployment whose images
# are cached, and UNCACHED_RPS (50) of a Pod whose tag does not exist (never cached: every
# one asks ECR). Reports requests, non-200 answers (must be 0), p50/p99 per stream, and the
# server's RSS sampled every 10 s (must stay flat after warm-up). HTTP=2 runs both streams
# over HTTP/2 (up to 4 streams at once per connection) instead of HTTP/1.1.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"
command -v h2load >/dev/null || { echo "h2load not found: apt-get install nghttp2-client" >&2; exit 2; }
SECONDS_TOTAL="${SOAK_SECONDS:-600}" CACHED_RPS="${CACHED_RPS:-450}" UNCACHED_RPS="${UNCACHED_RPS:-50}"
case "${HTTP:-1.1}" in
    1.1) protocol=(--h1) protocol_name="HTTP/1.1" ;;
    2) protocol=(-m 4) protocol_name="HTTP/2" ;;
    *) echo "HTTP must be 1.1 or 2" >&2; exit 2 ;;
esac
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

cargo build --locked --release --quiet --bin ecr-preflight --example bench_seed
bin="$CARGO_TARGET_DIR/release"
start_moto; pids+=("$MOTO_PID")
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_EC2_METADATA_DISABLED=true
"$bin/examples/bench_seed" "$MOTO_ENDPOINT"
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
review = json.load(open("tests/fixtures/deployment-10k-create.json"))
open(f"{work}/cached.json", "w").write(json.dumps(review, separators=(",", ":")))
pod = json.load(open("tests/fixtures/pod-create.json"))
spec = pod["request"]["object"]["spec"]
spec.pop("initContainers", None)
spec["containers"] = [{"name": "app", "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/sample/app:never-pushed"}]
open(f"{work}/uncached.json", "w").write(json.dumps(pod, separators=(",", ":")))
PY
port="$(free_port)"; admin="$(free_port)"
"$bin/ecr-preflight" serve --insecure-self-signed --listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$admin" \
    --ecr-endpoint-url "$MOTO_ENDPOINT" --mode warn --log-format json 2>"$work/server.log" &
server=$!; pids+=("$server")
wait_port "$port"
curl -fsS -k -H 'content-type: application/json' --data-binary @"$work/cached.json" "https://127.0.0.1:$port/validate" >/dev/null

( while kill -0 "$server" 2>/dev/null; do
    printf '%s %s\n' "$(date +%s)" "$(awk '/VmRSS/ {print $2}' "/proc/$server/status")"
    sleep 10
  done ) >"$work/rss.log" &
pids+=($!)
run() { # name rps body
    local clients=10
    h2load "${protocol[@]}" -c "$clients" --rps $(( $2 / clients )) -n $(( $2 * SECONDS_TOTAL )) \
        -H 'content-type: application/json' -d "$work/$3" --log-file "$work/$1.log" \
        "https://127.0.0.1:$port/validate" >"$work/$1.out" 2>&1
}
started=$(date +%s)
run cached "$CACHED_RPS" cached.json & a=$!
run uncached "$UNCACHED_RPS" uncached.json & b=$!
wait "$a" "$b"
elapsed=$(( $(date +%s) - started ))

pct() { sort -n -k3 "$1" | awk -v q="$2" '{ a[NR]=$3 } END { i=int(NR*q); if (i<1) i=1; printf "%.2f", a[i]/1000 }'; }
echo "soak: ${elapsed}s at ${CACHED_RPS}+${UNCACHED_RPS} requests/s ($protocol_name, 10 keep-alive connections each)"
for s in cached uncached; do
    total=$(wc -l <"$work/$s.log"); bad=$(awk '$2 != 200' "$work/$s.log" | wc -l)
    echo "$s: requests $total, non-200 $bad, p50 $(pct "$work/$s.log" 0.50) ms, p99 $(pct "$work/$s.log" 0.99) ms"
done
echo "decision log lines: $(grep -c '"admission decision"' "$work/server.log")"
echo "RSS (KiB) every 10 s:"
awk -v t0="$started" '{ printf "  %4ds %s\n", $1 - t0, $2 }' "$work/rss.log"
curl -fsS "http://127.0.0.1:$admin/metrics" | grep -E '^ecr_preflight_(admission_requests_total|ecr_requests_total)' || true
