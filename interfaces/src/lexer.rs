//! Tokens of the `.api` language.
//!
//! Written by hand: the language is tiny, and a hand-written lexer gives the exact
//! positions and messages the diagnostics need without a generator dependency.

use crate::error::{Error, Span};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tok {
    /// An identifier or keyword (keywords are recognised by the parser).
    Ident(String),
    /// An unsigned number, decimal or `0x` hexadecimal.
    Number(u64),
    /// A quoted string, escapes resolved.
    Str(String),
    /// One of `{ } ( ) [ ] ; , = . + - * /`.
    Punct(char),
    /// `..` in the deprecated `[min..max]` array size.
    DotDot,
    /// `/** … */`: documents what follows.
    PreDoc(String),
    /// `///< …`: documents what precedes.
    PostDoc(String),
    Eof,
}

impl Tok {
    /// How the token is named in "expected X, found Y" messages.
    pub fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("'{s}'"),
            Tok::Number(n) => format!("number {n}"),
            Tok::Str(_) => "a quoted string".into(),
            Tok::Punct(c) => format!("'{c}'"),
            Tok::DotDot => "'..'".into(),
            Tok::PreDoc(_) | Tok::PostDoc(_) => "a doc comment".into(),
            Tok::Eof => "end of file".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub tok: Tok,
    pub span: Span,
}

struct Cursor<'a> {
    chars: Vec<char>,
    pos: usize,
    line: u32,
    column: u32,
    file: &'a Arc<str>,
}

impl Cursor<'_> {
    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.pos + ahead).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.get(self.pos).copied()?;
        self.pos += 1;
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    fn span(&self) -> Span {
        Span::new(self.file, self.line, self.column)
    }

    fn starts_with(&self, s: &str) -> bool {
        s.chars().enumerate().all(|(i, c)| self.peek(i) == Some(c))
    }
}

/// Splits `source` into tokens; the last one is always `Eof`.
pub fn tokenize(file: &Arc<str>, source: &str) -> Result<Vec<Token>, Error> {
    let mut cur = Cursor {
        chars: source.chars().collect(),
        pos: 0,
        line: 1,
        column: 1,
        file,
    };
    let mut out = Vec::new();
    loop {
        // Whitespace (including '\r' and form feeds) is insignificant.
        while cur.peek(0).is_some_and(char::is_whitespace) {
            cur.bump();
        }
        let span = cur.span();
        let Some(c) = cur.peek(0) else {
            out.push(Token {
                tok: Tok::Eof,
                span,
            });
            return Ok(out);
        };
        let tok = if cur.starts_with("///<") {
            Tok::PostDoc(post_doc(&mut cur))
        } else if cur.starts_with("//") {
            while cur.peek(0).is_some_and(|c| c != '\n') {
                cur.bump();
            }
            continue;
        } else if cur.starts_with("/*") {
            // "/**/" is an empty plain comment, "/***" a decorated plain comment.
            let is_doc =
                cur.starts_with("/**") && !cur.starts_with("/**/") && cur.peek(3) != Some('*');
            let text = block_comment(&mut cur, &span)?;
            if !is_doc {
                continue;
            }
            Tok::PreDoc(strip_pre_doc(&text))
        } else if c.is_ascii_alphabetic() {
            let mut s = String::new();
            while cur
                .peek(0)
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                s.push(cur.bump().unwrap());
            }
            Tok::Ident(s)
        } else if c.is_ascii_digit() {
            Tok::Number(number(&mut cur, &span)?)
        } else if c == '"' || c == '\'' {
            Tok::Str(quoted(&mut cur, &span)?)
        } else if cur.starts_with("..") {
            cur.bump();
            cur.bump();
            Tok::DotDot
        } else if "{}()[];,=.+-*/".contains(c) {
            cur.bump();
            Tok::Punct(c)
        } else {
            return Err(Error::one(&span, format!("unexpected character {c:?}")));
        };
        out.push(Token { tok, span });
    }
}

/// Consecutive `///<` lines form one post-comment.
fn post_doc(cur: &mut Cursor<'_>) -> String {
    let mut lines = Vec::new();
    loop {
        for _ in 0..4 {
            cur.bump();
        }
        let mut line = String::new();
        while cur.peek(0).is_some_and(|c| c != '\n') {
            line.push(cur.bump().unwrap());
        }
        lines.push(line.trim().to_string());
        // Continue if the next non-blank line starts with ///< as well.
        let mut ahead = 0;
        let mut newlines = 0;
        while let Some(c) = cur.peek(ahead) {
            if c == '\n' {
                newlines += 1;
            }
            if !c.is_whitespace() || newlines > 1 {
                break;
            }
            ahead += 1;
        }
        let continues = newlines == 1
            && "///<"
                .chars()
                .enumerate()
                .all(|(i, c)| cur.peek(ahead + i) == Some(c));
        if !continues {
            break;
        }
        for _ in 0..ahead {
            cur.bump();
        }
    }
    lines.join("\n").trim().to_string()
}

fn block_comment(cur: &mut Cursor<'_>, start: &Span) -> Result<String, Error> {
    cur.bump();
    cur.bump();
    let mut text = String::new();
    loop {
        if cur.starts_with("*/") {
            cur.bump();
            cur.bump();
            return Ok(text);
        }
        match cur.bump() {
            Some(c) => text.push(c),
            None => return Err(Error::one(start, "unterminated comment: expected '*/'")),
        }
    }
}

/// Removes the comment decoration (`*` at the start of each line) and blank edges.
fn strip_pre_doc(text: &str) -> String {
    let text = text.strip_prefix('*').unwrap_or(text);
    let lines: Vec<&str> = text
        .lines()
        .map(|l| {
            let t = l.trim();
            t.strip_prefix('*').map(str::trim_start).unwrap_or(t)
        })
        .collect();
    lines.join("\n").trim().to_string()
}

fn number(cur: &mut Cursor<'_>, span: &Span) -> Result<u64, Error> {
    let hex = cur.starts_with("0x") || cur.starts_with("0X");
    let mut digits = String::new();
    if hex {
        cur.bump();
        cur.bump();
    }
    while cur
        .peek(0)
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        digits.push(cur.bump().unwrap());
    }
    let radix = if hex { 16 } else { 10 };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        let shown = if hex { format!("0x{digits}") } else { digits };
        return Err(Error::one(span, format!("malformed number '{shown}'")));
    }
    u64::from_str_radix(&digits, radix)
        .map_err(|_| Error::one(span, "number does not fit in 64 bits"))
}

fn quoted(cur: &mut Cursor<'_>, span: &Span) -> Result<String, Error> {
    let quote = cur.bump().unwrap();
    let mut s = String::new();
    loop {
        match cur.bump() {
            None | Some('\n') => {
                return Err(Error::one(
                    span,
                    format!("unterminated string: expected {quote}"),
                ));
            }
            Some(c) if c == quote => return Ok(s),
            Some('\\') => match cur.bump() {
                Some('n') => s.push('\n'),
                Some('t') => s.push('\t'),
                Some('r') => s.push('\r'),
                Some(c) => s.push(c),
                None => {
                    return Err(Error::one(
                        span,
                        format!("unterminated string: expected {quote}"),
                    ));
                }
            },
            Some(c) => s.push(c),
        }
    }
}
