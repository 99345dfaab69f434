#!/usr/bin/env bash
# Fuzz everything telbus parses from outside: each cargo-fuzz target of fuzz/ for SECONDS
# (default 5), starting from the committed corpus in fuzz/corpus/<target>/. Prints the
# executions per target; exits non-zero when a target finds a crash (the input is left in
# fuzz/artifacts/<target>/: copy it to fuzz/regressions/<target>/, where
# dbus-tests/tests/fuzz_replay.rs replays it in every `cargo test`).
#
#   scripts/fuzz.sh [SECONDS] [TARGET…]
#
# Runs on the stable toolchain: without a sanitizer (`-s none`) cargo-fuzz passes only stable
# `-C` flags. Debug assertions (and so overflow checks) are on (`-a`). New inputs found go to
# fuzz/corpus-raw/ (not committed); to refresh the committed corpus after a long run:
#   cd fuzz && cargo fuzz cmin -s none -a TARGET corpus/TARGET
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
export CARGO_TERM_COLOR=never
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

seconds="${1:-5}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(sasl wire_message match_rule busconfig service_file api bindings)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked -j2
fi
command -v c++ >/dev/null || echo "libfuzzer-sys needs a C++ compiler (apt-get install g++)" >&2

flags=(-s none -a)
cargo fuzz build "${flags[@]}"

failed=()
printf '%-14s %12s %10s\n' target executions exec/s
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "corpus-raw/$target"
    log="$(mktemp)"
    # New inputs go to the first directory (scratch); the committed corpus is only read.
    if cargo fuzz run "${flags[@]}" "$target" "corpus-raw/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        >"$log" 2>&1; then
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
