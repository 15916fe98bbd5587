#!/usr/bin/env bash
# Runs every test: the Rust workspace (unit, property and end-to-end tests,
# with the stock Yjs client they drive), then the browser tests in Debian's
# Chromium, on one node and again through HAProxy in front of a cluster.
# Installs what is missing first (scripts/install-deps.sh: Node.js, npm,
# chromium, postgresql, redis-server, haproxy; the npm packages the tests
# drive). Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

echo "==> installing the stock Yjs client (tests/node)"
npm ci --prefix tests/node --no-audit --no-fund --loglevel=error

echo "==> cargo test --workspace (builds the browser app into the binary)"
cargo test --workspace --locked "$@"

echo "==> browser tests (tests/browser, Debian chromium)"
COMMANDPOST_BIN="$PWD/target/debug/commandpost" tests/browser/run.sh

echo "==> browser tests again, through HAProxy in front of three nodes on a private PostgreSQL and Redis"
COMMANDPOST_BIN="$PWD/target/debug/commandpost" COMMANDPOST_BROWSER_CLUSTER=1 tests/browser/run.sh
