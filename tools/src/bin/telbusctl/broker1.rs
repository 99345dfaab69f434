//! What telbus-sdir and telbusctl ask io.telaf.Broker1 (the bus's TelAF bindings and
//! references, telbusd --bindings), and how they print the answers.

use serde_json::Value as Json;
use zbus::Connection;

use crate::table::Table;

const DRIVER: &str = "org.freedesktop.DBus";
const PATH: &str = "/io/telaf/Broker1";
const IFACE: &str = "io.telaf.Broker1";

fn error_text(e: &zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(name, text, _) => {
            format!("{name}: {}", text.as_deref().unwrap_or(""))
        }
        other => other.to_string(),
    }
}

/// Calls a Broker1 method and returns its reply.
pub async fn call<B>(conn: &Connection, member: &str, body: &B) -> Result<zbus::Message, String>
where
    B: zbus::wire::export::serde::Serialize + zbus::wire::DynamicType,
{
    conn.call_method(Some(DRIVER), PATH, Some(IFACE), member, body)
        .await
        .map_err(|e| format!("{IFACE}.{member}: {}", error_text(&e)))
}

/// A Broker1 method that answers a string.
pub async fn call_text<B>(conn: &Connection, member: &str, body: &B) -> Result<String, String>
where
    B: zbus::wire::export::serde::Serialize + zbus::wire::DynamicType,
{
    call(conn, member, body)
        .await?
        .body()
        .deserialize::<String>()
        .map_err(|e| format!("{IFACE}.{member}: unexpected reply: {e}"))
}

/// A Broker1 method that answers JSON (List, References).
pub async fn call_json(conn: &Connection, member: &str) -> Result<Json, String> {
    let text = call_text(conn, member, &()).await?;
    serde_json::from_str(&text).map_err(|e| format!("{IFACE}.{member}: not JSON: {e}"))
}

fn s(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        Json::Null => "-".into(),
        other => other.to_string(),
    }
}

fn items(v: &Json) -> &[Json] {
    v.as_array().map_or(&[], Vec::as_slice)
}

/// List as telbusctl prints it: bindings, services and waiting clients, one table each.
pub fn bindings_tables(list: &Json) -> String {
    let mut bindings = Table::new(&["CLIENT", "INTERFACE", "SERVER", "SERVICE", "ORIGIN"]);
    for b in items(&list["bindings"]) {
        bindings.row([
            s(&b["client"]),
            s(&b["interface"]),
            s(&b["server"]),
            s(&b["service"]),
            s(&b["origin"]),
        ]);
    }
    let mut services = Table::new(&["BUS NAME", "API", "PROTOCOL ID", "OWNER", "PID"]);
    for v in items(&list["services"]) {
        services.row([
            s(&v["busName"]),
            s(&v["api"]),
            s(&v["protocolId"]),
            s(&v["owner"]),
            s(&v["pid"]),
        ]);
    }
    let mut waiting = Table::new(&["CLIENT", "PRINCIPAL", "PID", "INTERFACE", "STATE", "FOR"]);
    for w in items(&list["waiting"]) {
        waiting.row([
            s(&w["client"]),
            s(&w["principal"]),
            s(&w["pid"]),
            s(&w["interface"]),
            s(&w["state"]),
            s(&w["for"]),
        ]);
    }
    format!(
        "bindings ({}):\n{}\n\nservices:\n{}\n\nwaiting clients:\n{}",
        s(&list["file"]),
        bindings.render(),
        services.render(),
        waiting.render()
    )
}

/// List in the layout of TelAF's `sdir list`.
pub fn sdir_list(list: &Json) -> String {
    let mut out = String::from("\nBINDINGS\n\n");
    for b in items(&list["bindings"]) {
        out.push_str(&format!(
            "        {}.{} -> {}.{}\n",
            s(&b["client"]),
            s(&b["interface"]),
            s(&b["server"]),
            s(&b["service"])
        ));
    }
    out.push_str("\nSERVICES\n\n");
    for v in items(&list["services"]) {
        let state = match (&v["owner"], &v["pid"]) {
            (Json::String(owner), pid) => format!("{owner}, pid {}", s(pid)),
            _ => "not advertised".into(),
        };
        out.push_str(&format!(
            "        {}.{}  (protocol ID = '{}', {state})\n",
            s(&v["app"]),
            s(&v["service"]),
            s(&v["protocolId"])
        ));
    }
    out.push_str("\nWAITING CLIENTS\n\n");
    for w in items(&list["waiting"]) {
        let what = match &w["for"] {
            Json::String(target) => format!("WAITING for {target}"),
            _ => "UNBOUND".into(),
        };
        out.push_str(&format!(
            "        [pid {:>5}] {}.{} {what}  (protocol ID = '{}', {})\n",
            s(&w["pid"]),
            s(&w["principal"]),
            s(&w["interface"]),
            s(&w["protocolId"]),
            s(&w["client"])
        ));
    }
    out
}

/// References as a table: one row per live reference; `filter` keeps one service (by unique
/// name or one of its names) or one client (by unique name).
pub fn references_table(refs: &Json, filter: Option<&str>) -> String {
    let mut t = Table::new(&["SERVICE", "NAMES", "CLIENT", "PRINCIPAL", "PATH", "SHARED"]);
    let principal_of = |client: &Json| {
        items(&refs["clients"])
            .iter()
            .find(|c| &c["client"] == client)
            .map_or("-".into(), |c| s(&c["principal"]))
    };
    for service in items(&refs["services"]) {
        let names: Vec<String> = items(&service["names"]).iter().map(s).collect();
        let service_name = s(&service["service"]);
        for r in items(&service["references"]) {
            let client = s(&r["client"]);
            let keep = filter
                .is_none_or(|f| f == service_name || f == client || names.iter().any(|n| n == f));
            if !keep {
                continue;
            }
            t.row([
                service_name.clone(),
                if names.is_empty() {
                    "-".into()
                } else {
                    names.join(",")
                },
                client,
                principal_of(&r["client"]),
                s(&r["path"]),
                if r["shared"] == Json::Bool(true) {
                    "yes".into()
                } else {
                    "no".into()
                },
            ]);
        }
    }
    t.render()
}
