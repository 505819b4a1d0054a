#!/usr/bin/env bash
# The whole test suite. Installs what the tests need and is missing (Debian's chromium for the
# console's browser tests, playwright-core from npm), then runs every Rust test, including the
# browser tests, which drive the real console in headless Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ]; then
  echo "installing chromium (Debian package) for the browser tests..."
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  echo "installing playwright-core (npm) for the browser tests..."
  (cd tests/browser && npm ci --no-audit --no-fund --silent)
fi

cargo test --workspace --locked
