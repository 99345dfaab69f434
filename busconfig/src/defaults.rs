//! Which configuration a bus uses by default: the distribution's file when there is one,
//! otherwise telbus's own, embedded here.

use std::path::PathBuf;

/// The two standard buses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BusKind {
    Session,
    System,
}

/// The distribution's configuration file for this bus, if it has one: where dbus-daemon 1.14
/// looks (`/usr/share/dbus-1/`), then where older versions kept it (`/etc/dbus-1/`).
pub fn default_config_path(kind: BusKind) -> Option<PathBuf> {
    let name = match kind {
        BusKind::Session => "session.conf",
        BusKind::System => "system.conf",
    };
    ["/usr/share/dbus-1", "/etc/dbus-1"]
        .iter()
        .map(|dir| PathBuf::from(dir).join(name))
        .find(|p| p.is_file())
}

/// telbus's configuration for a bus on machines without dbus-daemon's files: the same effect
/// as dbus-daemon's session.conf and system.conf, local additions included from the same
/// places. Load it with [`crate::load_str`] (paths in it are absolute).
pub fn embedded_default(kind: BusKind) -> &'static str {
    match kind {
        BusKind::Session => SESSION,
        BusKind::System => SYSTEM,
    }
}

const SESSION: &str = r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<!-- telbus: a bus for one user's login session, used when the distribution has no
     session.conf. -->
<busconfig>
  <type>session</type>
  <keep_umask/>
  <listen>unix:tmpdir=/tmp</listen>
  <auth>EXTERNAL</auth>
  <standard_session_servicedirs/>

  <policy context="default">
    <!-- The bus belongs to one user: everything may be sent, received, watched and owned. -->
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>

  <includedir>/usr/share/dbus-1/session.d</includedir>
  <includedir>/etc/dbus-1/session.d</includedir>
  <include ignore_missing="yes">/etc/dbus-1/session-local.conf</include>

  <!-- Limits that only stop runaway clients: the user's own processes are not a threat. -->
  <limit name="max_incoming_bytes">1000000000</limit>
  <limit name="max_incoming_unix_fds">250000000</limit>
  <limit name="max_outgoing_bytes">1000000000</limit>
  <limit name="max_outgoing_unix_fds">250000000</limit>
  <limit name="max_message_size">1000000000</limit>
  <limit name="service_start_timeout">120000</limit>
  <limit name="auth_timeout">240000</limit>
  <limit name="pending_fd_timeout">150000</limit>
  <limit name="max_completed_connections">100000</limit>
  <limit name="max_incomplete_connections">10000</limit>
  <limit name="max_connections_per_user">100000</limit>
  <limit name="max_pending_service_starts">10000</limit>
  <limit name="max_names_per_connection">50000</limit>
  <limit name="max_match_rules_per_connection">50000</limit>
  <limit name="max_replies_per_connection">50000</limit>
</busconfig>
"#;

const SYSTEM: &str = r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<!-- telbus: the system bus, used when the distribution has no system.conf. Services open
     what they need in system.d files. -->
<busconfig>
  <type>system</type>
  <standard_system_servicedirs/>
  <pidfile>/run/dbus/pid</pidfile>
  <auth>EXTERNAL</auth>
  <listen>unix:path=/run/dbus/system_bus_socket</listen>

  <policy context="default">
    <!-- Every user may connect. -->
    <allow user="*"/>
    <!-- Nothing may be owned, and no method called, unless a system.d file says so. -->
    <deny own="*"/>
    <deny send_type="method_call"/>
    <!-- Signals, and replies that were asked for, may be sent; anything may be received. -->
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <!-- Everyone may talk to the bus itself, except for what only root should do. -->
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Properties"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Containers1"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"
          send_member="UpdateActivationEnvironment"/>
    <deny send_destination="org.freedesktop.DBus"
          send_interface="org.freedesktop.DBus.Debug.Stats"/>
    <deny send_destination="org.freedesktop.DBus"
          send_interface="org.freedesktop.systemd1.Activator"/>
  </policy>

  <policy user="root">
    <!-- systemd reports activation failures; root may monitor and read statistics. -->
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.systemd1.Activator"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Monitoring"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Debug.Stats"/>
  </policy>

  <includedir>/usr/share/dbus-1/system.d</includedir>
  <includedir>/etc/dbus-1/system.d</includedir>
  <include ignore_missing="yes">/etc/dbus-1/system-local.conf</include>
</busconfig>
"#;
