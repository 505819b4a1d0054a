#!/usr/bin/env bash
# The cost of crossing nodes: the same group scenario against one node (`rookery serve`) and
# against three nodes (`rookery dev-cluster --nodes 3`, one process, one store, Redis between
# them) with the connections spread over the three, in the same run.
#
#   bench/cluster.sh [users] [group size] [rates per connection...]
#
# Needs a Redis on 127.0.0.1:6379 (or REDIS=redis://host:port). Defaults: 1000 users, groups of
# 10, rates 2 4 8 msgs/s per connection, 20 s each, with --verify.
set -euo pipefail
cd "$(dirname "$0")/.."
USERS=${1:-1000}
GROUP=${2:-10}
shift $(( $# > 2 ? 2 : $# )) || true
RATES=${*:-2 4 8}
DURATION=${DURATION:-20}
REDIS=${REDIS:-redis://127.0.0.1:6379}
TOKEN=bench-admin-token-0123456789
SECRET=bench-jwt-secret-bench-jwt-secret-0123456
OUT=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$OUT"' EXIT

cargo build --release -q -p rookery-node -p rookery-loadgen
BIN=target/release

wait_up() { for _ in $(seq 100); do curl -fs "$1/healthz" >/dev/null && return; sleep 0.1; done; echo "no answer from $1"; exit 1; }

run() { # label urls rate
  local label=$1 urls=$2 rate=$3
  "$BIN/rookery-loadgen" run --url "$urls" --admin-url http://127.0.0.1:19090 --admin-token $TOKEN \
    --scenario group --users "$USERS" --group-size "$GROUP" --rate "$rate" --duration "$DURATION" \
    --verify --json "$OUT/r.json" >/dev/null 2>&1 || true
  python3 - "$label" "$rate" "$OUT/r.json" <<'EOF'
import json, sys
label, rate, path = sys.argv[1:]
r = json.load(open(path))
d = r.get("deliveries_per_s", 0)
ack = r["ack"].get("p99_ms")
e2e = r["e2e"].get("p99_ms")
v = r.get("verify") or {}
print(f"{label:<10} rate {rate:>3}/conn  deliveries/s {d:>10,.0f}  ack p99 {ack} ms  e2e p99 {e2e} ms  "
      f"delivered {r.get('delivery_ratio')}  verify missing/dup/reordered {v.get('missing')}/{v.get('duplicated')}/{v.get('reordered')}")
EOF
}

common=(--admin-token $TOKEN --jwt-secret $SECRET --send-rate-limit 0 --api-write-rate-limit 0 --access-ttl 7200)
for rate in $RATES; do
  rm -rf "$OUT/one" "$OUT/three"
  "$BIN/rookery" serve --listen 127.0.0.1:18080 --admin-listen 127.0.0.1:19090 --data-dir "$OUT/one" "${common[@]}" >/dev/null 2>&1 &
  pid=$!; wait_up http://127.0.0.1:18080
  run "1 node" http://127.0.0.1:18080 "$rate"
  kill -TERM $pid; wait $pid || true

  "$BIN/rookery" dev-cluster --nodes 3 --redis "$REDIS" --redis-prefix "bench-$$-$rate" \
    --listen 127.0.0.1:18080 --admin-listen 127.0.0.1:19090 --data-dir "$OUT/three" "${common[@]}" >/dev/null 2>&1 &
  pid=$!; for p in 18080 18081 18082; do wait_up http://127.0.0.1:$p; done
  run "3 nodes" http://127.0.0.1:18080,http://127.0.0.1:18081,http://127.0.0.1:18082 "$rate"
  kill -TERM $pid; wait $pid || true
done
