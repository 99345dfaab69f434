//! The mapping of an API onto one D-Bus interface `io.telaf.<api>`:
//!
//! | .api | D-Bus |
//! |---|---|
//! | `uint8 int8 uint16 int16 uint32 int32 uint64 int64` | `y n q n u i t x` (int8 is range-checked to -128..127) |
//! | `double bool char size` | `d b y u` |
//! | `string s[N]` | `s`, at most N bytes (annotation `io.telaf.MaxLength`) |
//! | `file` | `h` |
//! | `le_result_t`, `le_onoff_t` | `i` |
//! | ENUM | `i`, or `x` if a value does not fit in 32 bits |
//! | BITMASK | `u`, or `t` when 64 bits wide |
//! | REFERENCE | `o` (`/` is NULL) |
//! | STRUCT | `(…)` |
//! | `T x[N]` | `aT`, at most N elements (annotation `io.telaf.MaxElements`) |
//!
//! FUNCTION → method: IN parameters are the in-args; the return value (named `result` for
//! `le_result_t`, `value` otherwise) then the OUT parameters are the out-args. A one-shot
//! handler parameter adds an out-arg `o callback` and a signal `<Function>Callback`.
//! EVENT → `Add<Event>Handler(filters…) -> o handler`, `Remove<Event>Handler(o handler)`
//! and a signal `<Event>(handler args…)` sent to the subscriber on the handler path.

use crate::model::*;

pub const ANNOTATION_PROTOCOL_ID: &str = "io.telaf.ProtocolId";
pub const ANNOTATION_API: &str = "io.telaf.Api";
pub const ANNOTATION_DEFINE_PREFIX: &str = "io.telaf.Define.";
pub const ANNOTATION_TYPE: &str = "io.telaf.Type";
pub const ANNOTATION_MAX_LENGTH: &str = "io.telaf.MaxLength";
pub const ANNOTATION_MAX_ELEMENTS: &str = "io.telaf.MaxElements";
pub const ANNOTATION_EVENT: &str = "io.telaf.Event";
pub const ANNOTATION_CALLBACK: &str = "io.telaf.Callback";
pub const ANNOTATION_HANDLER: &str = "io.telaf.Handler";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arg {
    pub name: String,
    pub signature: String,
    pub annotations: Vec<(String, String)>,
}

