#!/usr/bin/env bash
# Build telbusd and start a private session bus on a socket in a fresh temporary directory.
# It prints the address and a few busctl lines to try; Ctrl-C stops the bus.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p telbus-broker
dir=$(mktemp -d /tmp/telbus.XXXXXX)
cat > "$dir/bus.conf" <<CONF
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
mkdir -p "$dir/services"
trap 'kill "$pid" 2>/dev/null; rm -rf "$dir"' EXIT INT TERM
exec 3< <(target/release/telbusd --config-file="$dir/bus.conf" --nofork --print-address=1)
pid=$!
read -r address <&3
cat <<MSG
telbusd is running (pid $pid) at:

    $address

Try, in another shell:

    busctl --address=$address list
    busctl --address=$address status org.freedesktop.DBus
    busctl --address=$address call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus GetId
    busctl --address=$address monitor

Ctrl-C stops the bus.
MSG
wait "$pid"
