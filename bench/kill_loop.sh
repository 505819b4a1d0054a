#!/usr/bin/env bash
# SIGKILL under load: `rookery-loadgen --verify` runs against a release `rookery serve` while the
# node is killed KILLS times (default 20) at random moments, each time restarted on the same data
# directory and ports. Prints the load generator's totals: acked, lost (acked but not in the
# stored history), stored twice, and the live delivery check. Exits with the load generator's
# status (3 when anything was lost, stored twice, missing, duplicated or reordered).
#
#   bench/kill_loop.sh [kills] [users] [rate per connection]
#
# Env: INTERVAL, the mean number of seconds between kills (default 3; each wait is drawn
# uniformly from half to one and a half times it).
set -euo pipefail
cd "$(dirname "$0")/.."
KILLS=${1:-20} USERS=${2:-100} RATE=${3:-5}
INTERVAL=${INTERVAL:-3}
TOKEN=bench-admin-token-0123456789
CHAT=127.0.0.1:18480 ADMIN=127.0.0.1:18481
OUT=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$OUT"' EXIT
cargo build --release -q -p rookery-node -p rookery-loadgen

start_node() {
  target/release/rookery serve --listen $CHAT --admin-listen $ADMIN --data-dir "$OUT/data" \
    --admin-token $TOKEN --send-rate-limit 0 --access-ttl 7200 >>"$OUT/node.log" 2>&1 &
  node=$!
  for _ in $(seq 200); do
    curl -fs "http://$CHAT/healthz" >/dev/null && return
    sleep 0.05
  done
  echo "the node did not start; its log:" >&2
  tail -20 "$OUT/node.log" >&2
  exit 1
}

start_node
duration=$((KILLS * INTERVAL + 10))
target/release/rookery-loadgen run --quiet --url "http://$CHAT" --admin-url "http://$ADMIN" --admin-token $TOKEN \
  --scenario group --users "$USERS" --group-size 10 --rate "$RATE" --duration $duration --drain 15 --verify \
  --json "$OUT/report.json" >"$OUT/loadgen.log" 2>&1 &
loadgen=$!
# Let the load generator set up its users and conversations and start sending.
sleep 5
for k in $(seq "$KILLS"); do
  kill -KILL $node
  wait $node 2>/dev/null || true
  start_node
  ms=$((INTERVAL * 500 + RANDOM % (INTERVAL * 1000)))
  sleep "$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))"
done
status=0
wait $loadgen || status=$?
python3 - "$OUT/report.json" "$KILLS" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
v = r.get("verify") or {}
print(f"kills {sys.argv[2]}  sent {r['sent']}  acked {r['acked']}  lost {v.get('lost')}  stored twice {v.get('stored_twice')}")
print(f"delivery check: expected {v.get('expected')}  missing {v.get('missing')}  duplicated {v.get('duplicated')}  "
      f"reordered {v.get('reordered')}")
print(f"reconnects {r['reconnects']}  resent after a drop {r['resent']}  errors {r['errors']}")
PY
kill -TERM $node
wait $node 2>/dev/null || true
exit $status