/// Where a method comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MethodKind {
    Function,
    AddHandler { event: String },
    RemoveHandler { event: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Method {
    pub name: String,
    pub kind: MethodKind,
    pub in_args: Vec<Arg>,
    pub out_args: Vec<Arg>,
    pub annotations: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignalKind {
    Event,
    Callback { function: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal {
    pub name: String,
    pub kind: SignalKind,
    pub args: Vec<Arg>,
    pub annotations: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub methods: Vec<Method>,
    pub signals: Vec<Signal>,
    pub annotations: Vec<(String, String)>,
}

/// The D-Bus signature of one value of type `ty` (not counting an array around it).
pub fn type_signature(api: &Api, ty: &Type) -> String {
    match ty {
        Type::Basic(b) => match b {
            Basic::U8 | Basic::Char => "y",
            Basic::I8 | Basic::I16 => "n",
            Basic::U16 => "q",
            Basic::U32 | Basic::Size => "u",
            Basic::I32 | Basic::LeResult | Basic::LeOnOff => "i",
            Basic::U64 => "t",
            Basic::I64 => "x",
            Basic::Double => "d",
            Basic::Bool => "b",
            Basic::String => "s",
            Basic::File => "h",
        }
        .to_string(),
        Type::Enum(t) => if api.find_enum(t).wide { "x" } else { "i" }.to_string(),
        Type::Bitmask(t) => if api.find_bitmask(t).wide { "t" } else { "u" }.to_string(),
        Type::Reference(_) => "o".to_string(),
        Type::Struct(t) => {
            let s = api.find_struct(t);
            let inner: String = s.members.iter().map(|m| param_signature(api, m)).collect();
            format!("({inner})")
        }
        Type::Handler(_) => unreachable!("handlers are not marshalled"),
    }
}

/// The signature of a parameter or member: its type, or an array of it.
pub fn param_signature(api: &Api, p: &Param) -> String {
    let sig = type_signature(api, &p.ty);
    if p.is_array() { format!("a{sig}") } else { sig }
}

/// The TelAF name of a type, as kept in the `io.telaf.Type` annotation.
pub fn telaf_type_name(ty: &Type) -> String {
    match ty {
        Type::Basic(b) => b.api_name().to_string(),
        Type::Enum(t)
        | Type::Bitmask(t)
        | Type::Reference(t)
        | Type::Struct(t)
        | Type::Handler(t) => t.to_string(),
    }
}

fn arg(api: &Api, p: &Param) -> Arg {
    let mut annotations = vec![(ANNOTATION_TYPE.to_string(), telaf_type_name(&p.ty))];
    if let Some(max) = p.max {
        let key = if p.is_array() {
            ANNOTATION_MAX_ELEMENTS
        } else {
            ANNOTATION_MAX_LENGTH
        };
        annotations.push((key.to_string(), max.to_string()));
    }
    Arg {
        name: p.name.clone(),
        signature: param_signature(api, p),
        annotations,
    }
}

fn object_arg(name: &str) -> Arg {
    Arg {
        name: name.to_string(),
        signature: "o".into(),
        annotations: Vec::new(),
    }
}

/// The name of a FUNCTION's return value among its out-args.
pub fn return_arg_name(f: &Function) -> &'static str {
    let base = match f.returns {
        Some(Type::Basic(Basic::LeResult)) => "result",
        _ => "value",
    };
    if f.params
        .iter()
        .any(|p| p.direction == Direction::Out && p.name == base)
    {
        if base == "result" {
            "result_"
        } else {
            "value_"
        }
    } else {
        base
    }
}

/// The name of the callback token out-arg of a FUNCTION with a one-shot handler.
pub fn callback_arg_name(f: &Function) -> &'static str {
    if f.params.iter().any(|p| p.name == "callback") {
        "callback_"
    } else {
        "callback"
    }
}

pub fn interface(api: &Api) -> Interface {
    let mut methods = Vec::new();
    let mut signals = Vec::new();
    for call in &api.calls {
        match call {
            Call::Function(f) => {
                let in_args = f
                    .params
                    .iter()
                    .filter(|p| !p.is_handler() && p.direction == Direction::In)
                    .map(|p| arg(api, p))
                    .collect();
                let mut out_args = Vec::new();
                if let Some(ret) = &f.returns {
                    let ret_param = Param {
                        name: return_arg_name(f).to_string(),
                        ty: ret.clone(),
                        max: None,
                        direction: Direction::Out,
                        doc: None,
                        span: f.span.clone(),
                    };
                    out_args.push(arg(api, &ret_param));
                }
                out_args.extend(
                    f.params
                        .iter()
                        .filter(|p| p.direction == Direction::Out)
                        .map(|p| arg(api, p)),
                );
                let mut annotations = Vec::new();
                if let Some(h) = f.handler() {
                    let signal = format!("{}Callback", f.name);
                    out_args.push(object_arg(callback_arg_name(f)));
                    annotations.push((ANNOTATION_CALLBACK.to_string(), signal.clone()));
                    signals.push(Signal {
                        name: signal,
                        kind: SignalKind::Callback {
                            function: f.name.clone(),
                        },
                        args: api
                            .find_handler(h)
                            .params
                            .iter()
                            .map(|p| arg(api, p))
                            .collect(),
                        annotations: vec![(ANNOTATION_HANDLER.to_string(), h.to_string())],
                    });
                }
                methods.push(Method {
                    name: f.name.clone(),
                    kind: MethodKind::Function,
                    in_args,
                    out_args,
                    annotations,
                });
            }
            Call::Event(e) => {
                let event_note = vec![(ANNOTATION_EVENT.to_string(), e.name.clone())];
                methods.push(Method {
                    name: format!("Add{}Handler", e.name),
                    kind: MethodKind::AddHandler {
                        event: e.name.clone(),
                    },
                    in_args: e.filters().map(|p| arg(api, p)).collect(),
                    out_args: vec![object_arg("handler")],
                    annotations: event_note.clone(),
                });
                methods.push(Method {
                    name: format!("Remove{}Handler", e.name),
                    kind: MethodKind::RemoveHandler {
                        event: e.name.clone(),
                    },
                    in_args: vec![object_arg("handler")],
                    out_args: Vec::new(),
                    annotations: event_note,
                });
                let h = e.handler();
                signals.push(Signal {
                    name: e.name.clone(),
                    kind: SignalKind::Event,
                    args: api
                        .find_handler(h)
                        .params
                        .iter()
                        .map(|p| arg(api, p))
                        .collect(),
                    annotations: vec![(ANNOTATION_HANDLER.to_string(), h.to_string())],
                });
            }
        }
    }
    let mut annotations = vec![
        (ANNOTATION_API.to_string(), api.name.clone()),
        (
            ANNOTATION_PROTOCOL_ID.to_string(),
            crate::protocol_id::protocol_id(api),
        ),
    ];
    for d in &api.defines {
        let value = match &d.value {
            DefineValue::Int(n) => n.to_string(),
            DefineValue::Str(s) => s.clone(),
        };
        annotations.push((format!("{ANNOTATION_DEFINE_PREFIX}{}", d.name), value));
    }
    Interface {
        name: api.interface_name(),
        methods,
        signals,
        annotations,
    }
}
