#!/usr/bin/env bash
# A/B of two `rookery` binaries on the same scenario, alternating A, B, A, B in one run:
#
#   bench/ab.sh <rookery A> <rookery B> [rate per connection] [users] [scenario]
#
# Each run: a fresh data dir, `rookery serve`, `rookery-loadgen run --scenario <scenario>
# --verify` for DURATION (20) s; prints deliveries/s and ack / end-to-end p99 per run.
set -euo pipefail
cd "$(dirname "$0")/.."
A=$1 B=$2 RATE=${3:-4} USERS=${4:-1000} SCENARIO=${5:-group}
DURATION=${DURATION:-20}
TOKEN=bench-admin-token-0123456789
OUT=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$OUT"' EXIT
cargo build --release -q -p rookery-loadgen
for round in 1 2; do
  for label in A B; do
    bin=$A; [ $label = B ] && bin=$B
    rm -rf "$OUT/data"
    "$bin" serve --listen 127.0.0.1:18080 --admin-listen 127.0.0.1:19090 --data-dir "$OUT/data" \
      --admin-token $TOKEN --send-rate-limit 0 --api-write-rate-limit 0 --access-ttl 7200 >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 100); do curl -fs http://127.0.0.1:18080/healthz >/dev/null && break; sleep 0.1; done
    target/release/rookery-loadgen run --url http://127.0.0.1:18080 --admin-url http://127.0.0.1:19090 \
      --admin-token $TOKEN --scenario "$SCENARIO" --users "$USERS" --group-size 10 --rate "$RATE" \
      --duration "$DURATION" --verify --json "$OUT/r.json" >/dev/null 2>&1 || true
    python3 -c "
import json; r = json.load(open('$OUT/r.json')); v = r.get('verify') or {}
print(f'$label round $round: deliveries/s {r[\"deliveries_per_s\"]:>9,.0f}  ack p99 {r[\"ack\"][\"p99_ms\"]:.2f} ms  e2e p99 {r[\"e2e\"][\"p99_ms\"]:.2f} ms  missing/dup/reordered {v.get(\"missing\")}/{v.get(\"duplicated\")}/{v.get(\"reordered\")}')"
    kill -TERM $pid; wait $pid || true
  done
done
