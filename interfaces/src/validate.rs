//! From syntax to model: binds names, evaluates sizes and values, and enforces every rule
//! of ifgen (plus the few the D-Bus mapping adds). Errors are collected, not just the first.

use crate::ast::{self, BinOp, DeclKind, Expr};
use crate::error::{Diagnostic, Error, Span};
use crate::model::*;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Validates `file` (an API named `name`) against its already compiled imports
/// (every API reachable through USETYPES).
pub fn validate(
    name: &str,
    file: &ast::File,
    imports: BTreeMap<String, Arc<Api>>,
) -> Result<Api, Error> {
    let mut v = Validator {
        api: name.to_string(),
        file,
        imports,
        errors: Vec::new(),
        warnings: Vec::new(),
        defines: HashMap::new(),
        types: HashMap::new(),
        evaluating: Vec::new(),
        values: HashMap::new(),
    };
    let api = v.run();
    v.errors.sort_by_key(|d| (d.span.line, d.span.column));
    if v.errors.is_empty() {
        let mut api = api;
        api.warnings = v.warnings;
        Ok(api)
    } else {
        Err(Error::Invalid(v.errors))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Enum,
    Bitmask,
    Reference,
    Struct,
    Handler,
}

struct Validator<'a> {
    api: String,
    file: &'a ast::File,
    imports: BTreeMap<String, Arc<Api>>,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    /// Local DEFINEs by name (their expression).
    defines: HashMap<&'a str, &'a ast::Decl>,
    /// Local types by name.
    types: HashMap<&'a str, (Kind, &'a ast::Decl)>,
    /// DEFINEs being evaluated, to report cycles.
    evaluating: Vec<String>,
    values: HashMap<String, Option<DefineValue>>,
}

