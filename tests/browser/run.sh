#!/usr/bin/env bash
# Runs the browser tests: the real commandpost binary (which embeds web/dist)
# driven through Debian's chromium by playwright-core and node's test runner.
#
#   tests/browser/run.sh              # uses target/debug/commandpost
#   COMMANDPOST_BIN=/path/to/commandpost tests/browser/run.sh
#
# Build first: `cargo build -p commandpost` (its build script runs
# `npm run build` in web/). Screenshots go to tests/browser/artifacts/;
# with COMMANDPOST_UPDATE_DOCS=1 the responder and viewer ones are also
# copied to docs/screenshot-{responder,viewer}.png for the README.
#
# Cluster mode: COMMANDPOST_BROWSER_CLUSTER=1 tests/browser/run.sh runs the
# same tests through HAProxy (docs/cluster/haproxy.cfg) in front of three
# nodes (127.0.0.2-4) sharing one PostgreSQL database and one Redis
# (support.mjs, cluster.mjs). Each test file's process starts its own
# PostgreSQL (initdb + pg_ctl, as the `postgres` user when root) and Redis
# on free ports, removed when it exits. Needs postgresql, redis-server and
# haproxy installed (scripts/install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")"

chromium="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [ ! -x "$chromium" ]; then
  echo "error: no chromium at $chromium." >&2
  echo "Install Debian's chromium: apt-get update && apt-get install -y chromium" >&2
  echo "(or point CHROMIUM_PATH at a Chromium binary)" >&2
  exit 1
fi

bin="${COMMANDPOST_BIN:-../../target/debug/commandpost}"
if [ ! -x "$bin" ]; then
  echo "error: no server binary at $bin; run 'cargo build -p commandpost' first (or set COMMANDPOST_BIN)" >&2
  exit 1
fi

npm ci --no-audit --no-fund --loglevel=error
# One file at a time: each starts its own server and browser, and two
# chromiums side by side on a 2-core machine only make timing noisier.
exec node --test --test-concurrency=1 ./*.test.mjs
