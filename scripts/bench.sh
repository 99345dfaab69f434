#!/usr/bin/env bash
# The benchmark, in one command: telbusd beside dbus-daemon, dbus-broker and busd (those that
# are installed) on private sockets, driven by the same raw-socket clients; prints a table with
# the ratios telbusd/other. Arguments go to telbus-bench (--json, --only NAMES, --seconds S,
# --rounds N, --workloads NAMES; see --help).
# Not a test: scripts/test-all.sh does not run it.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

# busd is a crate, not a Debian package: build it once into target/bench-tools (a long compile,
# so only when missing). Set TELBUS_BENCH_NO_BUSD=1 to skip it.
if [ -z "${TELBUS_BENCH_NO_BUSD:-}" ] && [ ! -x target/bench-tools/bin/busd ] && ! command -v busd >/dev/null; then
    echo "building busd 0.6 into target/bench-tools (once)" >&2
    cargo install -q busd --version '^0.6' --root target/bench-tools -j2 \
        || echo "busd could not be built: running without it" >&2
fi
command -v dbus-broker >/dev/null || echo "dbus-broker not installed (apt-get install dbus-broker): running without it" >&2

cargo build --release -q -j2 -p telbus-broker --bin telbusd -p telbus-dbus-tests --bin telbus-bench
exec target/release/telbus-bench "$@"
