#!/usr/bin/env bash
# The whole test suite. Installs what the tests need and is missing (Debian's chromium for the
# console's browser tests, playwright-core and socket.io (for the Socket.IO peer) from npm, Debian's redis-server for the cluster tests,
# prometheus for promtool, faketime for the clock-jump test, iproute2's ss for the listen backlog
# test, and python3-venv for schemathesis,
# which scripts/schemathesis.sh installs from PyPI into target/schemathesis-venv),
# then runs every Rust test, including the browser tests, which drive the real console in
# headless Chromium, and the cluster tests, which use the Redis on 127.0.0.1:6379 when one
# answers and otherwise start their own redis-server on a free port; then the soak, schemathesis
# against a live node, and a short run of each fuzz target.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v promtool >/dev/null || missing+=(prometheus)
command -v faketime >/dev/null || missing+=(faketime)
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
command -v ss >/dev/null || missing+=(iproute2)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} (Debian packages) for the browser, cluster, deployment and fault tests..."
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  echo "installing playwright-core (npm) for the browser tests..."
  (cd tests/browser && npm ci --no-audit --no-fund --silent)
fi
if [ ! -d bench/socketio/node_modules/socket.io ]; then
  echo "installing socket.io (npm) for the load generator's test against the Socket.IO peer..."
  (cd bench/socketio && npm ci --no-audit --no-fund --silent)
fi

# Run everything, then close with one summary line over every test binary.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

# The one-minute soak (bench/soak.py): mixed load on the unoptimised build, memory, fds and
# latency flat, nothing lost.
soak_status=0
if cargo build --locked -q -p rookery-node -p rookery-loadgen 2>&1 | tail -20 &&
   python3 bench/soak.py --profile debug --preset short --duration "${SOAK_SECONDS:-60}" --check 2>/dev/null | tee -a "$log"; then
  :
else
  soak_status=1
fi

# Schemathesis against a live node (scripts/schemathesis.sh): every operation of the OpenAPI
# document at /api/openapi.json with generated input; no 5xx, nothing the document does not say.
schemathesis_status=0
if ./scripts/schemathesis.sh | tee -a "$log"; then
  :
else
  schemathesis_status=1
fi

# A short run of every fuzz target (fuzz/README.md); needs the nightly toolchain and cargo-fuzz.
fuzz_status=0
if cargo +nightly --version >/dev/null 2>&1; then
  command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked -q
  for target in client_frame ws_frames http_bodies; do
    scratch=$(mktemp -d)
    if (cd fuzz && cargo +nightly fuzz run "$target" -s none "$scratch" "corpus/$target" -- \
          -max_total_time="${FUZZ_SECONDS:-20}" -print_final_stats=1) >"$scratch.log" 2>&1; then
      runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$scratch.log" | grep -o '[0-9]*$' || echo "?")
      echo "fuzz $target: ok, $runs runs, 0 crashes" | tee -a "$log"
    else
      fuzz_status=1
      tail -40 "$scratch.log"
      echo "fuzz $target: FAILED (see fuzz/artifacts/$target)" | tee -a "$log"
    fi
    rm -rf "$scratch" "$scratch.log"
  done
else
  echo "fuzz: skipped (no nightly toolchain: rustup toolchain install nightly)" | tee -a "$log"
fi

echo
awk '/^test result:/ { for (i = 2; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     /^fuzz [a-z_]+: ok/ { fp += 1 } /^fuzz [a-z_]+: FAILED/ { ff += 1 }
     /^soak: ok/ { soak = "ok" } /^soak FAILED/ { soak = "FAILED" }
     /^schemathesis: ok/ { st = "ok" } /^schemathesis: FAILED/ { st = "FAILED" }
     END { printf "summary: %d passed, %d failed; fuzz targets: %d ok, %d failed; soak: %s; schemathesis: %s\n", p, f, fp, ff, soak ? soak : "FAILED", st ? st : "FAILED" }' "$log"
if [ "$status" -eq 0 ]; then status=$fuzz_status; fi
if [ "$status" -eq 0 ]; then status=$soak_status; fi
if [ "$status" -eq 0 ]; then status=$schemathesis_status; fi
exit "$status"