fn is_valid_api_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl<'a> Validator<'a> {
    fn error(&mut self, span: &Span, message: impl Into<String>) {
        self.errors.push(Diagnostic::new(span, message));
    }

    fn run(&mut self) -> Api {
        if !is_valid_api_name(&self.api) {
            let span = Span::new(&self.file.path, 1, 1);
            self.error(
                &span,
                format!(
                    "the API name '{}' (the file name without .api) must start with a letter and contain only letters, digits and '_'",
                    self.api
                ),
            );
        }
        self.declare();
        let mut api = Api {
            name: self.api.clone(),
            doc: self.file.doc.clone(),
            uses: Vec::new(),
            defines: Vec::new(),
            enums: Vec::new(),
            bitmasks: Vec::new(),
            references: Vec::new(),
            structs: Vec::new(),
            handlers: Vec::new(),
            calls: Vec::new(),
            imports: BTreeMap::new(),
            warnings: Vec::new(),
            path: self.file.path.to_string(),
        };
        for decl in &self.file.decls {
            let doc = decl.doc.clone();
            let span = decl.span.clone();
            let name = decl.name.text.clone();
            match &decl.kind {
                DeclKind::UseTypes => {
                    if api.uses.contains(&name) {
                        self.error(&decl.name.span, format!("'{name}' is already imported"));
                    }
                    api.uses.push(name)
                }
                DeclKind::Define(_) => {
                    if let Some(value) = self.define_value(&name) {
                        api.defines.push(Define {
                            name,
                            value,
                            doc,
                            span,
                        });
                    }
                }
                DeclKind::Enum(items) => {
                    let (members, wide) = self.enum_members(&name, items);
                    api.enums.push(EnumType {
                        name,
                        members,
                        wide,
                        doc,
                        span,
                    });
                }
                DeclKind::Bitmask(items) => {
                    let (members, wide) = self.bitmask_members(&name, items);
                    api.bitmasks.push(EnumType {
                        name,
                        members,
                        wide,
                        doc,
                        span,
                    });
                }
                DeclKind::Reference => api.references.push(Reference { name, doc, span }),
                DeclKind::Struct(members) => {
                    let members = self.struct_members(&name, &decl.name.span, members);
                    api.structs.push(Struct {
                        name,
                        members,
                        doc,
                        span,
                    });
                }
                DeclKind::Handler(params) => {
                    let params = self.params(params);
                    for p in &params {
                        if p.direction == Direction::Out {
                            self.error(
                                &p.span,
                                format!(
                                    "HANDLER parameters are always IN, but '{}' is OUT",
                                    p.name
                                ),
                            );
                        }
                        if p.is_handler() {
                            self.error(
                                &p.span,
                                format!("a HANDLER cannot have a handler parameter ('{}')", p.name),
                            );
                        }
                    }
                    api.handlers.push(Handler {
                        name,
                        params,
                        doc,
                        span,
                    });
                }
                DeclKind::Event(params) => {
                    let params = self.params(params);
                    let handlers = params.iter().filter(|p| p.is_handler()).count();
                    if handlers != 1 {
                        self.error(
                            &decl.name.span,
                            format!(
                                "EVENT {name} needs exactly one handler parameter, found {handlers}"
                            ),
                        );
                    }
                    for p in &params {
                        if p.direction == Direction::Out {
                            self.error(
                                &p.span,
                                format!("EVENT parameters are IN filters, but '{}' is OUT", p.name),
                            );
                        }
                    }
                    api.calls.push(Call::Event(Event {
                        name,
                        params,
                        doc,
                        span,
                    }));
                }
                DeclKind::Function { returns, params } => {
                    let returns = returns.as_ref().and_then(|r| {
                        let ty = self.resolve_type(r)?;
                        match ty {
                            Type::Handler(_) => {
                                self.error(&r.span, "a FUNCTION cannot return a handler");
                                None
                            }
                            Type::Basic(Basic::String) => {
                                self.error(
                                    &r.span,
                                    "a FUNCTION cannot return a string; use an OUT parameter with a maximum length",
                                );
                                None
                            }
                            ty => Some(ty),
                        }
                    });
                    let params = self.params(params);
                    let handlers: Vec<&Param> = params.iter().filter(|p| p.is_handler()).collect();
                    if handlers.len() > 1 {
                        let span = handlers[1].span.clone();
                        self.error(
                            &span,
                            format!("FUNCTION {name} can have only one handler parameter"),
                        );
                    }
                    api.calls.push(Call::Function(Function {
                        name,
                        returns,
                        params,
                        doc,
                        span,
                    }));
                }
            }
        }
        self.check_dbus_names(&api);
        self.check_struct_cycles(&api);
        api.imports = std::mem::take(&mut self.imports);
        api
    }

    /// Registers every declaration by name, refusing redefinitions. Like ifgen, types,
    /// DEFINEs, FUNCTIONs and EVENTs are four separate namespaces.
    fn declare(&mut self) {
        let mut functions: HashMap<&str, &Span> = HashMap::new();
        let mut events: HashMap<&str, &Span> = HashMap::new();
        for decl in &self.file.decls {
            let name = decl.name.text.as_str();
            let previous = match &decl.kind {
                DeclKind::UseTypes => None,
                DeclKind::Define(_) => self.defines.insert(name, decl).map(|d| &d.name.span),
                DeclKind::Function { .. } => functions.insert(name, &decl.name.span),
                DeclKind::Event(_) => events.insert(name, &decl.name.span),
                kind => {
                    if Basic::from_name(name).is_some() || name == "handler" {
                        self.error(
                            &decl.name.span,
                            format!("'{name}' is a predefined type and cannot be redeclared"),
                        );
                        continue;
                    }
                    let k = match kind {
                        DeclKind::Enum(_) => Kind::Enum,
                        DeclKind::Bitmask(_) => Kind::Bitmask,
                        DeclKind::Reference => Kind::Reference,
                        DeclKind::Struct(_) => Kind::Struct,
                        _ => Kind::Handler,
                    };
                    self.types
                        .insert(name, (k, decl))
                        .map(|(_, d)| &d.name.span)
                }
            };
            if let Some(prev) = previous {
                let msg = format!(
                    "'{name}' is already declared at {}:{}",
                    prev.line, prev.column
                );
                // Keep the first declaration registered.
                match &decl.kind {
                    DeclKind::Define(_) => {
                        let first = self
                            .file
                            .decls
                            .iter()
                            .find(|d| d.name.text == name && matches!(d.kind, DeclKind::Define(_)))
                            .unwrap();
                        self.defines.insert(name, first);
                    }
                    DeclKind::Function { .. } | DeclKind::Event(_) => {}
                    _ => {
                        let (k, first) = self
                            .file
                            .decls
                            .iter()
                            .find(|d| {
                                d.name.text == name
                                    && !matches!(
                                        d.kind,
                                        DeclKind::Define(_)
                                            | DeclKind::Function { .. }
                                            | DeclKind::Event(_)
                                            | DeclKind::UseTypes
                                    )
                            })
                            .map(|d| (self.types[name].0, d))
                            .unwrap();
                        self.types.insert(name, (k, first));
                    }
                }
                self.error(&decl.name.span, msg);
            }
        }
        for (name, span) in &functions {
            for prefix in ["Add", "Remove"] {
                if let Some(event) = name
                    .strip_prefix(prefix)
                    .and_then(|rest| rest.strip_suffix("Handler"))
                    && events.contains_key(event)
                {
                    let span = (*span).clone();
                    self.error(
                        &span,
                        format!(
                            "FUNCTION {name} clashes with the method generated for EVENT {event}"
                        ),
                    );
                }
            }
        }
    }

    /// D-Bus signal names must be unique: EVENT `X` and one-shot `<Function>Callback`.
    fn check_dbus_names(&mut self, api: &Api) {
        let mut signals: HashMap<String, Span> = HashMap::new();
        let mut pending = Vec::new();
        for call in &api.calls {
            let (signal, span) = match call {
                Call::Event(e) => (e.name.clone(), &e.span),
                Call::Function(f) if f.handler().is_some() => {
                    (format!("{}Callback", f.name), &f.span)
                }
                Call::Function(_) => continue,
            };
            if let Some(prev) = signals.insert(signal.clone(), span.clone()) {
                pending.push((
                    span.clone(),
                    format!(
                        "the D-Bus signal '{signal}' is already generated by the declaration at {}:{}",
                        prev.line, prev.column
                    ),
                ));
            }
        }
        for (span, msg) in pending {
            self.error(&span, msg);
        }
    }

    fn check_struct_cycles(&mut self, api: &Api) {
        fn contains(api: &Api, s: &Struct, target: &str, seen: &mut Vec<String>) -> bool {
            for m in &s.members {
                if let Type::Struct(t) = &m.ty
                    && t.api == api.name
                {
                    if t.name == target {
                        return true;
                    }
                    if seen.contains(&t.name) {
                        continue;
                    }
                    seen.push(t.name.clone());
                    if let Some(inner) = api.structs.iter().find(|x| x.name == t.name)
                        && contains(api, inner, target, seen)
                    {
                        return true;
                    }
                }
            }
            false
        }
        for s in &api.structs {
            if contains(api, s, &s.name, &mut Vec::new()) {
                self.error(&s.span, format!("STRUCT {} contains itself", s.name));
            }
        }
    }

    fn imported(&mut self, scope: &str, span: &Span) -> Option<Arc<Api>> {
        match self.imports.get(scope) {
            Some(api) => Some(api.clone()),
            None => {
                self.error(
                    span,
                    format!("unknown API '{scope}': add 'USETYPES {scope};' to import it"),
                );
                None
            }
        }
    }

    fn resolve_type(&mut self, path: &ast::Path) -> Option<Type> {
        if path.scope.is_none()
            && let Some(b) = Basic::from_name(&path.name)
        {
            return Some(Type::Basic(b));
        }
        let (api_name, kind) = match &path.scope {
            None => {
                let Some((kind, _)) = self.types.get(path.name.as_str()) else {
                    let hint = if self.defines.contains_key(path.name.as_str()) {
                        " (it is a DEFINE)"
                    } else {
                        ""
                    };
                    self.error(&path.span, format!("unknown type '{}'{hint}", path.name));
                    return None;
                };
                (self.api.clone(), *kind)
            }
            Some(scope) => {
                let api = self.imported(scope, &path.span)?;
                let n = path.name.as_str();
                let kind = if api.enums.iter().any(|e| e.name == n) {
                    Kind::Enum
                } else if api.bitmasks.iter().any(|e| e.name == n) {
                    Kind::Bitmask
                } else if api.references.iter().any(|e| e.name == n) {
                    Kind::Reference
                } else if api.structs.iter().any(|e| e.name == n) {
                    Kind::Struct
                } else if api.handlers.iter().any(|e| e.name == n) {
                    Kind::Handler
                } else {
                    self.error(
                        &path.span,
                        format!("unknown type '{path}': {scope} declares no type {n}"),
                    );
                    return None;
                };
                (scope.clone(), kind)
            }
        };
        let t = TypeName {
            api: api_name,
            name: path.name.clone(),
        };
        Some(match kind {
            Kind::Enum => Type::Enum(t),
            Kind::Bitmask => Type::Bitmask(t),
            Kind::Reference => Type::Reference(t),
            Kind::Struct => Type::Struct(t),
            Kind::Handler => Type::Handler(t),
        })
    }

    fn struct_members(&mut self, name: &str, span: &Span, members: &[ast::Param]) -> Vec<Param> {
        if members.is_empty() {
            self.error(
                span,
                format!("STRUCT {name} has no members (D-Bus has no empty structure)"),
            );
        }
        let members = self.params(members);
        for m in &members {
            if m.is_handler() {
                self.error(
                    &m.span,
                    format!("a STRUCT cannot contain a handler ('{}')", m.name),
                );
            }
        }
        members
    }

    /// Resolves a parameter or member list; checks names, sizes and array rules.
    fn params(&mut self, params: &[ast::Param]) -> Vec<Param> {
        let mut out: Vec<Param> = Vec::new();
        for p in params {
            let mut name = p.name.text.clone();
            // Old style `handler Foo`: the parameter name is the handler type.
            let ty = if p.ty.scope.is_none() && p.ty.name == "handler" {
                let pretend = ast::Path {
                    scope: None,
                    name: name.clone(),
                    span: p.name.span.clone(),
                };
                self.warnings.push(Diagnostic::new(
                    &p.ty.span,
                    format!(
                        "parameters of type 'handler' are deprecated; write '{name} handler' instead"
                    ),
                ));
                name = "handler".into();
                match self.resolve_type(&pretend) {
                    Some(Type::Handler(t)) => Some(Type::Handler(t)),
                    Some(_) => {
                        self.error(&p.name.span, format!("'{}' is not a HANDLER", p.name.text));
                        None
                    }
                    None => None,
                }
            } else {
                self.resolve_type(&p.ty)
            };
            if let Some(prev) = out.iter().find(|q| q.name == name) {
                let msg = format!(
                    "duplicate name '{name}' (first at {}:{})",
                    prev.span.line, prev.span.column
                );
                self.error(&p.name.span, msg);
            }
            let Some(ty) = ty else { continue };
            let mut max = None;
            if let Some(size) = &p.size {
                if let Some(min) = &size.deprecated_min {
                    self.warnings.push(Diagnostic::new(
                        min.span(),
                        "minimum lengths are deprecated and ignored",
                    ));
                }
                if let Some(n) = self.size(&size.max) {
                    max = Some(n);
                }
                if matches!(ty, Type::Handler(_)) {
                    self.error(
                        &p.name.span,
                        format!("'{name}': arrays of handlers are not allowed"),
                    );
                }
            } else if ty == Type::Basic(Basic::String) {
                self.error(
                    &p.name.span,
                    format!("string '{name}' needs a maximum length, e.g. string {name}[64]"),
                );
            }
            let direction = match &p.direction {
                Some((d, span)) => {
                    if matches!(ty, Type::Handler(_)) {
                        self.error(
                            span,
                            format!("handler parameter '{name}' takes no IN or OUT"),
                        );
                    }
                    *d
                }
                None => Direction::In,
            };
            out.push(Param {
                name,
                ty,
                max,
                direction,
                doc: p.doc.clone(),
                span: p.name.span.clone(),
            });
        }
        out
    }

    fn size(&mut self, expr: &Expr) -> Option<u64> {
        match self.eval(expr)? {
            DefineValue::Int(n) if n >= 1 && n <= u32::MAX as i128 => Some(n as u64),
            DefineValue::Int(n) if n >= 1 => {
                self.error(
                    expr.span(),
                    format!("a size must be at most {}, found {n}", u32::MAX),
                );
                None
            }
            DefineValue::Int(n) => {
                self.error(expr.span(), format!("a size must be at least 1, found {n}"));
                None
            }
            DefineValue::Str(_) => {
                self.error(expr.span(), "a size must be an integer, found a string");
                None
            }
        }
    }

    fn define_value(&mut self, name: &str) -> Option<DefineValue> {
        if let Some(v) = self.values.get(name) {
            return v.clone();
        }
        let decl = self.defines[name];
        if self.evaluating.iter().any(|n| n == name) {
            let chain = format!("{} -> {name}", self.evaluating.join(" -> "));
            self.error(
                &decl.name.span,
                format!("DEFINE {name} refers to itself ({chain})"),
            );
            self.values.insert(name.to_string(), None);
            return None;
        }
        let DeclKind::Define(expr) = &decl.kind else {
            unreachable!()
        };
        self.evaluating.push(name.to_string());
        let v = self.eval(expr);
        self.evaluating.pop();
        self.values.insert(name.to_string(), v.clone());
        v
    }

    fn int(&mut self, expr: &Expr) -> Option<i128> {
        match self.eval(expr)? {
            DefineValue::Int(n) => Some(n),
            DefineValue::Str(_) => {
                self.error(expr.span(), "arithmetic needs integers, found a string");
                None
            }
        }
    }

    /// Evaluates with 64-bit signed results (wider intermediate checks in i128).
    fn eval(&mut self, expr: &Expr) -> Option<DefineValue> {
        let n: i128 = match expr {
            Expr::Number(n, _) => *n as i128,
            Expr::Str(s, _) => return Some(DefineValue::Str(s.clone())),
            Expr::Define(path) => return self.define_ref(path),
            Expr::Neg(inner, _) => -self.int(inner)?,
            Expr::Binary(l, op, r, span) => {
                let (l, r) = (self.int(l)?, self.int(r)?);
                match op {
                    BinOp::Add => l + r,
                    BinOp::Sub => l - r,
                    BinOp::Mul => l.checked_mul(r).unwrap_or(i128::MAX),
                    BinOp::Div => {
                        if r == 0 {
                            self.error(span, "division by zero");
                            return None;
                        }
                        l / r
                    }
                }
            }
        };
        // 64 bits, signed or unsigned (a BITMASK may use bit 63).
        if n > u64::MAX as i128 || n < i64::MIN as i128 {
            self.error(expr.span(), "value does not fit in 64 bits");
            return None;
        }
        Some(DefineValue::Int(n))
    }

    fn define_ref(&mut self, path: &ast::Path) -> Option<DefineValue> {
        match &path.scope {
            None => {
                if self.defines.contains_key(path.name.as_str()) {
                    self.define_value(&path.name)
                } else {
                    self.error(&path.span, format!("no DEFINE named '{}'", path.name));
                    None
                }
            }
            Some(scope) => {
                let api = self.imported(scope, &path.span)?;
                match api.defines.iter().find(|d| d.name == path.name) {
                    Some(d) => Some(d.value.clone()),
                    None => {
                        self.error(&path.span, format!("no DEFINE named '{path}'"));
                        None
                    }
                }
            }
        }
    }

    /// Enumerator values: wide (u64 bit patterns) for bitmasks.
    fn raw_value(&mut self, expr: &Expr) -> Option<i128> {
        match self.eval(expr)? {
            DefineValue::Int(n) => Some(n),
            DefineValue::Str(_) => {
                self.error(expr.span(), "a value must be an integer, found a string");
                None
            }
        }
    }

    fn enum_members(&mut self, name: &str, items: &[ast::Enumerator]) -> (Vec<Member>, bool) {
        let mut next: i128 = 0;
        let mut members: Vec<Member> = Vec::new();
        for item in items {
            let value = match &item.value {
                Some(e) => match self.raw_value(e) {
                    Some(v) => v,
                    None => continue,
                },
                None => next,
            };
            next = value + 1;
            if value > i64::MAX as i128 {
                self.error(
                    &item.name.span,
                    format!(
                        "ENUM {name} is larger than 64 bits (value of {})",
                        item.name.text
                    ),
                );
                continue;
            }
            self.check_member(name, "ENUM", &members, item, value);
            members.push(Member {
                name: item.name.text.clone(),
                value,
                doc: item.doc.clone(),
            });
        }
        let wide = members
            .iter()
            .any(|m| m.value > i32::MAX as i128 || m.value < i32::MIN as i128);
        (members, wide)
    }

    fn bitmask_members(&mut self, name: &str, items: &[ast::Enumerator]) -> (Vec<Member>, bool) {
        let mut next: i128 = 1;
        let mut members: Vec<Member> = Vec::new();
        for item in items {
            let value = match &item.value {
                Some(e) => match self.raw_value(e) {
                    Some(v) => v,
                    None => continue,
                },
                None => next,
            };
            next = if value == 0 { 1 } else { value << 1 };
            if value < 0 {
                self.error(
                    &item.name.span,
                    format!("BITMASK {name}: {} is negative", item.name.text),
                );
                continue;
            }
            if value > u64::MAX as i128 {
                self.error(
                    &item.name.span,
                    format!(
                        "BITMASK {name} is larger than 64 bits (value of {})",
                        item.name.text
                    ),
                );
                continue;
            }
            if value & (value - 1) != 0 {
                self.error(
                    &item.name.span,
                    format!(
                        "BITMASK {name}: value {value:#x} of {} is not a power of 2",
                        item.name.text
                    ),
                );
                continue;
            }
            self.check_member(name, "BITMASK", &members, item, value);
            members.push(Member {
                name: item.name.text.clone(),
                value,
                doc: item.doc.clone(),
            });
        }
        let wide = members.iter().any(|m| m.value > u32::MAX as i128);
        (members, wide)
    }

    fn check_member(
        &mut self,
        name: &str,
        kw: &str,
        members: &[Member],
        item: &ast::Enumerator,
        value: i128,
    ) {
        if members.iter().any(|m| m.name == item.name.text) {
            self.error(
                &item.name.span,
                format!("{kw} {name} already has a member named {}", item.name.text),
            );
        } else if let Some(m) = members.iter().find(|m| m.value == value) {
            self.error(
                &item.name.span,
                format!(
                    "{kw} {name} has duplicate values: {} and {} are both {value}",
                    m.name, item.name.text
                ),
            );
        }
    }
}
