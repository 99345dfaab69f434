//! The bus configuration every test bus starts from.

use std::path::Path;

/// A session-like configuration: a private unix socket under `socket_dir`, EXTERNAL
/// authentication, a policy that allows everything (eavesdropping too, for monitors), limits far
/// above anything a test reaches, and `service_dir` as the only directory of activatable
/// services. `extra` is inserted last, so that its policies and limits win over the defaults.
pub fn session_config(listen: &str, service_dir: &Path, extra: &str) -> String {
    let service_dir = xml_escape(&service_dir.display().to_string());
    let listen = xml_escape(listen);
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <keep_umask/>
  <listen>{listen}</listen>
  <auth>EXTERNAL</auth>
  <servicedir>{service_dir}</servicedir>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
  <limit name="max_incoming_bytes">1000000000</limit>
  <limit name="max_incoming_unix_fds">250000000</limit>
  <limit name="max_outgoing_bytes">1000000000</limit>
  <limit name="max_outgoing_unix_fds">250000000</limit>
  <limit name="max_message_size">1000000000</limit>
  <limit name="service_start_timeout">10000</limit>
  <limit name="auth_timeout">10000</limit>
  <limit name="max_completed_connections">100000</limit>
  <limit name="max_incomplete_connections">10000</limit>
  <limit name="max_connections_per_user">100000</limit>
  <limit name="max_pending_service_starts">10000</limit>
  <limit name="max_names_per_connection">50000</limit>
  <limit name="max_match_rules_per_connection">50000</limit>
  <limit name="max_replies_per_connection">50000</limit>
{extra}
</busconfig>
"#
    )
}

/// Escapes text for an XML element's content.
fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
