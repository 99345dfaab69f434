//! Rust code generation (zbus 6).
//!
//! For each API, one module `pub mod <api>` (meant for `include!`, see [`crate::build`]):
//! - consts: `API_NAME`, `INTERFACE`, `PROTOCOL_ID`, `INTROSPECTION_XML`, and the DEFINEs;
//! - the API's types: ENUMs as Rust enums (`#[repr(i32)]`/`i64`, `TryFrom`), BITMASKs as
//!   `bitflags` types, STRUCTs with serde and `zbus::wire::Type` (fields in wire form);
//! - `client::<Api>Proxy`: a `#[zbus::proxy]` in wire types (ENUMs as integers, BITMASKs as
//!   their bits, REFERENCEs as object paths; convert with `From`/`TryFrom`);
//! - `server::<Api>`: the trait a service implements. Methods are async (they return
//!   `impl Future + Send`; an `async fn` in the impl is fine) and receive typed, already
//!   validated arguments plus a [`Context`](#) with the caller's unique name;
//! - `server::<Api>Server<T>`: serves a `T: <Api>` as `#[zbus::interface(name = "io.telaf.<api>")]`.
//!   It checks string byte lengths, array lengths, ENUM and BITMASK values and the int8 range
//!   before calling `T`, answering `org.freedesktop.DBus.Error.InvalidArgs` naming the argument
//!   and the limit. It mints handler paths for EVENTs (owned by the subscriber; removal by
//!   anyone else is `AccessDenied`) and callback tokens for one-shot handlers;
//! - `server::emit_<event>` / `server::emit_<function>_callback`: send the unicast signals.
//!
//! The shared part (`LeResult`, `LeOnOff`, `Context`, `Subscriber`, the handler registry, the
//! `io.telaf.Service1` interface with the `ProtocolId` property) is generated once per output
//! directory as module `telaf_common` (see [`common`]); API modules refer to it as
//! `super::telaf_common`, and to imported APIs as `super::<import>`.

use crate::dbus;
use crate::model::*;
use std::fmt::Write;

/// The `le_result_t` codes (values from Legato's le_basics.h): the single table from
/// which the generated `LeResult` is made.
pub const LE_RESULT_CODES: &[(&str, &str, i32)] = &[
    ("Ok", "LE_OK", 0),
    ("NotFound", "LE_NOT_FOUND", -1),
    ("NotPossible", "LE_NOT_POSSIBLE", -2),
    ("OutOfRange", "LE_OUT_OF_RANGE", -3),
    ("NoMemory", "LE_NO_MEMORY", -4),
    ("NotPermitted", "LE_NOT_PERMITTED", -5),
    ("Fault", "LE_FAULT", -6),
    ("CommError", "LE_COMM_ERROR", -7),
    ("Timeout", "LE_TIMEOUT", -8),
    ("Overflow", "LE_OVERFLOW", -9),
    ("Underflow", "LE_UNDERFLOW", -10),
    ("WouldBlock", "LE_WOULD_BLOCK", -11),
    ("Deadlock", "LE_DEADLOCK", -12),
    ("FormatError", "LE_FORMAT_ERROR", -13),
    ("Duplicate", "LE_DUPLICATE", -14),
    ("BadParameter", "LE_BAD_PARAMETER", -15),
    ("Closed", "LE_CLOSED", -16),
    ("Busy", "LE_BUSY", -17),
    ("Unsupported", "LE_UNSUPPORTED", -18),
    ("IoError", "LE_IO_ERROR", -19),
    ("NotImplemented", "LE_NOT_IMPLEMENTED", -20),
    ("Unavailable", "LE_UNAVAILABLE", -21),
    ("Terminated", "LE_TERMINATED", -22),
    ("InProgress", "LE_IN_PROGRESS", -23),
    ("Suspended", "LE_SUSPENDED", -24),
];

const STRING: &str = "::std::string::String";
const VEC: &str = "::std::vec::Vec";
const PATH: &str = "::zbus::wire::OwnedObjectPath";
const FDO_RESULT: &str = "::zbus::fdo::Result";

const RUST_KEYWORDS: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern",
    "false", "fn", "for", "gen", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut",
    "pub", "ref", "return", "self", "Self", "static", "struct", "super", "trait", "true", "type",
    "unsafe", "use", "where", "while", "abstract", "become", "box", "do", "final", "macro",
    "override", "priv", "typeof", "unsized", "virtual", "yield", "try",
];

/// A name usable as a Rust identifier (`r#type` for keywords).
pub fn ident(name: &str) -> String {
    if RUST_KEYWORDS.contains(&name) {
        if matches!(name, "self" | "Self" | "super" | "crate") {
            format!("{name}_")
        } else {
            format!("r#{name}")
        }
    } else {
        name.to_string()
    }
}

/// `GetRemoteTel` → `get_remote_tel`, `phoneNumPtr` → `phone_num_ptr`, `GetICCID` → `get_iccid`.
pub fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev = i.checked_sub(1).map(|j| chars[j]);
            let next = chars.get(i + 1);
            let boundary = match prev {
                Some(p) if p.is_ascii_lowercase() || p.is_ascii_digit() => true,
                Some(p) if p.is_ascii_uppercase() => next.is_some_and(|n| n.is_ascii_lowercase()),
                _ => false,
            };
            if boundary && !out.ends_with('_') {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    ident(&out)
}

/// `le_mcc` → `LeMcc`.
pub fn camel_case(name: &str) -> String {
    name.split('_')
        .filter(|s| !s.is_empty())
        .map(|s| {
            let mut c = s.chars();
            let first = c.next().unwrap().to_ascii_uppercase();
            std::iter::once(first).chain(c).collect::<String>()
        })
        .collect()
}

/// Writes indented lines.
struct Out {
    text: String,
    depth: usize,
}

impl Out {
    fn line(&mut self, s: impl AsRef<str>) {
        let s = s.as_ref();
        if s.is_empty() {
            self.text.push('\n');
            return;
        }
        for _ in 0..self.depth {
            self.text.push_str("    ");
        }
        self.text.push_str(s);
        self.text.push('\n');
    }

    fn open(&mut self, s: impl AsRef<str>) {
        self.line(s);
        self.depth += 1;
    }

    fn close(&mut self, s: impl AsRef<str>) {
        self.depth -= 1;
        self.line(s);
    }

    fn doc(&mut self, doc: &Option<String>) {
        if let Some(d) = doc {
            for l in d.lines() {
                if l.is_empty() {
                    self.line("///");
                } else {
                    self.line(format!("/// {l}"));
                }
            }
        }
    }
}

