#!/usr/bin/env bash
# Schemathesis (property-based API testing, from PyPI) against a live node: every operation of
# the OpenAPI document served at /api/openapi.json, with generated valid and invalid inputs, and
# every check schemathesis has (no 5xx, only documented statuses, content types, headers and
# bodies valid against the schemas, invalid input refused, valid input accepted, 405 with Allow
# for undocumented methods, 401 without the token, ...).
#
# Installs the pinned schemathesis into target/schemathesis-venv when it is missing, builds the
# debug node, starts it on free ports with a fresh data directory and no write limits, signs up
# a user for a bearer token, runs schemathesis, stops the node and prints one line:
# `schemathesis: ok, N operations, M test cases, T s ...` or `schemathesis: FAILED ...` (exit 1).
#
# Environment: SCHEMATHESIS_EXAMPLES (test cases per operation and phase, default 25),
# SCHEMATHESIS_SEED (default 1, so runs generate the same inputs; set another to explore),
# SCHEMATHESIS_TIMEOUT (seconds, default 300: the run is cut off and fails after this).
# Per-operation exceptions to the checks are in scripts/schemathesis.toml, each with its reason.
set -euo pipefail
cd "$(dirname "$0")/.."

version=4.32.5
venv=target/schemathesis-venv
examples=${SCHEMATHESIS_EXAMPLES:-25}
seed=${SCHEMATHESIS_SEED:-1}
timeout=${SCHEMATHESIS_TIMEOUT:-300}

fail() {
  echo "schemathesis: FAILED, $*"
  exit 1
}

if [ "$("$venv/bin/st" --version 2>/dev/null)" != "st, version $version" ]; then
  echo "installing schemathesis $version (PyPI) into $venv..." >&2
  rm -rf "$venv"
  python3 -m venv "$venv" || fail "could not create a Python venv (python3 -m venv)"
  "$venv/bin/pip" install -q "schemathesis==$version" >&2 || fail "could not install schemathesis $version"
fi

cargo build --locked -q -p rookery-node --bin rookery >&2 || fail "the node did not build"

work=$(mktemp -d)
node_pid=""
cleanup() {
  if [ -n "$node_pid" ] && kill -0 "$node_pid" 2>/dev/null; then
    kill -TERM "$node_pid" 2>/dev/null || true
    wait "$node_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# The node binds free ports itself (port 0) and logs the addresses it got.
target/debug/rookery serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --log-format json \
  --data-dir "$work/data" --api-write-rate-limit 0 --send-rate-limit 0 >"$work/node.log" 2>&1 &
node_pid=$!

# Wait for the node's address, then sign up the user whose token schemathesis sends.
started=$(python3 - "$work/node.log" "$node_pid" <<'EOF'
import json, sys, time, urllib.request
log, pid = sys.argv[1], sys.argv[2]

def alive():
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False

deadline = time.monotonic() + 60
base = None
while base is None:
    for line in open(log, errors="replace"):
        try:
            fields = json.loads(line).get("fields", {})
        except ValueError:
            continue
        if "chat_addr" in fields:
            base = "http://" + fields["chat_addr"]
    if base is None:
        if not alive():
            sys.exit("the node exited")
        if time.monotonic() > deadline:
            sys.exit("the node did not start within 60 s")
        time.sleep(0.1)
urllib.request.urlopen(base + "/healthz", timeout=10).read()
body = json.dumps({"username": "schemathesis", "password": "schemathesis-password"}).encode()
req = urllib.request.Request(base + "/api/auth/signup", body, {"Content-Type": "application/json"})
print(base, json.load(urllib.request.urlopen(req, timeout=10))["access_token"])
EOF
) || { tail -20 "$work/node.log" >&2; fail "the node did not start"; }
read -r base token <<<"$started"

began=$(date +%s)
set +e
report=target/schemathesis-report.json
rm -f "$report"
timeout "$timeout" "$venv/bin/st" --config-file scripts/schemathesis.toml run "$base/api/openapi.json" \
  --header "Authorization: Bearer $token" \
  --max-examples "$examples" \
  --seed "$seed" \
  --request-timeout 15 \
  --generation-database none \
  --no-color \
  --report json --report-json-path "$report" >"$work/st.log" 2>&1
status=$?
set -e
seconds=$(($(date +%s) - began))

# The node must still be up, and must have logged no panic.
if ! kill -0 "$node_pid" 2>/dev/null; then
  cat "$work/st.log" >&2
  tail -40 "$work/node.log" >&2
  fail "the node exited during the run"
fi
if grep -q "panicked" "$work/node.log"; then
  grep -A5 "panicked" "$work/node.log" >&2
  fail "the node panicked during the run"
fi

summary=$(python3 - "$report" <<'EOF' 2>/dev/null || echo "? operations, ? test cases"
import json, sys
report = json.load(open(sys.argv[1]))
print(f"{report['operations']['tested']} operations, {report['test_cases']['generated']} test cases")
EOF
)
if [ "$status" -ne 0 ]; then
  cat "$work/st.log"
  fail "$summary, ${seconds} s (seed $seed; details above)"
fi
echo "schemathesis: ok, $summary, ${seconds} s (schemathesis $version, seed $seed)"
