#!/usr/bin/env bash
# Installs what the test command needs and the machine lacks: Node.js and npm
# (the build compiles the browser app; the tests drive the stock Yjs client),
# and Debian's chromium (the browser tests). Debian packages need root;
# without it, this names the packages to install and stops.
# scripts/test.sh runs this first; .ci/run goes through scripts/test.sh.
set -euo pipefail

missing=()
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
[ -x "${CHROMIUM_PATH:-/usr/bin/chromium}" ] || missing+=(chromium)
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