/// What to generate for an API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Types, consts, client proxy and server side.
    Full,
    /// Types and consts only (an API used through USETYPES).
    TypesOnly,
}

struct Gen<'a> {
    api: &'a Api,
}

impl Gen<'_> {
    /// A user type's path from inside the API module (or its submodules, which glob-import it).
    fn type_path(&self, t: &TypeName) -> String {
        if t.api == self.api.name {
            t.name.clone()
        } else {
            format!("{}::{}", t.api, t.name)
        }
    }

    /// The type the implementation sees.
    fn typed(&self, ty: &Type) -> String {
        match ty {
            Type::Basic(b) => match b {
                Basic::I8 => "i8".into(),
                Basic::LeResult => "telaf_common::LeResult".into(),
                Basic::LeOnOff => "telaf_common::LeOnOff".into(),
                _ => self.wire(ty),
            },
            Type::Enum(t) | Type::Bitmask(t) => self.type_path(t),
            _ => self.wire(ty),
        }
    }

    /// The type on the wire (what zbus serializes).
    fn wire(&self, ty: &Type) -> String {
        match ty {
            Type::Basic(b) => match b {
                Basic::U8 | Basic::Char => "u8",
                Basic::I8 | Basic::I16 => "i16",
                Basic::U16 => "u16",
                Basic::U32 | Basic::Size => "u32",
                Basic::I32 | Basic::LeResult | Basic::LeOnOff => "i32",
                Basic::U64 => "u64",
                Basic::I64 => "i64",
                Basic::Double => "f64",
                Basic::Bool => "bool",
                Basic::String => STRING,
                Basic::File => "::zbus::OwnedFd",
            }
            .to_string(),
            Type::Enum(t) => if self.api.find_enum(t).wide {
                "i64"
            } else {
                "i32"
            }
            .into(),
            Type::Bitmask(t) => if self.api.find_bitmask(t).wide {
                "u64"
            } else {
                "u32"
            }
            .into(),
            Type::Reference(_) => PATH.into(),
            Type::Struct(t) => self.type_path(t),
            Type::Handler(_) => unreachable!("handlers are not marshalled"),
        }
    }

    fn param_typed(&self, p: &Param) -> String {
        let t = self.typed(&p.ty);
        if p.is_array() {
            format!("{VEC}<{t}>")
        } else {
            t
        }
    }

    fn param_wire(&self, p: &Param) -> String {
        let t = self.wire(&p.ty);
        if p.is_array() {
            format!("{VEC}<{t}>")
        } else {
            t
        }
    }

    /// How a client passes an argument (borrowed where zbus allows it).
    fn param_client(&self, p: &Param) -> String {
        if p.is_array() {
            return format!("&[{}]", self.wire(&p.ty));
        }
        match &p.ty {
            Type::Basic(Basic::String) => "&str".into(),
            Type::Basic(Basic::File) => "::zbus::Fd<'_>".into(),
            Type::Reference(_) => "&::zbus::wire::ObjectPath<'_>".into(),
            Type::Struct(t) => format!("&{}", self.type_path(t)),
            ty => self.wire(ty),
        }
    }

    /// An expression turning wire value `v` (of `p`) into its typed form, `?` on error.
    fn typed_from_wire(&self, p: &Param, v: &str) -> String {
        let arg = &p.name;
        let scalar = |x: &str| -> Option<String> {
            Some(match &p.ty {
                Type::Basic(Basic::I8) => format!("telaf_common::check_int8({arg:?}, {x})?"),
                Type::Basic(Basic::LeResult) => {
                    format!("telaf_common::LeResult::from_wire({arg:?}, {x})?")
                }
                Type::Basic(Basic::LeOnOff) => {
                    format!("telaf_common::LeOnOff::from_wire({arg:?}, {x})?")
                }
                Type::Enum(t) | Type::Bitmask(t) => {
                    format!("{}::from_wire({arg:?}, {x})?", self.type_path(t))
                }
                _ => return None,
            })
        };
        let mut checks = String::new();
        match (&p.ty, p.max) {
            (Type::Basic(Basic::String), Some(max)) => {
                let _ = write!(
                    checks,
                    "telaf_common::check_string({arg:?}, &{v}, {max})?; "
                );
            }
            (_, Some(max)) => {
                let _ = write!(
                    checks,
                    "telaf_common::check_array({arg:?}, {v}.len(), {max})?; "
                );
            }
            _ => {}
        }
        if let Type::Struct(_) = p.ty {
            if p.is_array() {
                let _ = write!(checks, "for x in &{v} {{ x.check({arg:?})?; }} ");
            } else {
                let _ = write!(checks, "{v}.check({arg:?})?; ");
            }
        }
        let value = if p.is_array() {
            match scalar("x") {
                Some(conv) => format!(
                    "{v}.into_iter().map(|x| Ok({conv})).collect::<{FDO_RESULT}<{VEC}<_>>>()?"
                ),
                None => v.to_string(),
            }
        } else {
            scalar(v).unwrap_or_else(|| v.to_string())
        };
        if checks.is_empty() {
            value
        } else {
            format!("{{ {checks}{value} }}")
        }
    }

    /// An expression turning typed value `v` into its wire form.
    fn wire_from_typed(&self, ty: &Type, is_array: bool, v: &str) -> String {
        let scalar = |x: &str| -> Option<String> {
            Some(match ty {
                Type::Basic(Basic::I8) => format!("i16::from({x})"),
                Type::Basic(Basic::LeResult) | Type::Basic(Basic::LeOnOff) => {
                    format!("{x}.to_wire()")
                }
                Type::Enum(_) | Type::Bitmask(_) => format!("{x}.to_wire()"),
                _ => return None,
            })
        };
        if is_array {
            match scalar("x") {
                Some(conv) => format!("{v}.into_iter().map(|x| {conv}).collect::<{VEC}<_>>()"),
                None => v.to_string(),
            }
        } else {
            scalar(v).unwrap_or_else(|| v.to_string())
        }
    }
}

