#!/usr/bin/env bash
# Instructions the node executes per direct message, counted by callgrind: a figure that does
# not move with the noise of a shared machine (unlike CPU time), for comparing two builds.
#
#   bench/instructions_per_message.sh [rookery binary] [users] [rate per connection] [seconds]
#
# Starts the node under `valgrind --tool=callgrind` with instrumentation off, waits until the
# load generator's connections are all open, counts from then until the load generator exits
# (direct scenario, `--verify`), and prints the node's instructions divided by messages acked.
# The count includes what the node does meanwhile besides messages (timers of the open
# connections): run it once more at a very low rate to see that part.
#
# It also prints heap allocations per message: calls into the allocator (`__rust_alloc`,
# `__rust_realloc`, `__rust_alloc_zeroed`, and the allocator's C entry points from anything
# else) counted in the same profile, with the callers that allocate most. Set ALLOC_CALLERS to
# list more or fewer of them (default 12). Set CG_OUT to a path to keep the callgrind profile there
# (for `callgrind_annotate --inclusive=yes`).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/rookery} USERS=${2:-100} RATE=${3:-2} SECS=${4:-10}
PORT=${PORT:-18700}
TOKEN=bench-admin-token-0123456789
OUT=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$OUT"' EXIT
ROOKERY_LOG=warn valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/cg" \
  "$BIN" serve --listen 127.0.0.1:$PORT --admin-listen 127.0.0.1:$((PORT + 1)) --data-dir "$OUT/data" \
  --admin-token $TOKEN --send-rate-limit 0 --api-write-rate-limit 0 --access-ttl 7200 >"$OUT/log" 2>&1 &
for _ in $(seq 900); do curl -fs http://127.0.0.1:$PORT/healthz >/dev/null && break; sleep 0.2; done
pid=$(ss -ltnpH "sport = :$PORT" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
target/release/rookery-loadgen run --url http://127.0.0.1:$PORT --admin-url http://127.0.0.1:$((PORT + 1)) \
  --admin-token $TOKEN --scenario direct --users "$USERS" --rate "$RATE" --duration "$SECS" --ramp 5 --drain 10 \
  --verify --quiet --json "$OUT/r.json" >/dev/null 2>&1 &
lg=$!
for _ in $(seq 600); do
  n=$(curl -fs http://127.0.0.1:$((PORT + 1))/metrics | awk '/^rookery_ws_connections /{print $2}')
  [ "${n:-0}" = "$USERS" ] && break
  sleep 0.1
done
callgrind_control -i on "$pid" >/dev/null 2>&1
wait $lg || true
callgrind_control -i off "$pid" >/dev/null 2>&1
callgrind_control -d "$pid" >/dev/null 2>&1
sleep 1
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
[ -z "${CG_OUT:-}" ] || cp "$OUT"/cg.1 "$CG_OUT"
ir=$(callgrind_annotate "$OUT"/cg.1 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",", "", $1); print $1}')
python3 - "$ir" "$OUT/r.json" "$OUT/cg.1" "${ALLOC_CALLERS:-12}" <<'PY'
import collections, json, re, sys
ir = int(sys.argv[1]); r = json.load(open(sys.argv[2])); v = r.get("verify") or {}
acked = max(r['acked'], 1)
print(f"instructions {ir:,}  acked {r['acked']:,}  => {ir / acked:,.0f} per message  "
      f"(verify missing/dup/reordered {v.get('missing')}/{v.get('duplicated')}/{v.get('reordered')})")

# Allocation calls, from the callgrind file's call records ("fn=" caller, "cfn=" callee,
# "calls=<n>"); names are given once as "(id) name" and later as "(id)".
entry = {"__rustc::__rust_alloc", "__rustc::__rust_alloc_zeroed", "__rustc::__rust_realloc",
         "mi_malloc", "mi_malloc_aligned", "mi_zalloc", "mi_zalloc_aligned", "mi_calloc",
         "mi_realloc", "mi_realloc_aligned", "malloc", "calloc", "realloc"}
inside = ("mi_", "_mi_", "__rustc::", "malloc", "calloc", "realloc")
names, caller, callee = {}, "", ""
by_caller = collections.Counter()
def name(tok):
    m = re.match(r"\((\d+)\)(?: (.*))?", tok)
    if not m:
        return tok
    if m.group(2):
        names[m.group(1)] = m.group(2)
    return names.get(m.group(1), "?")
for line in open(sys.argv[3], errors="replace"):
    if line.startswith("fn="):
        caller = name(line[3:].strip())
    elif line.startswith("cfn="):
        callee = name(line[4:].strip())
    elif line.startswith("calls=") and callee in entry and not caller.startswith(inside):
        by_caller[caller] += int(line[6:].split()[0])
total = sum(by_caller.values())
print(f"allocations {total:,}  => {total / acked:,.1f} per message; most by caller (per message):")
for c, n in by_caller.most_common(int(sys.argv[4])):
    print(f"  {n / acked:7.2f}  {c[:120]}")
PY
