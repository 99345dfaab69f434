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

/// This machine's system bus configuration, `/usr/share/dbus-1/system.conf`.
pub const SYSTEM_CONF: &str = "/usr/share/dbus-1/system.conf";

/// This machine's real system bus configuration (`system.conf`, and through it every
/// `system.d/*.conf`), changed only where it would reach outside the test: it listens on
/// `listen` instead of /run/dbus/system_bus_socket, runs as the test's user in the
/// foreground without a pid file or syslog, and activates services from `service_dir` only
/// (not the machine's, and not through the setuid helper). `extra` is inserted last, so
/// that its rules win over the machine's.
///
/// Panics if the machine has no system.conf.
pub fn system_config(listen: &str, service_dir: &Path, extra: &str) -> String {
    let text = std::fs::read_to_string(SYSTEM_CONF)
        .unwrap_or_else(|e| panic!("cannot read {SYSTEM_CONF}: {e}"));
    let mut text = without_elements(&text, &["user", "pidfile", "listen", "servicehelper"]);
    for empty in ["<fork/>", "<syslog/>", "<standard_system_servicedirs/>"] {
        text = text.replace(empty, "");
    }
    // Relative paths are relative to the file that says them, which is no longer in
    // /usr/share/dbus-1.
    text = text
        .replace(
            "<includedir>system.d</includedir>",
            "<includedir>/usr/share/dbus-1/system.d</includedir>",
        )
        .replace(
            ">contexts/dbus_contexts<",
            ">/usr/share/dbus-1/contexts/dbus_contexts<",
        );
    let ours = format!(
        "  <listen>{}</listen>\n  <servicedir>{}</servicedir>\n{extra}\n</busconfig>",
        xml_escape(listen),
        xml_escape(&service_dir.display().to_string())
    );
    let end = text
        .rfind("</busconfig>")
        .unwrap_or_else(|| panic!("{SYSTEM_CONF} has no </busconfig>"));
    text.replace_range(end.., &ours);
    text
}

/// `text` without the elements `<name>…</name>` for each of `names` (simple elements: text
/// content only, as system.conf writes them).
fn without_elements(text: &str, names: &[&str]) -> String {
    let mut text = text.to_string();
    for name in names {
        let (open, close) = (format!("<{name}>"), format!("</{name}>"));
        while let Some(start) = text.find(&open) {
            let Some(end) = text[start..].find(&close) else {
                break;
            };
            text.replace_range(start..start + end + close.len(), "");
        }
    }
    text
}