/// Generates the module for `api`.
pub fn generate(api: &Api, mode: Mode) -> String {
    let g = Gen { api };
    let mut o = Out {
        text: String::new(),
        depth: 0,
    };
    o.line(format!(
        "// Generated by telbus-ifgen from {}.api. Do not edit.",
        api.name
    ));
    o.line("");
    if let Some(d) = &api.doc {
        for l in d.lines() {
            o.line(format!("/// {l}").trim_end());
        }
    } else {
        o.line(format!("/// The TelAF API `{}` on D-Bus.", api.name));
    }
    o.line("#[allow(non_camel_case_types, non_snake_case, non_upper_case_globals, dead_code, unused_imports, unused_variables, clippy::all)]");
    o.open(format!("pub mod {} {{", api.name));
    o.line("use super::telaf_common;");
    for import in api.imports.keys() {
        o.line(format!("use super::{import};"));
    }
    o.line("");
    o.line("/// The API name (the `.api` file name).");
    o.line(format!("pub const API_NAME: &str = {:?};", api.name));
    o.line("/// The D-Bus interface.");
    o.line(format!(
        "pub const INTERFACE: &str = {:?};",
        api.interface_name()
    ));
    o.line("/// The digest of the API's signatures; also the `io.telaf.ProtocolId` annotation.");
    o.line(format!(
        "pub const PROTOCOL_ID: &str = {:?};",
        crate::protocol_id::protocol_id(api)
    ));
    if mode == Mode::Full {
        o.line("/// The introspection XML, with the TelAF annotations.");
        o.line(format!(
            "pub const INTROSPECTION_XML: &str = r#\"{}\"#;",
            crate::xml::generate(api)
        ));
    }
    defines(&mut o, api);
    for e in &api.enums {
        enum_type(&mut o, e);
    }
    for b in &api.bitmasks {
        bitmask_type(&mut o, b);
    }
    for r in &api.references {
        o.line("");
        o.doc(&r.doc);
        o.line(format!(
            "/// REFERENCE `{}`: an object path on the wire (`/` is NULL).",
            r.name
        ));
        o.line(format!(
            "pub type {} = ::zbus::wire::OwnedObjectPath;",
            r.name
        ));
    }
    for s in &api.structs {
        struct_type(&g, &mut o, s);
    }
    if mode == Mode::Full {
        o.line("");
        o.line(
            "/// The `io.telaf.Service1` object to serve next to the API (property `ProtocolId`).",
        );
        o.open("pub fn service1() -> telaf_common::Service1 {");
        o.line("telaf_common::Service1::new(API_NAME, PROTOCOL_ID)");
        o.close("}");
        client(&g, &mut o);
        server(&g, &mut o);
    }
    o.close("}");
    o.text
}

fn defines(o: &mut Out, api: &Api) {
    for d in &api.defines {
        o.line("");
        o.doc(&d.doc);
        match &d.value {
            DefineValue::Int(n) if *n > i64::MAX as i128 => {
                o.line(format!("pub const {}: u64 = {n};", ident(&d.name)))
            }
            DefineValue::Int(n) => o.line(format!("pub const {}: i64 = {n};", ident(&d.name))),
            DefineValue::Str(s) => o.line(format!("pub const {}: &str = {s:?};", ident(&d.name))),
        }
    }
}

fn enum_type(o: &mut Out, e: &EnumType) {
    let repr = if e.wide { "i64" } else { "i32" };
    let name = &e.name;
    o.line("");
    o.doc(&e.doc);
    o.line("#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]");
    o.line(format!("#[repr({repr})]"));
    o.open(format!("pub enum {name} {{"));
    for m in &e.members {
        o.doc(&m.doc);
        o.line(format!("{} = {},", ident(&m.name), m.value));
    }
    o.close("}");
    o.line("");
    o.open(format!("impl {name} {{"));
    o.line("/// Every member, in declaration order.");
    let all: Vec<String> = e
        .members
        .iter()
        .map(|m| format!("{name}::{}", ident(&m.name)))
        .collect();
    o.line(format!("pub const ALL: &[{name}] = &[{}];", all.join(", ")));
    o.line("");
    o.line("/// The member's name as written in the API.");
    o.open("pub fn name(self) -> &'static str {");
    if e.members.is_empty() {
        o.line("match self {}");
    } else {
        o.open("match self {");
        for m in &e.members {
            o.line(format!("{name}::{} => {:?},", ident(&m.name), m.name));
        }
        o.close("}");
    }
    o.close("}");
    o.line("");
    o.open(format!("pub fn to_wire(self) -> {repr} {{"));
    o.line(format!("self as {repr}"));
    o.close("}");
    o.line("");
    o.line("/// Converts a received value; unknown values are `InvalidArgs` naming the argument.");
    o.open(format!(
        "pub fn from_wire(arg: &str, value: {repr}) -> ::zbus::fdo::Result<Self> {{"
    ));
    o.line(format!(
        "Self::try_from(value).map_err(|v| ::zbus::fdo::Error::InvalidArgs(format!(\"argument '{{arg}}': {{v}} is not a value of ENUM {name}\")))"
    ));
    o.close("}");
    o.close("}");
    o.line("");
    o.open(format!(
        "impl ::core::convert::TryFrom<{repr}> for {name} {{"
    ));
    o.line(format!("type Error = {repr};"));
    o.open(format!(
        "fn try_from(value: {repr}) -> ::core::result::Result<Self, {repr}> {{"
    ));
    o.open("match value {");
    for m in &e.members {
        o.line(format!("{} => Ok({name}::{}),", m.value, ident(&m.name)));
    }
    o.line("other => Err(other),");
    o.close("}");
    o.close("}");
    o.close("}");
    o.line("");
    o.open(format!("impl ::core::convert::From<{name}> for {repr} {{"));
    o.open(format!("fn from(value: {name}) -> {repr} {{"));
    o.line(format!("value as {repr}"));
    o.close("}");
    o.close("}");
}

fn bitmask_type(o: &mut Out, b: &EnumType) {
    let bits = if b.wide { "u64" } else { "u32" };
    let name = &b.name;
    o.line("");
    o.open("::bitflags::bitflags! {");
    o.doc(&b.doc);
    o.line("#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]");
    o.open(format!("pub struct {name}: {bits} {{"));
    for m in &b.members {
        o.doc(&m.doc);
        o.line(format!("const {} = {:#x};", m.name, m.value));
    }
    o.close("}");
    o.close("}");
    o.line("");
    o.open(format!("impl {name} {{"));
    o.open(format!("pub fn to_wire(self) -> {bits} {{"));
    o.line("self.bits()");
    o.close("}");
    o.line("");
    o.line("/// Converts received bits; unknown bits are `InvalidArgs` naming the argument.");
    o.open(format!(
        "pub fn from_wire(arg: &str, value: {bits}) -> ::zbus::fdo::Result<Self> {{"
    ));
    o.line(format!(
        "Self::from_bits(value).ok_or_else(|| ::zbus::fdo::Error::InvalidArgs(format!(\"argument '{{arg}}': {{value:#x}} has bits that are not in BITMASK {name}\")))"
    ));
    o.close("}");
    o.close("}");
}

