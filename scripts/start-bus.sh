#!/usr/bin/env bash
# Build telbus and start a private bus with the bundled TelAF-style services activatable.
set -euo pipefail

usage() {
    cat <<'HELP'
Usage: scripts/start-bus.sh [--no-build] [--help]

Builds telbusd, the services and the example clients (cargo build --release; --no-build skips
that), then starts telbusd on a socket in a fresh temporary directory, with the demo system
definition, and prints its address with lines to try. Ctrl-C stops the bus and removes the
directory.

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
  bindings         services/demo.bindings, given as telbusd --bindings: each service is an app
                   recognised by its executable and only it may own its name; the apps `demo`
                   (the example clients, exe */telaf-*) and `shell` (exe */busctl) are bound to
                   every service; any other client (dbus-send, gdbus...) is refused with
                   AccessDenied naming the missing binding. References the services hand out
                   are registered with the bus (io.telaf.Broker1) and released when their
                   client leaves. telbus-sdir list (or telbusctl bindings) shows it all.
  examples         target/release/telaf-call NUMBER makes a call with the generated zbus
                   proxy and prints its events; telaf-hold data|pm TAG|gpio N holds a reference
Each program takes --help. Logs of the bus and of activated services go to this terminal
(stderr); TELBUS_LOG=debug shows more.
HELP
}

build=1
case "${1:-}" in
-h | --help)
    usage
    exit 0
    ;;
--no-build) build=0 ;;
"") ;;
*)
    usage >&2
    exit 2
    ;;
esac

cd "$(dirname "$0")/.."
if [ "$build" = 1 ]; then
    cargo build --release -q -p telbus-broker -p telbus-services -p telbus-examples -p telbus-tools
fi
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
exec 3< <(exec "$bin/telbusd" --config-file="$dir/bus.conf" --nofork --print-address=1 \
    --bindings="$PWD/services/demo.bindings")
pid=$!
read -r address <&3
cat <<MSG
telbusd is running (pid $pid) at:

    $address

The TelAF-style services start on first use; services/demo.bindings says who may call them.
Try, in another shell:

    busctl --address=$address call io.telaf.infoService.le_info /io/telaf/le_info io.telaf.le_info GetImei
    busctl --address=$address call io.telaf.gpioService.le_gpioPin1 /io/telaf/le_gpioPin1 io.telaf.le_gpio Read
    busctl --address=$address monitor io.telaf.modemService.le_mcc
    $bin/telaf-call --address=$address +4930123
    $bin/telbus-sdir --address=$address list
    dbus-send --bus=$address --print-reply --dest=io.telaf.infoService.le_info /io/telaf/le_info io.telaf.le_info.GetImei

(the monitor and telaf-call together: a call made with the generated zbus proxy, and its
events on the bus; a number ending in 00 is busy, one ending in 99 never answers. busctl and
telaf-call are bound to the services; dbus-send is not, and is refused.) Ctrl-C stops the bus.
MSG
wait "$pid"
