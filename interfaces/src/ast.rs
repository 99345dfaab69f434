//! The syntax tree of one `.api` file, as written (names unresolved), doc comments kept.

use crate::error::Span;

#[derive(Debug, Clone, PartialEq)]
pub struct File {
    pub path: std::sync::Arc<str>,
    /// The file's own doc comment (the first of two doc comments before any declaration).
    pub doc: Option<String>,
    pub decls: Vec<Decl>,
}

/// A name as written, with where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    pub text: String,
    pub span: Span,
}

/// A possibly scoped name: `Type` or `other.Type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    pub scope: Option<String>,
    pub name: String,
    pub span: Span,
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.scope {
            Some(s) => write!(f, "{s}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
}

/// A DEFINE value or a size: integer arithmetic over literals and other DEFINEs, or a string.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Number(u64, Span),
    Str(String, Span),
    Define(Path),
    Neg(Box<Expr>, Span),
    Binary(Box<Expr>, BinOp, Box<Expr>, Span),
}

impl Expr {
    pub fn span(&self) -> &Span {
        match self {
            Expr::Number(_, s) | Expr::Str(_, s) | Expr::Neg(_, s) | Expr::Binary(_, _, _, s) => s,
            Expr::Define(p) => &p.span,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Direction {
    In,
    Out,
}

/// An array or string size: `[N]`, or the deprecated `[min..N]` (min ignored).
#[derive(Debug, Clone, PartialEq)]
pub struct Size {
    pub max: Expr,
    pub deprecated_min: Option<Expr>,
}

/// A FUNCTION/HANDLER/EVENT parameter, or (without direction) a STRUCT member.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub ty: Path,
    pub name: Name,
    pub size: Option<Size>,
    /// `None` when no IN/OUT was written (IN is the default).
    pub direction: Option<(Direction, Span)>,
    pub doc: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Enumerator {
    pub name: Name,
    pub value: Option<Expr>,
    pub doc: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DeclKind {
    /// `USETYPES name;` (the name is the import, without `.api`).
    UseTypes,
    Define(Expr),
    Enum(Vec<Enumerator>),
    Bitmask(Vec<Enumerator>),
    Reference,
    Struct(Vec<Param>),
    Handler(Vec<Param>),
    Event(Vec<Param>),
    Function {
        returns: Option<Path>,
        params: Vec<Param>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decl {
    /// Where the keyword is.
    pub span: Span,
    pub name: Name,
    pub kind: DeclKind,
    pub doc: Option<String>,
}

impl DeclKind {
    pub fn keyword(&self) -> &'static str {
        match self {
            DeclKind::UseTypes => "USETYPES",
            DeclKind::Define(_) => "DEFINE",
            DeclKind::Enum(_) => "ENUM",
            DeclKind::Bitmask(_) => "BITMASK",
            DeclKind::Reference => "REFERENCE",
            DeclKind::Struct(_) => "STRUCT",
            DeclKind::Handler(_) => "HANDLER",
            DeclKind::Event(_) => "EVENT",
            DeclKind::Function { .. } => "FUNCTION",
        }
    }
}