fn struct_type(g: &Gen<'_>, o: &mut Out, s: &Struct) {
    let has_fd = s.members.iter().any(|m| m.ty == Type::Basic(Basic::File));
    o.line("");
    o.doc(&s.doc);
    o.line(
        "/// On the wire: a structure; fields in wire form (ENUMs as integers, BITMASKs as bits).",
    );
    if has_fd {
        o.line("#[derive(Debug, ::serde::Serialize, ::serde::Deserialize, ::zbus::wire::Type)]");
    } else {
        o.line("#[derive(Debug, Clone, PartialEq, ::serde::Serialize, ::serde::Deserialize, ::zbus::wire::Type)]");
    }
    o.open(format!("pub struct {} {{", s.name));
    for m in &s.members {
        o.doc(&m.doc);
        o.line(format!("pub {}: {},", ident(&m.name), g.param_wire(m)));
    }
    o.close("}");
    o.line("");
    o.open(format!("impl {} {{", s.name));
    o.line("/// Checks the API's limits on every field (used before calling a service).");
    o.open("pub fn check(&self, arg: &str) -> ::zbus::fdo::Result<()> {");
    for m in &s.members {
        let field = format!("self.{}", ident(&m.name));
        let label = format!("format!(\"{{arg}}.{}\")", m.name);
        match (&m.ty, m.max) {
            (Type::Basic(Basic::String), Some(max)) => o.line(format!(
                "telaf_common::check_string(&{label}, &{field}, {max})?;"
            )),
            (_, Some(max)) => o.line(format!(
                "telaf_common::check_array(&{label}, {field}.len(), {max})?;"
            )),
            _ => {}
        }
        let check_one = |x: &str| -> Option<String> {
            Some(match &m.ty {
                Type::Basic(Basic::I8) => format!("telaf_common::check_int8(&{label}, {x})?;"),
                Type::Basic(Basic::LeResult) => {
                    format!("telaf_common::LeResult::from_wire(&{label}, {x})?;")
                }
                Type::Basic(Basic::LeOnOff) => {
                    format!("telaf_common::LeOnOff::from_wire(&{label}, {x})?;")
                }
                Type::Enum(t) | Type::Bitmask(t) => {
                    format!("{}::from_wire(&{label}, {x})?;", g.type_path(t))
                }
                Type::Struct(_) => format!("{x}.check(&{label})?;"),
                _ => return None,
            })
        };
        if m.is_array() {
            if let Some(c) = check_one("*x") {
                let c = c
                    .replace("(*x).check", "x.check")
                    .replace("*x.check", "x.check");
                o.line(format!("for x in &{field} {{ {c} }}"));
            }
        } else if let Some(c) = check_one(&field) {
            o.line(c);
        }
    }
    o.line("Ok(())");
    o.close("}");
    o.close("}");
}

/// The proxy trait name: `le_mcc` → `LeMcc`.
fn api_type_name(api: &Api) -> String {
    camel_case(&api.name)
}

fn client(g: &Gen<'_>, o: &mut Out) {
    let api = g.api;
    let iface = dbus::interface(api);
    o.line("");
    o.line("/// Client side: a zbus proxy in wire types.");
    o.open("pub mod client {");
    o.line("use super::*;");
    o.line("");
    o.line(format!(
        "/// `io.telaf.{}`. Build it with `{}Proxy::builder(&conn).destination(service).path(path)`;",
        api.name,
        api_type_name(api)
    ));
    o.line("/// event signals arrive on the handler path returned by `Add<Event>Handler`, so");
    o.line("/// receive them with a proxy built for that path.");
    o.line(format!(
        "#[::zbus::proxy(interface = \"{}\", default_path = \"/io/telaf/{}\")]",
        iface.name, api.name
    ));
    o.open(format!("pub trait {} {{", api_type_name(api)));
    for call in &api.calls {
        match call {
            Call::Function(f) => {
                o.doc(&f.doc);
                let mut args = vec!["&self".to_string()];
                for p in f
                    .params
                    .iter()
                    .filter(|p| !p.is_handler() && p.direction == Direction::In)
                {
                    args.push(format!("{}: {}", snake_case(&p.name), g.param_client(p)));
                }
                let mut outs: Vec<String> = Vec::new();
                if let Some(r) = &f.returns {
                    outs.push(g.wire(r));
                }
                for p in f.params.iter().filter(|p| p.direction == Direction::Out) {
                    outs.push(g.param_wire(p));
                }
                if f.handler().is_some() {
                    outs.push(PATH.into());
                }
                o.line(format!("#[zbus(name = {:?})]", f.name));
                o.line(format!(
                    "fn {}({}) -> ::zbus::Result<{}>;",
                    snake_case(&f.name),
                    args.join(", "),
                    tuple(&outs)
                ));
            }
            Call::Event(e) => {
                o.doc(&e.doc);
                let mut args = vec!["&self".to_string()];
                for p in e.filters() {
                    args.push(format!("{}: {}", snake_case(&p.name), g.param_client(p)));
                }
                o.line(format!(
                    "/// Subscribes to `{}`; returns the handler path (`/` if refused).",
                    e.name
                ));
                o.line(format!("#[zbus(name = \"Add{}Handler\")]", e.name));
                o.line(format!(
                    "fn add_{}_handler({}) -> ::zbus::Result<{PATH}>;",
                    snake_case(&e.name).trim_start_matches("r#"),
                    args.join(", ")
                ));
                o.line(format!("#[zbus(name = \"Remove{}Handler\")]", e.name));
                o.line(format!(
                    "fn remove_{}_handler(&self, handler: &::zbus::wire::ObjectPath<'_>) -> ::zbus::Result<()>;",
                    snake_case(&e.name).trim_start_matches("r#")
                ));
            }
        }
    }
    for s in &iface.signals {
        let handler = match &s.kind {
            dbus::SignalKind::Event => {
                let e = api.events().find(|e| e.name == s.name).unwrap();
                api.find_handler(e.handler())
            }
            dbus::SignalKind::Callback { function } => {
                let f = api.functions().find(|f| &f.name == function).unwrap();
                api.find_handler(f.handler().unwrap())
            }
        };
        let mut args = vec!["&self".to_string()];
        for p in &handler.params {
            args.push(format!("{}: {}", snake_case(&p.name), g.param_wire(p)));
        }
        o.line(format!("#[zbus(signal, name = {:?})]", s.name));
        o.line(format!(
            "fn {}({}) -> ::zbus::Result<()>;",
            signal_fn(&s.name),
            args.join(", ")
        ));
    }
    o.close("}");
    o.close("}");
}

/// The Rust name of a signal method (distinct from method names: `CallEvent` → `call_event`).
fn signal_fn(name: &str) -> String {
    snake_case(name)
}

