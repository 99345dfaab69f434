//! The TelAF `.api` language compiled to D-Bus.
//!
//! Pipeline: [`lexer`] → [`parser`] (an [`ast`] keeping doc comments) → [`imports`]
//! (USETYPES on an include path) → [`validate`] (every ifgen rule) → [`model`] → outputs:
//! [`dbus`] (signatures and argument names), [`xml`] (introspection XML), [`rust`]
//! (zbus code), [`json`] (a dump for tools) and [`protocol_id`] (a stable hash).
//!
//! ```no_run
//! let api = telbus_interfaces::Compiler::new()
//!     .include_dir("interfaces/api")
//!     .compile_file("interfaces/api/le_mcc.api")?;
//! println!("{}", telbus_interfaces::xml::generate(&api));
//! # Ok::<(), telbus_interfaces::Error>(())
//! ```

pub mod ast;
pub mod build;
pub mod dbus;
pub mod error;
pub mod imports;
pub mod json;
pub mod lexer;
pub mod model;
pub mod parser;
pub mod protocol_id;
pub mod rust;
pub mod validate;
pub mod xml;

pub use error::{Diagnostic, Error, Span};
pub use model::Api;

use std::path::{Path, PathBuf};

/// Compiles `.api` files; USETYPES are looked up next to the importing file, then in the
/// include directories in the order given.
#[derive(Debug, Default, Clone)]
pub struct Compiler {
    include_dirs: Vec<PathBuf>,
}

impl Compiler {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn include_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.include_dirs.push(dir.into());
        self
    }

    pub fn include_dirs<I: IntoIterator<Item = P>, P: Into<PathBuf>>(mut self, dirs: I) -> Self {
        self.include_dirs.extend(dirs.into_iter().map(Into::into));
        self
    }

    /// Compiles one file; the API is named after the file (`le_mcc.api` → `le_mcc`).
    pub fn compile_file(&self, path: impl AsRef<Path>) -> Result<Api, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let name = api_name(path);
        let source = imports::FileSource {
            include_dirs: self.include_dirs.clone(),
        };
        imports::Loader::new(&source).compile(&name, path, &text)
    }

    /// Compiles source text as API `name`; USETYPES are looked up in the include directories.
    pub fn compile_str(&self, name: &str, text: &str) -> Result<Api, Error> {
        let source = imports::FileSource {
            include_dirs: self.include_dirs.clone(),
        };
        imports::Loader::new(&source).compile(name, Path::new(&format!("{name}.api")), text)
    }
}

/// Compiles `text` as API `name`, with imports taken from `others` (name → text).
pub fn compile_in_memory(name: &str, text: &str, others: &[(&str, &str)]) -> Result<Api, Error> {
    let source = imports::MemorySource {
        files: others
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect(),
    };
    imports::Loader::new(&source).compile(name, Path::new(&format!("{name}.api")), text)
}

/// `dir/le_mcc.api` → `le_mcc`.
pub fn api_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}
