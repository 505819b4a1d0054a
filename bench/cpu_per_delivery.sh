#!/usr/bin/env bash
# Server CPU per delivered message at a fixed offered load: a steadier figure than the maximum
# rate on a shared machine. Usage: bench/cpu_per_delivery.sh [users] [rate per conn] [seconds]; ROOKERY_BIN picks the node binary (default target/release/rookery)
set -euo pipefail
cd "$(dirname "$0")/.."
users=${1:-1000}; rate=${2:-8}; secs=${3:-10}
data=$(mktemp -d)
token=bench-admin-token-0123456789
"${ROOKERY_BIN:-target/release/rookery}" serve --listen 127.0.0.1:18300 --admin-listen 127.0.0.1:18301 --data-dir "$data" \
  --admin-token $token --send-rate-limit 0 --api-write-rate-limit 0 >/dev/null 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 50); do curl -sf 127.0.0.1:18300/healthz >/dev/null && break; sleep 0.1; done
ticks() { awk '{print $14+$15}' /proc/$pid/stat; }
before=$(ticks)
target/release/rookery-loadgen run --url http://127.0.0.1:18300 --admin-url http://127.0.0.1:18301 --admin-token $token \
  --scenario group --users "$users" --group-size 10 --rate "$rate" --duration "$secs" --ramp 2 --quiet --json /tmp/cpu-run.json >/dev/null
after=$(ticks)
hz=$(getconf CLK_TCK)
python3 - "$before" "$after" "$hz" <<'PY'
import json, sys
b, a, hz = map(int, sys.argv[1:])
r = json.load(open("/tmp/cpu-run.json"))
cpu = (a - b) / hz
print(f"delivered {r['delivered']}  e2e p99 {r['e2e']['p99_ms']:.2f} ms  server CPU {cpu:.2f} s  "
      f"=> {cpu / max(r['delivered'], 1) * 1e6:.2f} µs CPU per delivery")
PY
