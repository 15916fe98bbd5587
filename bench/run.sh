#!/usr/bin/env bash
# Command Post's benchmark against its peers, in one command.
#
#   bench/run.sh            full run (about 35 minutes): installs the peers,
#                           builds in release mode, runs every scenario, and
#                           writes docs/BENCHMARKS.md and bench/results.json
#   bench/run.sh --quick    a few seconds per scenario with dev builds, to
#                           prove the benchmark still works (CI runs this);
#                           writes bench/.work/quick/ only
#
# Other arguments go to `cp-bench run` (see `cp-bench run --help`), e.g.
#   bench/run.sh --servers commandpost,ceiling --scenarios fanout --viewers 5000
#   bench/run.sh --servers commandpost,commandpost-postgres --scenarios durable --merge
#   bench/run.sh --scenarios cluster --merge
#                           (the cluster scenario: one node against three on
#                           PostgreSQL and Redis, and failover through HAProxy)
#                           (--merge replaces those rows in bench/results.json
#                           and keeps every other scenario's)
#
# Peers are installed pinned, at benchmark time, into bench/peers/node_modules
# (npm ci from bench/peers/package-lock.json) and bench/.work/cache (y-sweet
# via cargo install --locked). Nothing of theirs is committed.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=""
for arg in "$@"; do
    if [ "$arg" = "--quick" ]; then quick=1; fi
done
work=bench/.work
ysweet_root="$work/cache/y-sweet"

need() {
    command -v "$1" >/dev/null 2>&1 || { echo "error: $1 is needed: $2" >&2; exit 1; }
}
need taskset "install util-linux (Debian: apt-get install util-linux)"
need npm "install Node.js and npm (Debian: apt-get install nodejs npm)"
# Command Post on PostgreSQL (a default server) runs on the benchmark's own
# PostgreSQL, started with initdb and pg_ctl (never a server already running).
servers=""
scenarios=""
prev=""
for arg in "$@"; do
    case "$arg" in
        --servers=*) servers="${arg#--servers=}" ;;
        --scenarios=*) scenarios="${arg#--scenarios=}" ;;
    esac
    if [ "$prev" = "--servers" ]; then servers="$arg"; fi
    if [ "$prev" = "--scenarios" ]; then scenarios="$arg"; fi
    prev="$arg"
done
cluster=""
if [ -z "$scenarios" ] || [[ "$scenarios" == *cluster* ]]; then cluster=1; fi
# The cluster scenario runs three nodes on the benchmark's own PostgreSQL
# and Redis, with its own HAProxy in front of them for the failover rounds.
if [ -n "$cluster" ]; then
    command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 || {
        echo "error: the cluster scenario needs redis-server and redis-cli: install them (Debian: apt-get install redis-server), or leave it out with --scenarios" >&2
        exit 1
    }
    command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || {
        echo "error: the cluster scenario needs haproxy: install it (Debian: apt-get install haproxy), or leave it out with --scenarios" >&2
        exit 1
    }
fi
if [ -z "$servers" ] || [[ "$servers" == *postgres* ]] || [ -n "$cluster" ]; then
    if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
        echo "error: PostgreSQL is needed for Command Post on PostgreSQL and the cluster scenario (initdb and pg_ctl, on PATH or in /usr/lib/postgresql/*/bin): install it (Debian: apt-get install postgresql), or leave them out with --servers and --scenarios" >&2
        exit 1
    fi
fi
if [ "$(nproc)" -lt 2 ]; then
    echo "error: the benchmark pins servers and load generator to different cores and needs 2 or more" >&2
    exit 1
fi

echo "==> installing the Node peers (bench/peers: @y/websocket-server, @hocuspocus/server, Node 22)"
npm ci --prefix bench/peers --no-audit --no-fund --loglevel=error

if [ -n "$servers" ] && [[ "$servers" != *ysweet* ]]; then
    : # y-sweet is not among the servers asked for
elif [ ! -x "$ysweet_root/bin/y-sweet" ]; then
    if [ -n "$quick" ] && [ -z "${BENCH_WITH_YSWEET:-}" ]; then
        echo "==> y-sweet is not installed; quick mode leaves it out (set BENCH_WITH_YSWEET=1 to install it, ~8 minutes)"
    else
        echo "==> installing y-sweet 0.9.1 from crates.io into $ysweet_root (cargo install --locked, ~8 minutes)"
        CARGO_TARGET_DIR="$work/cache/y-sweet-target" \
            cargo install y-sweet --version 0.9.1 --locked --root "$ysweet_root"
    fi
fi

if [ -n "$quick" ]; then
    profile=debug
    echo "==> building Command Post, the load generator and the ceiling server (dev profile)"
    cargo build --locked -p commandpost -p commandpost-bench
    out=(--out "$work/quick/results.json" --report "$work/quick/BENCHMARKS.md")
else
    profile=release
    echo "==> building Command Post, the load generator and the ceiling server (release)"
    cargo build --locked --release -p commandpost -p commandpost-bench
    out=()
fi

# Up to 15,000 connections on each side.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

echo "==> running (servers on core 0, load generator on core 1)"
taskset -c 1 "target/$profile/cp-bench" run \
    --commandpost "target/$profile/commandpost" \
    --ceiling "target/$profile/ceiling" \
    --server-cpu 0 \
    --command-line "bench/run.sh $*" \
    "${out[@]}" "$@"
