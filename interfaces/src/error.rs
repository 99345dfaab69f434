//! Positions in `.api` files and the diagnostics that point at them.

use std::fmt;
use std::sync::Arc;

/// A position in a source file (1-based line and column, columns count characters).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Span {
    pub file: Arc<str>,
    pub line: u32,
    pub column: u32,
}

impl Span {
    pub fn new(file: &Arc<str>, line: u32, column: u32) -> Self {
        Span {
            file: file.clone(),
            line,
            column,
        }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// One error or warning, printed as `file:line:col: error: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub span: Span,
    pub message: String,
}

impl Diagnostic {
    pub fn new(span: &Span, message: impl Into<String>) -> Self {
        Diagnostic {
            span: span.clone(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.span, self.message)
    }
}

/// Why a compilation failed: every error found (at least one), in source order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A file could not be read (or found on the include path).
    Io { path: String, message: String },
    /// The source is not a valid API.
    Invalid(Vec<Diagnostic>),
}

impl Error {
    /// The diagnostics of an invalid API (empty for I/O errors).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            Error::Io { .. } => &[],
            Error::Invalid(list) => list,
        }
    }

    pub(crate) fn one(span: &Span, message: impl Into<String>) -> Self {
        Error::Invalid(vec![Diagnostic::new(span, message)])
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, message } => write!(f, "{path}: error: {message}"),
            Error::Invalid(list) => {
                for (i, d) in list.iter().enumerate() {
                    if i > 0 {
                        writeln!(f)?;
                    }
                    write!(f, "{}: error: {}", d.span, d.message)?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for Error {}
