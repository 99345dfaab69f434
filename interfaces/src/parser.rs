//! Recursive-descent parser: tokens to [`ast::File`].
//!
//! Grammar (ours, covering everything Legato's ifgen accepts):
//! ```text
//! file      := decl*
//! decl      := PREDOC? ( USETYPES IDENT ('.' 'api')? ';'
//!                      | DEFINE IDENT '=' expr ';'
//!                      | (ENUM|BITMASK) IDENT '{' (item (',' item)* ','?)? '}' ';'
//!                      | REFERENCE IDENT ';'
//!                      | STRUCT IDENT '{' (type IDENT size? ';')* '}' ';'
//!                      | (HANDLER|EVENT) IDENT '(' params? ')' ';'
//!                      | FUNCTION type? IDENT '(' params? ')' ';' ) POSTDOC*
//! item      := IDENT ('=' expr)? POSTDOC*
//! params    := param (',' POSTDOC* param)*
//! param     := type IDENT size? (IN|OUT)? POSTDOC*
//! size      := '[' expr ('..' expr)? ']'
//! type      := IDENT ('.' IDENT)?
//! expr      := term (('+'|'-') term)* ; term := unary (('*'|'/') unary)*
//! unary     := ('-'|'+') unary | NUMBER | STRING | type | '(' expr ')'
//! ```

use crate::ast::*;
use crate::error::{Error, Span};
use crate::lexer::{Tok, Token, tokenize};
use std::sync::Arc;

pub const KEYWORDS: &[&str] = &[
    "IN",
    "OUT",
    "FUNCTION",
    "HANDLER",
    "EVENT",
    "REFERENCE",
    "DEFINE",
    "ENUM",
    "BITMASK",
    "STRUCT",
    "USETYPES",
];

/// Parses one file's text. `path` is used in positions only.
pub fn parse(path: &str, source: &str) -> Result<File, Error> {
    let file: Arc<str> = Arc::from(path);
    let tokens = tokenize(&file, source)?;
    let mut p = Parser {
        tokens,
        pos: 0,
        pre_docs: Vec::new(),
        post_docs: Vec::new(),
    };
    p.file(file)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    /// Doc comments passed over since they were last claimed.
    pre_docs: Vec<String>,
    post_docs: Vec<String>,
}

type PResult<T> = Result<T, Error>;

