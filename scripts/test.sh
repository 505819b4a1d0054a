#!/usr/bin/env bash
# The whole test suite. Installs what the tests need and is missing (Debian's chromium for the
# console's browser tests, playwright-core from npm, Debian's redis-server for the cluster tests
# and prometheus for promtool),
# then runs every Rust test, including the browser tests, which drive the real console in
# headless Chromium, and the cluster tests, which use the Redis on 127.0.0.1:6379 when one
# answers and otherwise start their own redis-server on a free port.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v promtool >/dev/null || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} (Debian packages) for the browser, cluster and deployment tests..."
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  echo "installing playwright-core (npm) for the browser tests..."
  (cd tests/browser && npm ci --no-audit --no-fund --silent)
fi

# Run everything, then close with one summary line over every test binary.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
echo
awk '/^test result:/ { for (i = 2; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { printf "summary: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
