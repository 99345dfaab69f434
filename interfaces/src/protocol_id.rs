//! The protocol id: an MD5 digest (as Legato's ifgen uses) of a canonical dump of the
//! parsed API and of everything it imports. Comments, whitespace and the spelling of
//! sizes (`[16]` or `[MAX]`) do not change it; any change to a name, type, size, value,
//! direction or the order of calls does.

use crate::model::*;
use md5::{Digest, Md5};
use std::fmt::Write;

/// Bumped if the dump format itself ever changes.
const FORMAT: &str = "telbus-api-v1";

/// 32 lower-case hex digits.
pub fn protocol_id(api: &Api) -> String {
    let digest = Md5::digest(canonical_dump(api).as_bytes());
    digest.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The text the protocol id is the digest of (also printed by `telbus-ifgen --hash -v`).
pub fn canonical_dump(api: &Api) -> String {
    let mut out = format!("{FORMAT}\n");
    dump_one(&mut out, api);
    for imported in api.imports.values() {
        dump_one(&mut out, imported);
    }
    out
}

fn ty(t: &Type) -> String {
    crate::dbus::telaf_type_name(t)
}

fn param(p: &Param) -> String {
    let dir = match p.direction {
        Direction::In => "IN",
        Direction::Out => "OUT",
    };
    match p.max {
        Some(max) => format!("{} {}[{max}] {dir}", ty(&p.ty), p.name),
        None => format!("{} {} {dir}", ty(&p.ty), p.name),
    }
}

fn params(ps: &[Param]) -> String {
    ps.iter().map(param).collect::<Vec<_>>().join(", ")
}

fn dump_one(out: &mut String, api: &Api) {
    let _ = writeln!(out, "API {}", api.name);
    for u in &api.uses {
        let _ = writeln!(out, "USETYPES {u}");
    }
    for d in &api.defines {
        match &d.value {
            DefineValue::Int(n) => {
                let _ = writeln!(out, "DEFINE {} = {n}", d.name);
            }
            DefineValue::Str(s) => {
                let _ = writeln!(out, "DEFINE {} = {s:?}", d.name);
            }
        }
    }
    for (kw, list) in [("ENUM", &api.enums), ("BITMASK", &api.bitmasks)] {
        for e in list {
            let members: Vec<String> = e
                .members
                .iter()
                .map(|m| format!("{}={}", m.name, m.value))
                .collect();
            let _ = writeln!(out, "{kw} {} {{{}}}", e.name, members.join(", "));
        }
    }
    for r in &api.references {
        let _ = writeln!(out, "REFERENCE {}", r.name);
    }
    for s in &api.structs {
        let _ = writeln!(out, "STRUCT {} {{{}}}", s.name, params(&s.members));
    }
    for h in &api.handlers {
        let _ = writeln!(out, "HANDLER {} ({})", h.name, params(&h.params));
    }
    for call in &api.calls {
        match call {
            Call::Event(e) => {
                let _ = writeln!(out, "EVENT {} ({})", e.name, params(&e.params));
            }
            Call::Function(f) => {
                let ret = f.returns.as_ref().map(ty).unwrap_or_else(|| "-".into());
                let _ = writeln!(out, "FUNCTION {ret} {} ({})", f.name, params(&f.params));
            }
        }
    }
}