impl Parser {
    /// Moves doc comments ahead of the cursor into the pending lists.
    fn collect_docs(&mut self) {
        while let Some(t) = self.tokens.get(self.pos) {
            match &t.tok {
                Tok::PreDoc(s) => self.pre_docs.push(s.clone()),
                Tok::PostDoc(s) => self.post_docs.push(s.clone()),
                _ => return,
            }
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> &Token {
        self.collect_docs();
        &self.tokens[self.pos]
    }

    fn next(&mut self) -> Token {
        self.collect_docs();
        let t = self.tokens[self.pos].clone();
        if t.tok != Tok::Eof {
            self.pos += 1;
        }
        t
    }

    fn take_pre_doc(&mut self) -> Option<String> {
        let doc = self.pre_docs.pop();
        self.pre_docs.clear();
        doc
    }

    fn take_post_doc(&mut self) -> Option<String> {
        if self.post_docs.is_empty() {
            return None;
        }
        Some(std::mem::take(&mut self.post_docs).join("\n"))
    }

    fn error<T>(&mut self, expected: &str) -> PResult<T> {
        let t = self.peek().clone();
        Err(Error::one(
            &t.span,
            format!("expected {expected}, found {}", t.tok.describe()),
        ))
    }

    fn is_punct(&mut self, c: char) -> bool {
        self.peek().tok == Tok::Punct(c)
    }

    fn expect_punct(&mut self, c: char, context: &str) -> PResult<Span> {
        if self.is_punct(c) {
            Ok(self.next().span)
        } else {
            self.error(&format!("'{c}' {context}"))
        }
    }

    fn is_keyword(&mut self, kw: &str) -> bool {
        matches!(&self.peek().tok, Tok::Ident(s) if s == kw)
    }

    /// An identifier that is not a keyword.
    fn name(&mut self, what: &str) -> PResult<Name> {
        let t = self.peek().clone();
        match t.tok {
            Tok::Ident(s) if !KEYWORDS.contains(&s.as_str()) => {
                self.next();
                Ok(Name {
                    text: s,
                    span: t.span,
                })
            }
            _ => self.error(what),
        }
    }

    fn path(&mut self, what: &str) -> PResult<Path> {
        let first = self.name(what)?;
        if self.is_punct('.') {
            self.next();
            let second = self.name(&format!("a name after '{}.'", first.text))?;
            return Ok(Path {
                scope: Some(first.text),
                name: second.text,
                span: first.span,
            });
        }
        Ok(Path {
            scope: None,
            name: first.text,
            span: first.span,
        })
    }

    fn file(&mut self, path: Arc<str>) -> PResult<File> {
        let mut decls = Vec::new();
        let mut file_doc = None;
        loop {
            self.collect_docs();
            if decls.is_empty() && file_doc.is_none() && self.pre_docs.len() >= 2 {
                // Two doc comments before the first declaration: the first documents the file.
                file_doc = Some(self.pre_docs.remove(0));
            }
            if self.peek().tok == Tok::Eof {
                if decls.is_empty() && file_doc.is_none() {
                    file_doc = self.take_pre_doc();
                }
                break;
            }
            // Post comments between declarations with nothing to attach to are dropped.
            self.post_docs.clear();
            let doc = self.take_pre_doc();
            let mut decl = self.decl()?;
            decl.doc = doc;
            // `DEFINE X = 1; ///< doc` documents the declaration it follows.
            self.collect_docs();
            if let Some(post) = self.take_post_doc() {
                decl.doc = Some(match decl.doc.take() {
                    Some(pre) => format!("{pre}\n{post}"),
                    None => post,
                });
            }
            decls.push(decl);
        }
        Ok(File {
            path,
            doc: file_doc,
            decls,
        })
    }

    fn decl(&mut self) -> PResult<Decl> {
        let t = self.peek().clone();
        let kw = match &t.tok {
            Tok::Ident(s) if KEYWORDS.contains(&s.as_str()) && s != "IN" && s != "OUT" => s.clone(),
            _ => {
                return self.error(
                    "a declaration (USETYPES, DEFINE, ENUM, BITMASK, REFERENCE, STRUCT, HANDLER, EVENT or FUNCTION)",
                );
            }
        };
        self.next();
        let span = t.span;
        let (name, kind) = match kw.as_str() {
            "USETYPES" => {
                let name = self.name("the name of an API to import after USETYPES")?;
                if self.is_punct('.') {
                    self.next();
                    match self.next().tok {
                        Tok::Ident(ext) if ext == "api" => {}
                        _ => {
                            self.pos -= 1;
                            return self.error("'api' after '.' in USETYPES");
                        }
                    }
                }
                (name, DeclKind::UseTypes)
            }
            "DEFINE" => {
                let name = self.name("a name after DEFINE")?;
                self.expect_punct('=', "after the DEFINE name")?;
                (name, DeclKind::Define(self.expr()?))
            }
            "ENUM" | "BITMASK" => {
                let name = self.name(&format!("a name after {kw}"))?;
                let items = self.enumerators(&kw)?;
                let kind = if kw == "ENUM" {
                    DeclKind::Enum(items)
                } else {
                    DeclKind::Bitmask(items)
                };
                (name, kind)
            }
            "REFERENCE" => (self.name("a name after REFERENCE")?, DeclKind::Reference),
            "STRUCT" => {
                let name = self.name("a name after STRUCT")?;
                (name, DeclKind::Struct(self.members()?))
            }
            "HANDLER" | "EVENT" => {
                let name = self.name(&format!("a name after {kw}"))?;
                let params = self.params()?;
                let kind = if kw == "HANDLER" {
                    DeclKind::Handler(params)
                } else {
                    DeclKind::Event(params)
                };
                (name, kind)
            }
            _ => {
                // FUNCTION [ReturnType] Name ( ... )
                let first = self.path("a return type or function name after FUNCTION")?;
                let (returns, name) = if self.is_punct('(') {
                    if first.scope.is_some() {
                        return Err(Error::one(
                            &first.span,
                            format!("expected a function name, found scoped name '{first}'"),
                        ));
                    }
                    (
                        None,
                        Name {
                            text: first.name,
                            span: first.span,
                        },
                    )
                } else {
                    (Some(first), self.name("a function name")?)
                };
                let params = self.params()?;
                (name, DeclKind::Function { returns, params })
            }
        };
        self.expect_punct(';', &format!("at the end of the {kw} declaration"))?;
        Ok(Decl {
            span,
            name,
            kind,
            doc: None,
        })
    }

    fn enumerators(&mut self, kw: &str) -> PResult<Vec<Enumerator>> {
        self.expect_punct('{', &format!("to open the {kw} body"))?;
        let mut items: Vec<Enumerator> = Vec::new();
        loop {
            if self.is_punct('}') {
                break;
            }
            self.pre_docs.clear();
            let name = self.name(&format!("an {kw} member name or '}}'"))?;
            let value = if self.is_punct('=') {
                self.next();
                Some(self.expr()?)
            } else {
                None
            };
            items.push(Enumerator {
                name,
                value,
                doc: None,
            });
            let more = self.is_punct(',');
            if more {
                self.next();
            }
            // Post comments can sit before or after the comma.
            self.collect_docs();
            items.last_mut().unwrap().doc = self.take_post_doc();
            if !more {
                break;
            }
        }
        self.expect_punct('}', &format!("or ',' in the {kw} body"))?;
        Ok(items)
    }

    fn members(&mut self) -> PResult<Vec<Param>> {
        self.expect_punct('{', "to open the STRUCT body")?;
        let mut members: Vec<Param> = Vec::new();
        while !self.is_punct('}') {
            self.pre_docs.clear();
            let ty = self.path("a member type or '}'")?;
            let name = self.name("a member name")?;
            let size = self.size()?;
            self.expect_punct(';', "after the STRUCT member")?;
            self.collect_docs();
            let doc = self.take_post_doc();
            members.push(Param {
                ty,
                name,
                size,
                direction: None,
                doc,
            });
        }
        self.next();
        Ok(members)
    }

    fn params(&mut self) -> PResult<Vec<Param>> {
        self.expect_punct('(', "to open the parameter list")?;
        let mut params: Vec<Param> = Vec::new();
        if self.is_punct(')') {
            self.next();
            return Ok(params);
        }
        loop {
            self.pre_docs.clear();
            let ty = self.path("a parameter type")?;
            let name = self.name("a parameter name")?;
            let size = self.size()?;
            let direction = if self.is_keyword("IN") {
                Some((Direction::In, self.next().span))
            } else if self.is_keyword("OUT") {
                Some((Direction::Out, self.next().span))
            } else {
                None
            };
            params.push(Param {
                ty,
                name,
                size,
                direction,
                doc: None,
            });
            let more = self.is_punct(',');
            if more {
                self.next();
            }
            self.collect_docs();
            params.last_mut().unwrap().doc = self.take_post_doc();
            if !more {
                break;
            }
        }
        self.expect_punct(')', "or ',' in the parameter list")?;
        Ok(params)
    }

    fn size(&mut self) -> PResult<Option<Size>> {
        if !self.is_punct('[') {
            return Ok(None);
        }
        self.next();
        let first = self.expr()?;
        let size = if self.peek().tok == Tok::DotDot {
            self.next();
            Size {
                max: self.expr()?,
                deprecated_min: Some(first),
            }
        } else {
            Size {
                max: first,
                deprecated_min: None,
            }
        };
        self.expect_punct(']', "to close the size")?;
        Ok(Some(size))
    }

    fn expr(&mut self) -> PResult<Expr> {
        let mut left = self.term()?;
        loop {
            let op = if self.is_punct('+') {
                BinOp::Add
            } else if self.is_punct('-') {
                BinOp::Sub
            } else {
                return Ok(left);
            };
            let span = self.next().span;
            let right = self.term()?;
            left = Expr::Binary(Box::new(left), op, Box::new(right), span);
        }
    }

    fn term(&mut self) -> PResult<Expr> {
        let mut left = self.unary()?;
        loop {
            let op = if self.is_punct('*') {
                BinOp::Mul
            } else if self.is_punct('/') {
                BinOp::Div
            } else {
                return Ok(left);
            };
            let span = self.next().span;
            let right = self.unary()?;
            left = Expr::Binary(Box::new(left), op, Box::new(right), span);
        }
    }

    fn unary(&mut self) -> PResult<Expr> {
        let t = self.peek().clone();
        match t.tok {
            Tok::Punct('-') => {
                self.next();
                Ok(Expr::Neg(Box::new(self.unary()?), t.span))
            }
            Tok::Punct('+') => {
                self.next();
                self.unary()
            }
            Tok::Punct('(') => {
                self.next();
                let e = self.expr()?;
                self.expect_punct(')', "to close the parenthesis")?;
                Ok(e)
            }
            Tok::Number(n) => {
                self.next();
                Ok(Expr::Number(n, t.span))
            }
            Tok::Str(s) => {
                self.next();
                Ok(Expr::Str(s, t.span))
            }
            Tok::Ident(ref s) if !KEYWORDS.contains(&s.as_str()) => {
                Ok(Expr::Define(self.path("a DEFINE name")?))
            }
            _ => self.error("a number, a quoted string, a DEFINE name or '('"),
        }
    }
}
