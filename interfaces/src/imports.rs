//! USETYPES: finding imported APIs on the include path, transitively, refusing cycles.

use crate::ast::{self, DeclKind};
use crate::error::{Diagnostic, Error, Span};
use crate::model::Api;
use crate::{parser, validate};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where sources come from: the file system, or (for tests and tools) memory.
pub trait Source {
    /// Finds `<name>.api` for a file in `from_dir`; returns its path and text.
    fn find(&self, name: &str, from_dir: Option<&Path>) -> Option<(PathBuf, String)>;
}

/// Looks in the importing file's directory, then in each include directory in order.
pub struct FileSource {
    pub include_dirs: Vec<PathBuf>,
}

impl Source for FileSource {
    fn find(&self, name: &str, from_dir: Option<&Path>) -> Option<(PathBuf, String)> {
        let file = format!("{name}.api");
        from_dir
            .into_iter()
            .chain(self.include_dirs.iter().map(PathBuf::as_path))
            .map(|dir| dir.join(&file))
            .find_map(|p| std::fs::read_to_string(&p).ok().map(|text| (p, text)))
    }
}

/// In-memory sources by API name (tests, fuzzing, tools).
#[derive(Default)]
pub struct MemorySource {
    pub files: HashMap<String, String>,
}

impl Source for MemorySource {
    fn find(&self, name: &str, _: Option<&Path>) -> Option<(PathBuf, String)> {
        self.files
            .get(name)
            .map(|t| (PathBuf::from(format!("{name}.api")), t.clone()))
    }
}

/// Compiles APIs and caches the imported ones (each is compiled once).
pub struct Loader<'s> {
    source: &'s dyn Source,
    done: HashMap<String, Arc<Api>>,
    /// The chain of USETYPES being followed, to report cycles.
    stack: Vec<String>,
}

impl<'s> Loader<'s> {
    pub fn new(source: &'s dyn Source) -> Self {
        Loader {
            source,
            done: HashMap::new(),
            stack: Vec::new(),
        }
    }

    /// Compiles the text of API `name` found at `path`.
    pub fn compile(&mut self, name: &str, path: &Path, text: &str) -> Result<Api, Error> {
        let shown = path.display().to_string();
        let file = parser::parse(&shown, text)?;
        self.stack.push(name.to_string());
        let imports = self.imports_of(&file, path.parent());
        self.stack.pop();
        validate::validate(name, &file, imports?)
    }

    fn imports_of(
        &mut self,
        file: &ast::File,
        dir: Option<&Path>,
    ) -> Result<BTreeMap<String, Arc<Api>>, Error> {
        let mut all = BTreeMap::new();
        let mut errors = Vec::new();
        for decl in &file.decls {
            if decl.kind != DeclKind::UseTypes {
                continue;
            }
            match self.import(&decl.name.text, &decl.name.span, dir) {
                Ok(api) => {
                    for (n, a) in &api.imports {
                        all.insert(n.clone(), a.clone());
                    }
                    all.insert(api.name.clone(), api);
                }
                Err(Error::Invalid(mut d)) => errors.append(&mut d),
                Err(e) => return Err(e),
            }
        }
        if errors.is_empty() {
            Ok(all)
        } else {
            Err(Error::Invalid(errors))
        }
    }

    fn import(&mut self, name: &str, span: &Span, dir: Option<&Path>) -> Result<Arc<Api>, Error> {
        if let Some(pos) = self.stack.iter().position(|n| n == name) {
            let chain = self.stack[pos..].join(" -> ");
            return Err(Error::one(
                span,
                format!("USETYPES cycle: {chain} -> {name}"),
            ));
        }
        if let Some(api) = self.done.get(name) {
            return Ok(api.clone());
        }
        let Some((path, text)) = self.source.find(name, dir) else {
            return Err(Error::one(
                span,
                format!("cannot find {name}.api next to this file or on the include path"),
            ));
        };
        let api = match self.compile(name, &path, &text) {
            Ok(api) => Arc::new(api),
            Err(Error::Invalid(mut d)) => {
                // Say where the failing import was requested from.
                d.push(Diagnostic::new(
                    span,
                    format!("in the API {name} imported here"),
                ));
                return Err(Error::Invalid(d));
            }
            Err(e) => return Err(e),
        };
        self.done.insert(name.to_string(), api.clone());
        Ok(api)
    }
}
