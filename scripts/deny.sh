#!/usr/bin/env bash
# Checks the dependency graph against deny.toml: licences, bans (wildcard
# versions) and sources (crates.io only). Installs cargo-deny when it is
# missing (a pinned version, built without its default features: about two
# minutes once on two cores). Advisories are left out: they need the RustSec
# database from GitHub, which CI cannot reach (see deny.toml).
set -euo pipefail
cd "$(dirname "$0")/.."

version="0.20.2"
if ! cargo deny --version 2>/dev/null | grep -q "cargo-deny $version"; then
    echo "==> installing cargo-deny $version (once; about two minutes)"
    cargo install cargo-deny --locked --no-default-features --version "$version"
fi
# cargo-deny reads the graph with `cargo metadata --offline`, which needs
# every crate of the lock file on disk, those of other platforms too (a
# fresh machine's builds fetch only its own): fetch them first.
cargo fetch --locked --quiet
cargo deny --offline --log-level error check licenses bans sources
echo "cargo deny: licences, bans and sources ok"
