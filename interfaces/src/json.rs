//! A JSON dump of an API for tools: the model (docs included) plus the D-Bus mapping.

use crate::dbus::{self, Arg};
use crate::model::Api;
use serde_json::{Value, json};

fn args(list: &[Arg]) -> Value {
    list.iter()
        .map(|a| {
            let notes: serde_json::Map<String, Value> = a
                .annotations
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            json!({ "name": a.name, "signature": a.signature, "annotations": notes })
        })
        .collect()
}

pub fn to_value(api: &Api) -> Value {
    let iface = dbus::interface(api);
    let methods: Vec<Value> = iface
        .methods
        .iter()
        .map(|m| json!({ "name": m.name, "in": args(&m.in_args), "out": args(&m.out_args) }))
        .collect();
    let signals: Vec<Value> = iface
        .signals
        .iter()
        .map(|s| json!({ "name": s.name, "args": args(&s.args) }))
        .collect();
    json!({
        "api": serde_json::to_value(api).expect("the model serializes"),
        "imports": api.imports.keys().collect::<Vec<_>>(),
        "protocolId": crate::protocol_id::protocol_id(api),
        "dbus": { "interface": iface.name, "methods": methods, "signals": signals },
    })
}

pub fn generate(api: &Api) -> String {
    let mut s = serde_json::to_string_pretty(&to_value(api)).expect("JSON");
    s.push('\n');
    s
}
