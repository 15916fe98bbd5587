#!/usr/bin/env bash
# Coverage-guided fuzzing with cargo-fuzz (libFuzzer, AddressSanitizer, debug
# assertions): runs every target in fuzz/ for SECONDS_PER_TARGET seconds
# (default 30), starting from the committed seeds in fuzz/corpus/<target>,
# prints one summary line per target and exits non-zero if any target
# crashed, naming the file that reproduces it. See fuzz/README.md.
#
#   scripts/fuzz.sh            # 30 s per target (CI runs 10 s: .ci/run)
#   scripts/fuzz.sh 600        # a longer local session
#   FUZZ_TARGETS="session" scripts/fuzz.sh 300
#
# Inputs the fuzzer discovers go to fuzz/corpus-local/<target> (ignored by
# git, reused by the next run); the committed corpus is only read. Crashes go
# to fuzz/artifacts/<target>/, full logs to fuzz/artifacts/logs/.
set -euo pipefail

usage() {
    echo "usage: $0 [SECONDS_PER_TARGET]   (default 30)" >&2
}

seconds="${1:-30}"
if [[ $# -gt 1 || ! "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    usage
    exit 2
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fuzz="$root/fuzz"
read -r -a targets <<<"${FUZZ_TARGETS:-frame_decoder session command_json}"
# The version of cargo-fuzz installed when it is missing.
cargo_fuzz_version="0.13.2"

# server/build.rs would build the browser app with npm: not needed here.
export COMMANDPOST_SKIP_WEB=1
export CARGO_TERM_COLOR=never

started=$(date +%s)
elapsed() { echo $(( $(date +%s) - $1 )); }

# cargo-fuzz needs nightly rustc features (-Zsanitizer). Use the nightly
# toolchain when rustup has one; otherwise the stable one with
# RUSTC_BOOTSTRAP=1, which unlocks the same flags (machines without nightly).
toolchain="${FUZZ_TOOLCHAIN:-}"
if [[ -z "$toolchain" ]]; then
    if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
        toolchain=nightly
    else
        toolchain=stable
    fi
fi
if [[ "$toolchain" != nightly* ]]; then
    export RUSTC_BOOTSTRAP=1
    echo "==> using the $toolchain toolchain with RUSTC_BOOTSTRAP=1 (cargo-fuzz needs nightly flags)"
fi
cargo=(cargo "+$toolchain")

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz $cargo_fuzz_version (once; a few minutes)"
    cargo install cargo-fuzz --locked --version "$cargo_fuzz_version"
fi
echo "==> $(cargo fuzz --version), $("${cargo[@]}" --version)"

# fuzz/Cargo.lock is committed: refuse to run if it would change.
"${cargo[@]}" metadata --locked --format-version 1 --manifest-path "$fuzz/Cargo.toml" >/dev/null

# Sanitizer and assertions: AddressSanitizer (the default) catches memory
# errors in yrs's unsafe code, and debug assertions turn integer overflow and
# yrs's debug_assert!s into crashes instead of silent wrapping.
flags=(--fuzz-dir "$fuzz" --debug-assertions)

mkdir -p "$fuzz/artifacts/logs"
build_log="$fuzz/artifacts/logs/build.log"
echo "==> building the fuzz targets (log: ${build_log#"$root"/})"
echo "    the first build compiles the server and all its dependencies with"
echo "    coverage instrumentation and AddressSanitizer: about 5 minutes on"
echo "    2 cores; after that only what changed is rebuilt"
build_started=$(date +%s)
if ! (cd "$root" && "${cargo[@]}" fuzz build "${flags[@]}") >"$build_log" 2>&1; then
    tail -n 60 "$build_log"
    echo "error: building the fuzz targets failed (full log: $build_log)" >&2
    exit 1
fi
echo "    built in $(elapsed "$build_started")s"
# Where cargo fuzz build puts the binaries (its default --target is the host).
host=$(rustc "+$toolchain" -vV | sed -n 's/^host: //p')
bin_dir="${CARGO_TARGET_DIR:-$fuzz/target}/$host/release"

failures=()
summaries=()
for target in "${targets[@]}"; do
    seeds="$fuzz/corpus/$target"
    work="$fuzz/corpus-local/$target"
    log="$fuzz/artifacts/logs/$target.log"
    mkdir -p "$work"
    [[ -d "$seeds" ]] || { echo "error: no seed corpus $seeds" >&2; exit 1; }
    args=(
        -max_total_time="$seconds"
        -print_final_stats=1
        -timeout=10
        -rss_limit_mb=2048
    )
    if [[ -f "$fuzz/dicts/$target.dict" ]]; then
        args+=(-dict="$fuzz/dicts/$target.dict")
    fi
    echo "==> fuzzing $target for ${seconds}s (log: ${log#"$root"/})"
    run_started=$(date +%s)
    mkdir -p "$fuzz/artifacts/$target"
    # The binary `cargo fuzz build` made, run the way `cargo fuzz run` runs
    # it, without `cargo fuzz run`'s two extra cargo invocations (each
    # rebuilds the server whenever its build script reruns). libFuzzer
    # writes new inputs into the FIRST corpus folder only.
    status=0
    (cd "$root" && ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_odr_violation=0" \
        "$bin_dir/$target" -artifact_prefix="$fuzz/artifacts/$target/" "${args[@]}" "$work" "$seeds") \
        >"$log" 2>&1 || status=$?
    took=$(elapsed "$run_started")

    execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | tail -n 1 | awk '{print $2}' || true)
    if [[ -z "$execs" ]]; then
        execs=$(grep -oE '^Done [0-9]+ runs' "$log" | tail -n 1 | awk '{print $2}' || true)
    fi
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "$log" | tail -n 1 || true)
    contained=$(grep -c '^note: contained a panic' "$log" || true)
    line=$(printf '%-14s %12s executions in %4ss  %s' "$target" "${execs:-?}" "$took" "${cov:-}")
    if [[ "$contained" -gt 0 ]]; then
        line+="  ($contained yrs panic site(s) contained by protocol::guarded)"
    fi

    if [[ $status -ne 0 ]]; then
        crash=$(grep -oE 'Test unit written to [^ ]+' "$log" | tail -n 1 | sed 's/^Test unit written to //' || true)
        line+="  CRASH: ${crash:-see ${log#"$root"/}}"
        failures+=("$target: ${crash:-no crash file; exit status $status, see $log}")
        echo "---- what failed ----"
        grep -m 1 -A 3 -E 'panicked at|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)' "$log" || true
        echo "---- last lines of $log ----"
        tail -n 60 "$log"
        echo "----"
        if [[ -n "$crash" ]]; then
            echo "reproduce: $bin_dir/$target $crash"
            echo "           (or: cd $root && COMMANDPOST_SKIP_WEB=1 cargo +$toolchain fuzz run ${flags[*]} $target $crash)"
            echo "minimize:  $bin_dir/$target -minimize_crash=1 -runs=100000 -exact_artifact_path=$crash.min $crash"
        fi
    fi
    echo "$line"
    summaries+=("$line")
done

echo
echo "==> fuzzing summary (${seconds}s per target, total $(elapsed "$started")s)"
printf '%s\n' "${summaries[@]}"
if [[ ${#failures[@]} -gt 0 ]]; then
    echo
    echo "FAILED: ${#failures[@]} target(s) crashed:"
    printf '  %s\n' "${failures[@]}"
    exit 1
fi
echo "no crashes"
