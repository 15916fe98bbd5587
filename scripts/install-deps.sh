#!/usr/bin/env bash
# Installs what the test command needs and the machine lacks: Node.js and npm
# (the build compiles the browser app; the tests drive the stock Yjs client),
# Debian's chromium (the browser tests), Debian's postgresql (the
# PostgreSQL backend's tests start their own server with initdb and pg_ctl),
# and Debian's redis-server, haproxy and nginx-light (the cluster tests start
# their own Redis, with redis-cli to look inside it, and their own HAProxy
# and nginx in front of the nodes). Debian packages need root; without it, this names the packages
# to install and stops.
# scripts/test.sh runs this first; .ci/run goes through scripts/test.sh.
set -euo pipefail

missing=()
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
[ -x "${CHROMIUM_PATH:-/usr/bin/chromium}" ] || missing+=(chromium)
# Debian keeps initdb off PATH, in /usr/lib/postgresql/<version>/bin.
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    missing+=(postgresql)
fi
# redis-cli ships in redis-tools, a dependency of redis-server.
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    missing+=(redis-server)
fi
# The cluster tests also run the documented nginx configuration (nginx-light
# is enough); Debian installs it in /usr/sbin too.
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    missing+=(nginx-light)
fi
# Debian installs haproxy in /usr/sbin, off a user's PATH.
if ! command -v haproxy >/dev/null 2>&1 && [ ! -x /usr/sbin/haproxy ]; then
    missing+=(haproxy)
fi
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "error: the tests need ${missing[*]}; install them (Debian: sudo apt-get install ${missing[*]}) and run again" >&2
    exit 1
fi
echo "==> installing ${missing[*]} from Debian (apt-get; a few minutes the first time)"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
