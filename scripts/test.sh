#!/usr/bin/env bash
# Runs every test: installs the stock Yjs client the end-to-end tests drive,
# then the whole Rust workspace (unit, property and end-to-end tests).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "error: Node.js and npm are needed for the stock Yjs client tests (Debian: apt-get install nodejs npm)" >&2
    exit 1
fi
echo "==> installing the stock Yjs client (tests/node)"
npm ci --prefix tests/node --no-audit --no-fund --loglevel=error

echo "==> cargo test --workspace"
cargo test --workspace --locked "$@"
