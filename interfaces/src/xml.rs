//! D-Bus introspection XML for an API, with the TelAF facts kept as annotations.

use crate::dbus::{self, Arg};
use crate::model::Api;
use quick_xml::escape::escape as xml_escape;
use std::fmt::Write;

const DOCTYPE: &str = r#"<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">"#;

/// Escapes an attribute value; line breaks and tabs as character references so that
/// parsers do not normalise them to spaces.
fn escape(s: &str) -> String {
    xml_escape(s)
        .replace('\n', "&#10;")
        .replace('\r', "&#13;")
        .replace('\t', "&#9;")
}

/// A complete document: `<node>` holding the API's interface.
pub fn generate(api: &Api) -> String {
    let mut out = String::new();
    out.push_str(DOCTYPE);
    out.push_str("\n<node>\n");
    out.push_str(&interface_xml(api, "  "));
    out.push_str("</node>\n");
    out
}

/// Only the `<interface>` element, indented by `indent`.
pub fn interface_xml(api: &Api, indent: &str) -> String {
    let iface = dbus::interface(api);
    let mut out = String::new();
    let i1 = indent;
    let i2 = format!("{indent}  ");
    let i3 = format!("{indent}    ");
    let _ = writeln!(out, "{i1}<interface name=\"{}\">", escape(&iface.name));
    for m in &iface.methods {
        let _ = writeln!(out, "{i2}<method name=\"{}\">", escape(&m.name));
        for a in &m.in_args {
            write_arg(&mut out, &i3, a, Some("in"));
        }
        for a in &m.out_args {
            write_arg(&mut out, &i3, a, Some("out"));
        }
        write_annotations(&mut out, &i3, &m.annotations);
        let _ = writeln!(out, "{i2}</method>");
    }
    for s in &iface.signals {
        let _ = writeln!(out, "{i2}<signal name=\"{}\">", escape(&s.name));
        for a in &s.args {
            write_arg(&mut out, &i3, a, None);
        }
        write_annotations(&mut out, &i3, &s.annotations);
        let _ = writeln!(out, "{i2}</signal>");
    }
    write_annotations(&mut out, &i2, &iface.annotations);
    let _ = writeln!(out, "{i1}</interface>");
    out
}

fn write_arg(out: &mut String, indent: &str, a: &Arg, direction: Option<&str>) {
    let dir = direction
        .map(|d| format!(" direction=\"{d}\""))
        .unwrap_or_default();
    let head = format!(
        "{indent}<arg name=\"{}\" type=\"{}\"{dir}",
        escape(&a.name),
        escape(&a.signature)
    );
    if a.annotations.is_empty() {
        let _ = writeln!(out, "{head}/>");
    } else {
        let _ = writeln!(out, "{head}>");
        write_annotations(out, &format!("{indent}  "), &a.annotations);
        let _ = writeln!(out, "{indent}</arg>");
    }
}

fn write_annotations(out: &mut String, indent: &str, annotations: &[(String, String)]) {
    for (name, value) in annotations {
        let _ = writeln!(
            out,
            "{indent}<annotation name=\"{}\" value=\"{}\"/>",
            escape(name),
            escape(value)
        );
    }
}
