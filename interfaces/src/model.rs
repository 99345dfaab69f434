//! The resolved, validated API: every name bound, every size a number.

use crate::error::{Diagnostic, Span};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

pub use crate::ast::Direction;

/// The types built into the language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Basic {
    U8,
    U16,
    U32,
    U64,
    I8,
    I16,
    I32,
    I64,
    Double,
    Bool,
    /// Undocumented but accepted by ifgen: one byte.
    Char,
    /// Undocumented but accepted by ifgen: a 32-bit count (`le_sms.GetUserdataLen`).
    Size,
    String,
    File,
    LeResult,
    LeOnOff,
}

impl Basic {
    pub fn from_name(name: &str) -> Option<Basic> {
        Some(match name {
            "uint8" => Basic::U8,
            "uint16" => Basic::U16,
            "uint32" => Basic::U32,
            "uint64" => Basic::U64,
            "int8" => Basic::I8,
            "int16" => Basic::I16,
            "int32" => Basic::I32,
            "int64" => Basic::I64,
            "double" => Basic::Double,
            "bool" => Basic::Bool,
            "char" => Basic::Char,
            "size" => Basic::Size,
            "string" => Basic::String,
            "file" => Basic::File,
            "le_result_t" => Basic::LeResult,
            "le_onoff_t" => Basic::LeOnOff,
            _ => return None,
        })
    }

    /// The name as written in `.api` files.
    pub fn api_name(self) -> &'static str {
        match self {
            Basic::U8 => "uint8",
            Basic::U16 => "uint16",
            Basic::U32 => "uint32",
            Basic::U64 => "uint64",
            Basic::I8 => "int8",
            Basic::I16 => "int16",
            Basic::I32 => "int32",
            Basic::I64 => "int64",
            Basic::Double => "double",
            Basic::Bool => "bool",
            Basic::Char => "char",
            Basic::Size => "size",
            Basic::String => "string",
            Basic::File => "file",
            Basic::LeResult => "le_result_t",
            Basic::LeOnOff => "le_onoff_t",
        }
    }
}

/// A user-declared type, by the API that declares it and its name there.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct TypeName {
    pub api: String,
    pub name: String,
}

impl std::fmt::Display for TypeName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.api, self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum Type {
    Basic(Basic),
    Enum(TypeName),
    Bitmask(TypeName),
    Reference(TypeName),
    Struct(TypeName),
    Handler(TypeName),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum DefineValue {
    /// Any value from i64::MIN to u64::MAX.
    Int(i128),
    Str(String),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Define {
    pub name: String,
    pub value: DefineValue,
    pub doc: Option<String>,
    #[serde(skip)]
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Member {
    pub name: String,
    /// ENUM values are signed; BITMASK values are stored as their bit pattern.
    pub value: i128,
    pub doc: Option<String>,
}

/// An ENUM or a BITMASK.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnumType {
    pub name: String,
    pub members: Vec<Member>,
    /// 64 bits wide on the wire (`x` for ENUM, `t` for BITMASK) instead of 32.
    pub wide: bool,
    pub doc: Option<String>,
    #[serde(skip)]
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reference {
    pub name: String,
    pub doc: Option<String>,
    #[serde(skip)]
    pub span: Span,
}

/// A parameter, or a STRUCT member (always `In`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Param {
    pub name: String,
    pub ty: Type,
    /// Maximum length in bytes for a string, maximum element count for an array.
    pub max: Option<u64>,
    pub direction: Direction,
    pub doc: Option<String>,
    #[serde(skip)]
    pub span: Span,
}

impl Param {
    pub fn is_array(&self) -> bool {
        self.max.is_some() && self.ty != Type::Basic(Basic::String)
    }

    pub fn is_handler(&self) -> bool {
        matches!(self.ty, Type::Handler(_))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Struct {
    pub name: String,
    pub members: Vec<Param>,
    pub doc: Option<String>,
    #[serde(skip)]
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Handler {
    pub name: String,
    pub params: Vec<Param>,
    pub doc: Option<String>,
    #[serde(skip)]
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub name: String,
    /// The parameters as declared, the handler included.
    pub params: Vec<Param>,
    pub doc: Option<String>,
    #[serde(skip)]
    pub span: Span,
}

impl Event {
    /// The IN parameters that select what the subscriber receives.
    pub fn filters(&self) -> impl Iterator<Item = &Param> {
        self.params.iter().filter(|p| !p.is_handler())
    }

    pub fn handler(&self) -> &TypeName {
        self.params
            .iter()
            .find_map(|p| match &p.ty {
                Type::Handler(t) => Some(t),
                _ => None,
            })
            .expect("validated: an EVENT has one handler")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Function {
    pub name: String,
    pub returns: Option<Type>,
    pub params: Vec<Param>,
    pub doc: Option<String>,
    #[serde(skip)]
    pub span: Span,
}

impl Function {
    /// The one-shot callback parameter, if any.
    pub fn handler(&self) -> Option<&TypeName> {
        self.params.iter().find_map(|p| match &p.ty {
            Type::Handler(t) => Some(t),
            _ => None,
        })
    }
}

/// A FUNCTION or an EVENT, in declaration order (the order of Legato's message ids).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Call {
    Function(Function),
    Event(Event),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Api {
    /// The file name without `.api`.
    pub name: String,
    pub doc: Option<String>,
    /// Direct `USETYPES`, in order.
    pub uses: Vec<String>,
    pub defines: Vec<Define>,
    pub enums: Vec<EnumType>,
    pub bitmasks: Vec<EnumType>,
    pub references: Vec<Reference>,
    pub structs: Vec<Struct>,
    pub handlers: Vec<Handler>,
    pub calls: Vec<Call>,
    /// Every API imported directly or transitively, by name.
    #[serde(skip)]
    pub imports: BTreeMap<String, Arc<Api>>,
    #[serde(skip)]
    pub warnings: Vec<Diagnostic>,
    #[serde(skip)]
    pub path: String,
}

impl Api {
    pub fn functions(&self) -> impl Iterator<Item = &Function> {
        self.calls.iter().filter_map(|c| match c {
            Call::Function(f) => Some(f),
            Call::Event(_) => None,
        })
    }

    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.calls.iter().filter_map(|c| match c {
            Call::Event(e) => Some(e),
            Call::Function(_) => None,
        })
    }

    /// The API that declares `t`: this one or an import.
    pub fn api_of(&self, t: &TypeName) -> &Api {
        if t.api == self.name {
            self
        } else {
            &self.imports[&t.api]
        }
    }

    pub fn find_enum(&self, t: &TypeName) -> &EnumType {
        let api = self.api_of(t);
        api.enums
            .iter()
            .find(|e| e.name == t.name)
            .expect("resolved enum")
    }

    pub fn find_bitmask(&self, t: &TypeName) -> &EnumType {
        let api = self.api_of(t);
        api.bitmasks
            .iter()
            .find(|e| e.name == t.name)
            .expect("resolved bitmask")
    }

    pub fn find_struct(&self, t: &TypeName) -> &Struct {
        let api = self.api_of(t);
        api.structs
            .iter()
            .find(|e| e.name == t.name)
            .expect("resolved struct")
    }

    pub fn find_handler(&self, t: &TypeName) -> &Handler {
        let api = self.api_of(t);
        api.handlers
            .iter()
            .find(|e| e.name == t.name)
            .expect("resolved handler")
    }

    /// The D-Bus interface name.
    pub fn interface_name(&self) -> String {
        format!("io.telaf.{}", self.name)
    }
}