fn tuple(items: &[String]) -> String {
    match items.len() {
        0 => "()".into(),
        1 => items[0].clone(),
        _ => format!("({})", items.join(", ")),
    }
}

fn server(g: &Gen<'_>, o: &mut Out) {
    let api = g.api;
    let trait_name = api_type_name(api);
    let server_name = format!("{trait_name}Server");
    o.line("");
    o.line("/// Server side: implement the trait, serve it with the wrapper.");
    o.open("pub mod server {");
    o.line("use super::*;");
    o.line("use ::std::future::Future;");
    o.line("");
    o.line(format!(
        "/// The service side of `{}`: arguments arrive checked and typed.",
        api.name
    ));
    o.line("/// `ctx.sender` is the caller's unique name (references are per client).");
    o.open(format!("pub trait {trait_name}: Send + Sync + 'static {{"));
    for call in &api.calls {
        match call {
            Call::Function(f) => {
                o.doc(&f.doc);
                let mut args = vec![
                    "&self".to_string(),
                    "ctx: telaf_common::Context".to_string(),
                ];
                for p in f
                    .params
                    .iter()
                    .filter(|p| !p.is_handler() && p.direction == Direction::In)
                {
                    args.push(format!("{}: {}", snake_case(&p.name), g.param_typed(p)));
                }
                if f.handler().is_some() {
                    args.push("callback: telaf_common::Subscriber".into());
                }
                let mut outs: Vec<String> = Vec::new();
                if let Some(r) = &f.returns {
                    outs.push(g.typed(r));
                }
                for p in f.params.iter().filter(|p| p.direction == Direction::Out) {
                    outs.push(g.param_typed(p));
                }
                if f.handler().is_some() {
                    o.line(format!(
                        "/// Send the one-shot result later with `emit_{}_callback(callback, …)`.",
                        snake_case(&f.name).trim_start_matches("r#")
                    ));
                }
                o.line(format!(
                    "fn {}({}) -> impl Future<Output = {FDO_RESULT}<{}>> + Send;",
                    snake_case(&f.name),
                    args.join(", "),
                    tuple(&outs)
                ));
            }
            Call::Event(e) => {
                let snake = snake_case(&e.name);
                let snake = snake.trim_start_matches("r#");
                o.doc(&e.doc);
                let mut args = vec![
                    "&self".to_string(),
                    "subscriber: telaf_common::Subscriber".to_string(),
                ];
                for p in e.filters() {
                    args.push(format!("{}: {}", snake_case(&p.name), g.param_typed(p)));
                }
                o.line(format!(
                    "/// A client subscribes to `{}`; send with `emit_{snake}(&subscriber, …)`.",
                    e.name
                ));
                o.line("/// Return `false` to refuse (the client gets `/`).");
                o.line(format!(
                    "fn add_{snake}_handler({}) -> impl Future<Output = {FDO_RESULT}<bool>> + Send;",
                    args.join(", ")
                ));
                o.line("/// The subscription ends (asked by its owner, or its owner left: see `client_gone`).");
                o.line(format!(
                    "fn remove_{snake}_handler(&self, owner: ::zbus::names::OwnedUniqueName, handler: {PATH}) -> impl Future<Output = {FDO_RESULT}<()>> + Send;"
                ));
            }
        }
    }
    o.close("}");

    // Signal senders.
    for call in &api.calls {
        let (name, fn_name, handler, by_value) = match call {
            Call::Event(e) => (
                e.name.clone(),
                format!("emit_{}", snake_case(&e.name).trim_start_matches("r#")),
                api.find_handler(e.handler()),
                false,
            ),
            Call::Function(f) => match f.handler() {
                Some(h) => (
                    format!("{}Callback", f.name),
                    format!(
                        "emit_{}_callback",
                        snake_case(&f.name).trim_start_matches("r#")
                    ),
                    api.find_handler(h),
                    true,
                ),
                None => continue,
            },
        };
        o.line("");
        if by_value {
            o.line(format!(
                "/// Sends the one-shot `{name}` signal to the caller (consumes the token: once only)."
            ));
        } else {
            o.line(format!("/// Sends the `{name}` signal to one subscriber."));
        }
        let sub = if by_value {
            "subscriber: telaf_common::Subscriber"
        } else {
            "subscriber: &telaf_common::Subscriber"
        };
        let mut args = vec![sub.to_string()];
        let mut body = Vec::new();
        for p in &handler.params {
            let n = snake_case(&p.name);
            args.push(format!("{n}: {}", g.param_typed(p)));
            body.push(g.wire_from_typed(&p.ty, p.is_array(), &n));
        }
        o.open(format!(
            "pub async fn {fn_name}({}) -> ::zbus::Result<()> {{",
            args.join(", ")
        ));
        let body = match body.len() {
            0 => "()".to_string(),
            _ => format!("({},)", body.join(", ")),
        };
        o.line(format!("subscriber.emit({name:?}, &{body}).await"));
        o.close("}");
    }

    // The wrapper.
    o.line("");
    o.line(format!(
        "/// Serves a `{trait_name}` as `io.telaf.{}`, checking arguments first.",
        api.name
    ));
    o.open(format!("pub struct {server_name}<T: {trait_name}> {{"));
    o.line("imp: T,");
    o.line("registry: telaf_common::Registry,");
    o.close("}");
    o.line("");
    o.open(format!("impl<T: {trait_name}> {server_name}<T> {{"));
    o.open("pub fn new(imp: T) -> Self {");
    o.line("Self { imp, registry: telaf_common::Registry::for_interface(INTERFACE) }");
    o.close("}");
    o.line("");
    o.line("/// The implementation.");
    o.open("pub fn inner(&self) -> &T {");
    o.line("&self.imp");
    o.close("}");
    o.line("");
    o.line("/// A client left the bus: ends every subscription it owned (calling the");
    o.line("/// implementation's `remove_*_handler`) and returns how many there were.");
    o.open("pub async fn client_gone(&self, owner: &str) -> usize {");
    o.line("let gone = self.registry.drain_owner(owner);");
    o.line("let count = gone.len();");
    o.open("for (path, event) in gone {");
    o.line("let Ok(owner) = ::zbus::names::OwnedUniqueName::try_from(owner.to_string()) else { continue };");
    o.open("let _: ::zbus::fdo::Result<()> = match event {");
    for e in api.events() {
        let snake = snake_case(&e.name);
        o.line(format!(
            "{:?} => self.imp.remove_{}_handler(owner, path).await,",
            e.name,
            snake.trim_start_matches("r#")
        ));
    }
    o.line("_ => Ok(()),");
    o.close("};");
    o.close("}");
    o.line("count");
    o.close("}");
    o.close("}");
    o.line("");
    o.line(format!(
        "#[::zbus::interface(name = \"io.telaf.{}\")]",
        api.name
    ));
    o.open(format!("impl<T: {trait_name}> {server_name}<T> {{"));
    let iface = dbus::interface(api);
    for (call, methods) in api.calls.iter().zip(group_methods(&iface)) {
        match call {
            Call::Function(f) => server_function(g, o, f, &methods[0]),
            Call::Event(e) => server_event(g, o, e),
        }
    }
    for s in &iface.signals {
        let (handler, _) = signal_handler(api, s);
        let mut args = vec!["emitter: &::zbus::object_server::SignalEmitter<'_>".to_string()];
        for p in &handler.params {
            args.push(format!("{}: {}", ident(&p.name), g.param_wire(p)));
        }
        o.line("");
        o.line(format!("#[zbus(signal, name = {:?})]", s.name));
        o.line(format!(
            "async fn {}({}) -> ::zbus::Result<()>;",
            signal_fn(&s.name),
            args.join(", ")
        ));
    }
    o.close("}");
    o.close("}");
}

