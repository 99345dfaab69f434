//! Where the distribution keeps its bus configurations, the standard service directories, and
//! the configurations telbusd uses when the distribution has none.

use std::path::PathBuf;

use crate::ServiceDir;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusKind {
    Session,
    System,
}

/// The distribution's configuration file for this kind of bus, if it has one.
pub fn default_config_path(kind: BusKind) -> Option<PathBuf> {
    let name = match kind {
        BusKind::Session => "session.conf",
        BusKind::System => "system.conf",
    };
    ["/usr/share/dbus-1", "/etc/dbus-1"]
        .iter()
        .map(|dir| PathBuf::from(dir).join(name))
        .find(|p| p.exists())
}

/// telbus's own configuration, for machines without dbus-daemon's files: the same effect as
/// dbus-daemon's session.conf and system.conf.
pub fn embedded_default(kind: BusKind) -> &'static str {
    match kind {
        BusKind::Session => SESSION,
        BusKind::System => SYSTEM,
    }
}

const SESSION: &str = r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<!-- telbus: the per-login-session bus, for when the distribution has no session.conf. -->
<busconfig>
  <type>session</type>
  <keep_umask/>
  <listen>unix:tmpdir=/tmp</listen>
  <auth>EXTERNAL</auth>
  <standard_session_servicedirs/>
  <policy context="default">
    <!-- Everything is allowed on a bus that belongs to one user. -->
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
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
<!-- telbus: the system bus, for when the distribution has no system.conf. Services add their
     rules in system.d. -->
<busconfig>
  <type>system</type>
  <listen>unix:path=/run/dbus/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <pidfile>/run/dbus/pid</pidfile>
  <standard_system_servicedirs/>
  <policy context="default">
    <!-- Anyone may connect; nothing else is allowed unless a rule says so. -->
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Peer"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus" send_member="UpdateActivationEnvironment"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Debug.Stats"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.systemd1.Activator"/>
  </policy>
  <policy user="root">
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.systemd1.Activator"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Debug.Stats"/>
  </policy>
  <includedir>/usr/share/dbus-1/system.d</includedir>
  <includedir>/etc/dbus-1/system.d</includedir>
</busconfig>
"#;

fn env_dir(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// `<standard_session_servicedirs/>`, in dbus-daemon's order: the runtime directory (transient
/// services), XDG_DATA_HOME, each of XDG_DATA_DIRS.
pub fn session_service_dirs() -> Vec<ServiceDir> {
    let mut dirs = Vec::new();
    if let Some(runtime) = env_dir("XDG_RUNTIME_DIR") {
        dirs.push(runtime.join("dbus-1/services"));
    }
    let data_home = env_dir("XDG_DATA_HOME")
        .or_else(|| env_dir("HOME").map(|h| h.join(".local/share")));
    if let Some(home) = data_home {
        dirs.push(home.join("dbus-1/services"));
    }
    let data_dirs = std::env::var("XDG_DATA_DIRS")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "/usr/local/share:/usr/share".into());
    for dir in data_dirs.split(':').filter(|d| !d.is_empty()) {
        dirs.push(PathBuf::from(dir).join("dbus-1/services"));
    }
    dirs.push(PathBuf::from("/usr/share/dbus-1/services"));
    dirs.into_iter()
        .map(|path| ServiceDir { path, system: false })
        .collect()
}

/// `<standard_system_servicedirs/>`.
pub fn system_service_dirs() -> Vec<ServiceDir> {
    [
        "/usr/local/share/dbus-1/system-services",
        "/usr/share/dbus-1/system-services",
        "/lib/dbus-1/system-services",
    ]
    .iter()
    .map(|p| ServiceDir {
        path: PathBuf::from(p),
        system: true,
    })
    .collect()
}
