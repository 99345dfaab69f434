#!/usr/bin/env bash
# Fuzz everything telbus parses from outside: each libFuzzer target of fuzz/ for SECONDS
# (default 5), starting from the committed corpus in fuzz/corpus/<target>/. Prints the
# executions per target; exits non-zero when a target finds a crash (the input is left in
# fuzz/artifacts/<target>/: copy it to fuzz/regressions/<target>/, where
# dbus-tests/tests/fuzz_replay.rs replays it in every `cargo test`).
#
#   scripts/fuzz.sh [--ci] [SECONDS] [TARGET…]
#
# The targets are built with `cargo fuzz build -s none -a` when cargo-fuzz is installed, else
# with plain `cargo build` and the flags cargo-fuzz 0.13 passes for `-s none -a` (the same
# build, so the two share fuzz/target). No sanitizer, so the stable toolchain does; debug
# assertions (and so overflow checks) are on.
#
# --ci (what scripts/test-all.sh runs): never cargo-fuzz, and the lean `fuzz-ci` profile of
# fuzz/Cargo.toml (less optimisation, no debug info, parallel codegen), which builds in a
# fraction of the time; the instrumentation is the same.
#
# New inputs found go to fuzz/corpus-raw/ (not committed); to refresh the committed corpus
# after a long run:
#   cd fuzz && cargo fuzz cmin -s none -a TARGET corpus/TARGET
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
export CARGO_TERM_COLOR=never
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

ci=false
if [ "${1:-}" = --ci ]; then
    ci=true
    shift
fi
seconds="${1:-5}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(sasl wire_message wire_body match_rule busconfig service_file api bindings)
fi
command -v c++ >/dev/null || echo "libfuzzer-sys needs a C++ compiler (apt-get install g++)" >&2

triple="$(rustc -vV | sed -n 's/^host: //p')"
# cargo-fuzz's flags for `-s none -a` on Linux (src/project.rs, BuildOptions defaults):
# libFuzzer's coverage feedback (inline 8-bit counters, PC table, compares, stack depth),
# `--cfg fuzzing`, no branch folding (finer coverage), debug assertions.
rustflags=(
    -Cpasses=sancov-module
    -Cllvm-args=-sanitizer-coverage-level=4
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
    -Cllvm-args=-sanitizer-coverage-pc-table
    -Cllvm-args=-sanitizer-coverage-trace-compares
    --cfg fuzzing
    -Cllvm-args=-simplifycfg-branch-fold-threshold=0
    -Cllvm-args=-sanitizer-coverage-stack-depth
    -Cdebug-assertions
)
if $ci; then
    profile=fuzz-ci
    cargo_args=(--profile fuzz-ci)
else
    profile=release
    # cargo-fuzz's release build: one codegen unit (so ThinLTO can still inline through the
    # instrumentation) and line tables for the stack traces of crashes.
    rustflags+=(-Ccodegen-units=1)
    cargo_args=(--release --config 'profile.release.debug="line-tables-only"')
fi

started=$SECONDS
if ! $ci && cargo fuzz --version >/dev/null 2>&1; then
    cargo fuzz build -s none -a
else
    $ci || echo "cargo-fuzz is not installed: building with cargo and its flags" >&2
    RUSTFLAGS="${rustflags[*]} ${RUSTFLAGS:-}" \
        cargo build "${cargo_args[@]}" --target "$triple" --bins
fi
echo "fuzz targets built in $((SECONDS - started)) s ($profile profile)"
bin="target/$triple/$profile"

failed=()
printf '%-14s %12s %10s\n' target executions exec/s
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "corpus-raw/$target" "artifacts/$target"
    log="$(mktemp)"
    # New inputs go to the first directory (scratch); the committed corpus is only read.
    if "$bin/$target" -artifact_prefix="artifacts/$target/" \
        -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        "corpus-raw/$target" "corpus/$target" >"$log" 2>&1; then
        status=ok
    else
        status=CRASH
        failed+=("$target")
    fi
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)"
    printf '%-14s %12s %10s %s\n' "$target" "${runs:-?}" "${rate:-?}" "$status"
    if [ "$status" != ok ]; then
        tail -40 "$log" >&2
    fi
    rm -f "$log"
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "crashes in: ${failed[*]} (inputs in fuzz/artifacts/; add them to fuzz/regressions/)" >&2
    exit 1
fi