fn signal_handler<'a>(api: &'a Api, s: &dbus::Signal) -> (&'a Handler, ()) {
    match &s.kind {
        dbus::SignalKind::Event => {
            let e = api.events().find(|e| e.name == s.name).unwrap();
            (api.find_handler(e.handler()), ())
        }
        dbus::SignalKind::Callback { function } => {
            let f = api.functions().find(|f| &f.name == function).unwrap();
            (api.find_handler(f.handler().unwrap()), ())
        }
    }
}

/// The D-Bus methods of each call, in call order (1 for a FUNCTION, 2 for an EVENT).
fn group_methods(iface: &dbus::Interface) -> Vec<Vec<dbus::Method>> {
    let mut out: Vec<Vec<dbus::Method>> = Vec::new();
    for m in &iface.methods {
        match m.kind {
            dbus::MethodKind::RemoveHandler { .. } => out.last_mut().unwrap().push(m.clone()),
            _ => out.push(vec![m.clone()]),
        }
    }
    out
}

const HEADER_ARGS: &str = "#[zbus(header)] header: ::zbus::message::Header<'_>, #[zbus(connection)] connection: &::zbus::Connection";

fn server_function(g: &Gen<'_>, o: &mut Out, f: &Function, m: &dbus::Method) {
    let snake = snake_case(&f.name);
    let outs: Vec<String> = m.out_args.iter().map(|a| format!("{:?}", a.name)).collect();
    o.line("");
    if outs.is_empty() {
        o.line(format!("#[zbus(name = {:?})]", f.name));
    } else {
        o.line(format!(
            "#[zbus(name = {:?}, out_args({}))]",
            f.name,
            outs.join(", ")
        ));
    }
    let mut args = vec!["&self".to_string(), HEADER_ARGS.to_string()];
    let ins: Vec<&Param> = f
        .params
        .iter()
        .filter(|p| !p.is_handler() && p.direction == Direction::In)
        .collect();
    for p in &ins {
        args.push(format!("{}: {}", ident(&p.name), g.param_wire(p)));
    }
    let mut wire_outs: Vec<String> = Vec::new();
    if let Some(r) = &f.returns {
        wire_outs.push(g.wire(r));
    }
    let out_params: Vec<&Param> = f
        .params
        .iter()
        .filter(|p| p.direction == Direction::Out)
        .collect();
    for p in &out_params {
        wire_outs.push(g.param_wire(p));
    }
    if f.handler().is_some() {
        wire_outs.push(PATH.into());
    }
    o.open(format!(
        "async fn {snake}({}) -> {FDO_RESULT}<{}> {{",
        args.join(", "),
        tuple(&wire_outs)
    ));
    let mut call_args = vec!["ctx".to_string()];
    for p in &ins {
        let n = ident(&p.name);
        o.line(format!("let {n} = {};", g.typed_from_wire(p, &n)));
        call_args.push(n);
    }
    o.line("let ctx = telaf_common::Context::new(&header, connection)?;");
    if f.handler().is_some() {
        o.line(format!(
            "let callback = self.registry.callback_token(&ctx, {:?});",
            f.name
        ));
        o.line("let token = callback.path.clone();");
        call_args.push("callback".into());
    }
    // Names for the typed results, then their wire forms.
    let mut typed_names = Vec::new();
    let mut wire_values = Vec::new();
    if let Some(r) = &f.returns {
        typed_names.push("ret".to_string());
        wire_values.push(g.wire_from_typed(r, false, "ret"));
    }
    for p in &out_params {
        let n = format!("out_{}", p.name);
        let mut value = g.wire_from_typed(&p.ty, p.is_array(), &n);
        if let Some(max) = p.max {
            // The service must keep the API's limits too.
            let check = if p.is_array() {
                format!(
                    "telaf_common::check_reply_array({:?}, {n}.len(), {max})?;",
                    p.name
                )
            } else {
                format!(
                    "telaf_common::check_reply_string({:?}, &{n}, {max})?;",
                    p.name
                )
            };
            value = format!("{{ {check} {value} }}");
        }
        typed_names.push(n);
        wire_values.push(value);
    }
    if f.handler().is_some() {
        wire_values.push("token".into());
    }
    let pattern = match typed_names.len() {
        0 => "()".to_string(),
        1 => typed_names[0].clone(),
        _ => format!("({})", typed_names.join(", ")),
    };
    o.line(format!(
        "let {pattern} = self.imp.{snake}({}).await?;",
        call_args.join(", ")
    ));
    o.line(format!("Ok({})", tuple(&wire_values)));
    o.close("}");
}

