#!/usr/bin/env bash
# Every test of telbus, from a fresh Debian machine with Rust: installs what the tests need,
# builds once (release: the tests, the reference suite and the benchmark share that build),
# runs the unit and end-to-end tests, fuzzes each parser briefly, then dbus's own test suite
# against telbusd and dbus-daemon side by side.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests drive: real clients, the reference daemon and its test suite.
packages=()
need() { command -v "$1" >/dev/null 2>&1 || packages+=("$2"); }
need dbus-daemon dbus-daemon
need dbus-send dbus-bin
need busctl systemd
need gdbus libglib2.0-bin
need xmllint libxml2-utils
# libfuzzer-sys compiles libFuzzer (C++) for the fuzz targets.
need c++ g++
# Real desktop software (dbus-tests/tests/real_software.rs): dconf's writer, activated from its
# own .service file, and the desktop schemas gsettings writes through it.
need dconf dconf-cli
[ -x /usr/libexec/dconf-service ] || packages+=(dconf-service)
[ -f /usr/share/glib-2.0/schemas/org.gnome.desktop.interface.gschema.xml ] || packages+=(gsettings-desktop-schemas)
[ -x /usr/lib/dbus-1.0/installed-tests/dbus/test-dbus-daemon ] || packages+=(dbus-tests)
# polkitd on a system bus served by telbusd (dbus-tests/tests/polkit.rs): the daemon, pkcheck and
# its user; unshare and setpriv run it in a private mount namespace and clients as other users.
[ -x /usr/lib/polkit-1/polkitd ] || packages+=(polkitd)
need unshare util-linux
need setpriv util-linux
if [ ${#packages[@]} -gt 0 ]; then
    echo "installing: ${packages[*]}"
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

export CARGO_TERM_COLOR=never
cargo build --release --workspace --all-targets -j2
cargo test --release --workspace -j2 --no-fail-fast
# Every fuzz target for a few seconds from its committed corpus (fuzz/ is its own workspace,
# built with the lean fuzz-ci profile, without cargo-fuzz); a crash fails the run.
./scripts/fuzz.sh --ci 5
cargo run --release -q -p telbus-dbus-tests --bin reference-suite
