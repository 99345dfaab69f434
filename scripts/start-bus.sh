#!/usr/bin/env bash
# Build telbus and start a private bus with the bundled TelAF-style services activatable.
set -euo pipefail

usage() {
    cat <<'HELP'
Usage: scripts/start-bus.sh [--help]

Builds telbusd, the services and the example clients (cargo build --release), then starts
telbusd on a socket in a fresh temporary directory and prints its address with busctl lines
to try. Ctrl-C stops the bus and removes the directory.

The pieces:
  telbusd          the bus, with a session-like configuration written into the temp dir
                   (allow everything, monitoring included) and one service directory
  services         services/dbus-1/services/*.service, copied into that directory with Exec
                   pointing at target/release: each service starts on first use (activation)
                     io.telaf.infoService.le_info           telbus-le-info (IMEI, firmware...)
                     io.telaf.modemService.le_mcc           telbus-le-mcc (voice calls)
                     io.telaf.dataConnectionService.le_data telbus-le-data (data connection)
                     io.telaf.powerMgr.le_pm                telbus-le-pm (wakeup sources)
                     io.telaf.gpioService.le_gpioPin1..4    telbus-le-gpio --pin N
  examples         target/release/telaf-call NUMBER makes a call with the generated zbus
                   proxy and prints its events; telaf-hold data|pm TAG holds a reference
Each program takes --help. Logs of activated services go to the bus's stderr (this terminal);
TELBUS_LOG=debug shows more.
HELP
}

case "${1:-}" in
-h | --help)
    usage
    exit 0
    ;;
"") ;;
*)
    usage >&2
    exit 2
    ;;
esac

cd "$(dirname "$0")/.."
cargo build --release -q -p telbus-broker -p telbus-services -p telbus-examples
bin="$PWD/target/release"
dir=$(mktemp -d /tmp/telbus.XXXXXX)
mkdir -p "$dir/services"
for file in services/dbus-1/services/*.service; do
    sed "s|/usr/libexec/telbus|$bin|" "$file" >"$dir/services/$(basename "$file")"
done
cat >"$dir/bus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=$dir/bus</listen>
  <auth>EXTERNAL</auth>
  <servicedir>$dir/services</servicedir>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
CONF
trap 'kill "$pid" 2>/dev/null; rm -rf "$dir"' EXIT INT TERM
exec 3< <(exec "$bin/telbusd" --config-file="$dir/bus.conf" --nofork --print-address=1)
pid=$!
read -r address <&3
cat <<MSG
telbusd is running (pid $pid) at:

    $address

The TelAF-style services start on first use. Try, in another shell:

    busctl --address=$address call io.telaf.infoService.le_info /io/telaf/le_info io.telaf.le_info GetImei
    busctl --address=$address call io.telaf.gpioService.le_gpioPin1 /io/telaf/le_gpioPin1 io.telaf.le_gpio Read
    busctl --address=$address monitor io.telaf.modemService.le_mcc
    target/release/telaf-call --address=$address +4930123

(the last two together: a call made with the generated zbus proxy, and its events on the bus;
a number ending in 00 is busy, one ending in 99 never answers). Ctrl-C stops the bus.
MSG
wait "$pid"