fn server_event(g: &Gen<'_>, o: &mut Out, e: &Event) {
    let snake = snake_case(&e.name);
    let snake = snake.trim_start_matches("r#");
    o.line("");
    o.line(format!(
        "#[zbus(name = \"Add{}Handler\", out_args(\"handler\"))]",
        e.name
    ));
    let mut args = vec!["&self".to_string(), HEADER_ARGS.to_string()];
    let filters: Vec<&Param> = e.filters().collect();
    for p in &filters {
        args.push(format!("{}: {}", ident(&p.name), g.param_wire(p)));
    }
    o.open(format!(
        "async fn add_{snake}_handler({}) -> {FDO_RESULT}<{PATH}> {{",
        args.join(", ")
    ));
    let mut call_args = vec!["subscriber".to_string()];
    for p in &filters {
        let n = ident(&p.name);
        o.line(format!("let {n} = {};", g.typed_from_wire(p, &n)));
        call_args.push(n);
    }
    o.line("let ctx = telaf_common::Context::new(&header, connection)?;");
    o.line(format!(
        "let subscriber = self.registry.subscribe(&ctx, {:?});",
        e.name
    ));
    o.line("let path = subscriber.path.clone();");
    o.open(format!(
        "match self.imp.add_{snake}_handler({}).await {{",
        call_args.join(", ")
    ));
    o.line("Ok(true) => Ok(path),");
    o.open("Ok(false) => {");
    o.line("self.registry.forget(&path);");
    o.line("Ok(telaf_common::null_path())");
    o.close("}");
    o.open("Err(e) => {");
    o.line("self.registry.forget(&path);");
    o.line("Err(e)");
    o.close("}");
    o.close("}");
    o.close("}");
    o.line("");
    o.line(format!("#[zbus(name = \"Remove{}Handler\")]", e.name));
    o.open(format!(
        "async fn remove_{snake}_handler(&self, {HEADER_ARGS}, handler: {PATH}) -> {FDO_RESULT}<()> {{"
    ));
    o.line("let ctx = telaf_common::Context::new(&header, connection)?;");
    o.open(format!(
        "if self.registry.unsubscribe(&ctx.sender, {:?}, &handler)? {{",
        e.name
    ));
    o.line(format!(
        "self.imp.remove_{snake}_handler(ctx.sender, handler).await?;"
    ));
    o.close("}");
    o.line("Ok(())");
    o.close("}");
}

/// The module shared by every generated API in one output directory.
pub fn common() -> String {
    let mut variants = String::new();
    let mut names = String::new();
    let mut from = String::new();
    for (rust, c, value) in LE_RESULT_CODES {
        let _ = writeln!(variants, "        /// `{c}`\n        {rust} = {value},");
        let _ = writeln!(names, "                LeResult::{rust} => {c:?},");
        let _ = writeln!(from, "                {value} => Ok(LeResult::{rust}),");
    }
    COMMON_TEMPLATE
        .replace("@VARIANTS@", variants.trim_end())
        .replace("@NAMES@", names.trim_end())
        .replace("@FROM@", from.trim_end())
}

const COMMON_TEMPLATE: &str = r#"// Generated by telbus-ifgen. Do not edit.

/// What every generated TelAF API shares: result codes, call context, subscriptions.
#[allow(dead_code, clippy::all)]
pub mod telaf_common {
    use ::std::collections::HashMap;
    use ::std::string::String;
    use ::std::sync::Mutex;
    use ::std::sync::atomic::{AtomicU64, Ordering};
    use ::std::vec::Vec;
    use ::zbus::names::OwnedUniqueName;
    use ::zbus::wire::OwnedObjectPath;

    /// `le_result_t`: `i` on the wire.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    #[repr(i32)]
    pub enum LeResult {
@VARIANTS@
    }

    impl LeResult {
        /// The C name, e.g. `LE_NOT_FOUND`.
        pub fn name(self) -> &'static str {
            match self {
@NAMES@
            }
        }

        pub fn to_wire(self) -> i32 {
            self as i32
        }

