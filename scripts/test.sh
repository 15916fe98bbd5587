#!/usr/bin/env bash
# Runs every test: the Rust workspace (unit, property and end-to-end tests,
# with the stock Yjs client they drive), then the browser tests in Debian's
# Chromium. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

need() {
    command -v "$1" >/dev/null 2>&1 || { echo "error: $1 is needed: $2" >&2; exit 1; }
}
need node "install Node.js 20 or later (Debian: apt-get install nodejs npm)"
need npm "install npm (Debian: apt-get install npm)"

echo "==> installing the stock Yjs client (tests/node)"
npm ci --prefix tests/node --no-audit --no-fund --loglevel=error

echo "==> cargo test --workspace (builds the browser app into the binary)"
cargo test --workspace --locked "$@"

echo "==> browser tests (tests/browser, Debian chromium)"
COMMANDPOST_BIN="$PWD/target/debug/commandpost" tests/browser/run.sh