        pub fn from_wire(arg: &str, value: i32) -> ::zbus::fdo::Result<Self> {
            Self::try_from(value).map_err(|v| {
                ::zbus::fdo::Error::InvalidArgs(format!("argument '{arg}': {v} is not a le_result_t code"))
            })
        }
    }

    impl ::core::convert::TryFrom<i32> for LeResult {
        type Error = i32;
        fn try_from(value: i32) -> ::core::result::Result<Self, i32> {
            match value {
@FROM@
                other => Err(other),
            }
        }
    }

    impl ::core::convert::From<LeResult> for i32 {
        fn from(value: LeResult) -> i32 {
            value as i32
        }
    }

    impl ::core::fmt::Display for LeResult {
        fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
            f.write_str(self.name())
        }
    }

    /// `le_onoff_t`: `i` on the wire.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    #[repr(i32)]
    pub enum LeOnOff {
        Off = 0,
        On = 1,
    }

    impl LeOnOff {
        pub fn to_wire(self) -> i32 {
            self as i32
        }

        pub fn from_wire(arg: &str, value: i32) -> ::zbus::fdo::Result<Self> {
            match value {
                0 => Ok(LeOnOff::Off),
                1 => Ok(LeOnOff::On),
                v => Err(::zbus::fdo::Error::InvalidArgs(format!(
                    "argument '{arg}': {v} is not a le_onoff_t (0 or 1)"
                ))),
            }
        }
    }

    /// Who called, on which object, over which connection.
    #[derive(Debug, Clone)]
    pub struct Context {
        /// The caller's unique name (`:1.42`): references and subscriptions are per client.
        pub sender: OwnedUniqueName,
        /// The object path the method was called on.
        pub path: OwnedObjectPath,
        pub connection: ::zbus::Connection,
    }

    impl Context {
        pub fn new(header: &::zbus::message::Header<'_>, connection: &::zbus::Connection) -> ::zbus::fdo::Result<Self> {
            let sender = header
                .sender()
                .ok_or_else(|| ::zbus::fdo::Error::Failed("the call has no sender".into()))?;
            let path = header
                .path()
                .ok_or_else(|| ::zbus::fdo::Error::Failed("the call has no path".into()))?;
            Ok(Context {
                sender: sender.to_owned().into(),
                path: path.to_owned().into(),
                connection: connection.clone(),
            })
        }
    }

    /// Where to send an event's or a callback's signals: to `destination`, on `path`.
    #[derive(Debug, Clone)]
    pub struct Subscriber {
        pub path: OwnedObjectPath,
        pub destination: OwnedUniqueName,
        pub interface: &'static str,
        pub connection: ::zbus::Connection,
    }

    impl Subscriber {
        /// Sends signal `member` with `body` (a tuple) to the subscriber only.
        pub async fn emit<B>(&self, member: &str, body: &B) -> ::zbus::Result<()>
        where
            B: ::serde::Serialize + ::zbus::wire::DynamicType,
        {
            self.connection
                .emit_signal(Some(self.destination.as_str()), self.path.as_str(), self.interface, member, body)
                .await
        }
    }

    /// `/`, the NULL reference.
    pub fn null_path() -> OwnedObjectPath {
        OwnedObjectPath::try_from("/").expect("valid path")
    }

    /// Handler registrations of one served object: paths are never reused (a random
    /// incarnation prefix, then a counter) and belong to the client that subscribed.
    pub struct Registry {
        interface: &'static str,
        incarnation: u64,
        next: AtomicU64,
        /// path → (owner, event)
        subscriptions: Mutex<HashMap<String, (String, &'static str)>>,
    }

    impl Registry {
        pub fn new() -> Self {
            Self::for_interface("")
        }

        pub fn for_interface(interface: &'static str) -> Self {
            // Not security: just makes paths of an earlier incarnation unlikely to match.
            let nanos = ::std::time::SystemTime::now()
                .duration_since(::std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            Registry {
                interface,
                incarnation: nanos ^ (::std::process::id() as u64).rotate_left(32),
                next: AtomicU64::new(1),
                subscriptions: Mutex::new(HashMap::new()),
            }
        }

        fn mint(&self, ctx: &Context, kind: &str, name: &str) -> OwnedObjectPath {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            let base = ctx.path.as_str().trim_end_matches('/');
            let path = format!("{base}/{kind}/{name}/{:x}_{n}", self.incarnation & 0xffff_ffff);
            OwnedObjectPath::try_from(path).expect("valid path")
        }

        fn subscriber(&self, ctx: &Context, path: OwnedObjectPath, interface: &'static str) -> Subscriber {
            Subscriber {
                path,
                destination: ctx.sender.clone(),
                interface,
                connection: ctx.connection.clone(),
            }
        }

        /// A new subscription of the caller to `event`.
        pub fn subscribe_to(&self, ctx: &Context, interface: &'static str, event: &'static str) -> Subscriber {
            let path = self.mint(ctx, "handler", event);
            self.subscriptions
                .lock()
                .unwrap()
                .insert(path.as_str().to_string(), (ctx.sender.as_str().to_string(), event));
            self.subscriber(ctx, path, interface)
        }

        pub fn subscribe(&self, ctx: &Context, event: &'static str) -> Subscriber {
            self.subscribe_to(ctx, self.interface_of(ctx), event)
        }

        /// A one-shot callback token for the caller (not recorded: it is used once).
        pub fn callback_token(&self, ctx: &Context, function: &'static str) -> Subscriber {
            let path = self.mint(ctx, "callback", function);
            self.subscriber(ctx, path, self.interface_of(ctx))
        }

        fn interface_of(&self, ctx: &Context) -> &'static str {
            let _ = ctx;
            self.interface
        }

        pub fn forget(&self, path: &OwnedObjectPath) {
            self.subscriptions.lock().unwrap().remove(path.as_str());
        }

        /// Ends a subscription. `Ok(false)` if there is none (removal is idempotent);
        /// `AccessDenied` if another client owns it.
        pub fn unsubscribe(&self, sender: &str, event: &str, path: &OwnedObjectPath) -> ::zbus::fdo::Result<bool> {
            let mut subs = self.subscriptions.lock().unwrap();
            match subs.get(path.as_str()) {
                None => Ok(false),
                Some((owner, ev)) if owner == sender && *ev == event => {
                    subs.remove(path.as_str());
                    Ok(true)
                }
                Some((owner, ev)) if owner == sender => Err(::zbus::fdo::Error::InvalidArgs(format!(
                    "{} is a handler of {ev}, not of {event}",
                    path.as_str()
                ))),
                Some(_) => Err(::zbus::fdo::Error::AccessDenied(format!(
                    "{} belongs to another client",
                    path.as_str()
                ))),
            }
        }

        /// Removes and returns every subscription of `owner`.
        pub fn drain_owner(&self, owner: &str) -> Vec<(OwnedObjectPath, &'static str)> {
            let mut subs = self.subscriptions.lock().unwrap();
            let paths: Vec<String> = subs.iter().filter(|(_, (o, _))| o == owner).map(|(p, _)| p.clone()).collect();
            paths
                .into_iter()
                .filter_map(|p| {
                    let (_, event) = subs.remove(&p)?;
                    Some((OwnedObjectPath::try_from(p).ok()?, event))
                })
                .collect()
        }

        /// How many subscriptions are live.
        pub fn len(&self) -> usize {
            self.subscriptions.lock().unwrap().len()
        }
    }

    impl Default for Registry {
        fn default() -> Self {
            Self::new()
        }
    }

    fn too_long(what: &str, arg: &str, len: usize, unit: &str, max: u64) -> String {
        format!("{what} '{arg}' is {len} {unit} long; the API allows at most {max}")
    }

    /// A string argument must be at most `max` bytes.
    pub fn check_string(arg: &str, value: &str, max: u64) -> ::zbus::fdo::Result<()> {
        if value.len() as u64 > max {
            return Err(::zbus::fdo::Error::InvalidArgs(too_long("argument", arg, value.len(), "bytes", max)));
        }
        Ok(())
    }

    /// An array argument must have at most `max` elements.
    pub fn check_array(arg: &str, len: usize, max: u64) -> ::zbus::fdo::Result<()> {
        if len as u64 > max {
            return Err(::zbus::fdo::Error::InvalidArgs(too_long("argument", arg, len, "elements", max)));
        }
        Ok(())
    }

    /// An int8 travels as `n`; it must be within -128..=127.
    pub fn check_int8(arg: &str, value: i16) -> ::zbus::fdo::Result<i8> {
        i8::try_from(value).map_err(|_| {
            ::zbus::fdo::Error::InvalidArgs(format!("argument '{arg}': {value} is out of the int8 range -128..127"))
        })
    }

    /// A service's reply must keep the API's limits too.
    pub fn check_reply_string(arg: &str, value: &str, max: u64) -> ::zbus::fdo::Result<()> {
        if value.len() as u64 > max {
            return Err(::zbus::fdo::Error::Failed(too_long("the service's reply", arg, value.len(), "bytes", max)));
        }
        Ok(())
    }

    pub fn check_reply_array(arg: &str, len: usize, max: u64) -> ::zbus::fdo::Result<()> {
        if len as u64 > max {
            return Err(::zbus::fdo::Error::Failed(too_long("the service's reply", arg, len, "elements", max)));
        }
        Ok(())
    }

    /// `io.telaf.Service1`: served next to an API so clients can check the protocol id.
    pub struct Service1 {
        api: &'static str,
        protocol_id: &'static str,
    }

    impl Service1 {
        pub fn new(api: &'static str, protocol_id: &'static str) -> Self {
            Service1 { api, protocol_id }
        }
    }

    #[::zbus::interface(name = "io.telaf.Service1")]
    impl Service1 {
        /// The `.api` name.
        #[zbus(property(emits_changed_signal = "const"))]
        fn api_name(&self) -> String {
            self.api.to_string()
        }

        /// The digest of the API the service was built with.
        #[zbus(property(emits_changed_signal = "const"))]
        fn protocol_id(&self) -> String {
            self.protocol_id.to_string()
        }
    }
}
"#;
