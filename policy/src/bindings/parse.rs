//! The system definition file's syntax: line-oriented, `#` comments, `app NAME { … }` blocks,
//! `apipath "DIR"` and `bind CLIENT.IFACE -> APP.SERVICE` lines. Errors carry file:line:column
//! and say what was expected.

use std::fmt;
use std::path::{Path, PathBuf};

use super::{App, Binding, ClientSide, Glob, Matcher, Provided, Required};

/// A mistake in a system definition file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

impl std::error::Error for ParseError {}

/// What the parser produced, before protocol ids are computed.
pub struct Parsed {
    pub apps: Vec<App>,
    pub bindings: Vec<Binding>,
    pub apipaths: Vec<(PathBuf, usize)>,
}

/// One word of a line and the column (1-based) it starts at.
struct Word<'a> {
    text: &'a str,
    column: usize,
}

fn words(line: &str) -> Vec<Word<'_>> {
    let code = match line.find('#') {
        Some(at) => &line[..at],
        None => line,
    };
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in code.char_indices() {
        let space = c.is_whitespace();
        match (start, space) {
            (None, false) => start = Some(i),
            (Some(s), true) => {
                out.push(Word {
                    text: &code[s..i],
                    column: s + 1,
                });
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push(Word {
            text: &code[s..],
            column: s + 1,
        });
    }
    out
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub fn parse(text: &str, file: &Path) -> Result<Parsed, ParseError> {
    let error = |line: usize, column: usize, message: String| ParseError {
        file: file.to_path_buf(),
        line,
        column,
        message,
    };
    let mut parsed = Parsed {
        apps: Vec::new(),
        bindings: Vec::new(),
        apipaths: Vec::new(),
    };
    let mut current: Option<App> = None;
    let mut last_line = 0;
    for (index, line) in text.lines().enumerate() {
        let n = index + 1;
        last_line = n;
        let w = words(line);
        let Some(first) = w.first() else {
            continue;
        };
        let end_column = line.trim_end().len() + 1;
        if let Some(app) = current.as_mut() {
            match first.text {
                "}" => {
                    if let Some(extra) = w.get(1) {
                        return Err(error(
                            n,
                            extra.column,
                            format!("expected nothing after `}}`, found `{}`", extra.text),
                        ));
                    }
                    if app.matchers.is_empty() {
                        return Err(error(
                            n,
                            first.column,
                            format!(
                                "app `{}` has no `match` line: expected one before `}}`",
                                app.name
                            ),
                        ));
                    }
                    parsed.apps.push(current.take().expect("inside an app"));
                }
                "match" => {
                    if w.len() < 2 {
                        return Err(error(
                            n,
                            end_column,
                            "expected KEY=VALUE after `match` (keys: uid, user, gid, group, exe, unit, label)".into(),
                        ));
                    }
                    for word in &w[1..] {
                        app.matchers
                            .push(matcher(word).map_err(|m| error(n, word.column, m))?);
                    }
                }
                "provides" | "requires" => {
                    let kind = first.text;
                    let Some(name) = w.get(1) else {
                        return Err(error(
                            n,
                            end_column,
                            format!("expected a name after `{kind}`"),
                        ));
                    };
                    if !is_identifier(name.text) {
                        return Err(error(
                            n,
                            name.column,
                            format!(
                                "expected a {} name (letters, digits, `_`), found `{}`",
                                if kind == "provides" {
                                    "service"
                                } else {
                                    "interface"
                                },
                                name.text
                            ),
                        ));
                    }
                    let mut api = None;
                    let mut protocol = None;
                    for word in &w[2..] {
                        match word.text.split_once('=') {
                            Some(("api", v)) if is_identifier(v) => api = Some(v.to_string()),
                            Some(("protocol", v)) if kind == "provides" && !v.is_empty() => {
                                protocol = Some(v.to_string())
                            }
                            _ => {
                                return Err(error(
                                    n,
                                    word.column,
                                    format!(
                                        "expected `api=NAME`{}, found `{}`",
                                        if kind == "provides" {
                                            " or `protocol=ID`"
                                        } else {
                                            ""
                                        },
                                        word.text
                                    ),
                                ));
                            }
                        }
                    }
                    let api = api.unwrap_or_else(|| name.text.to_string());
                    if kind == "provides" {
                        if app.provides.iter().any(|p| p.service == name.text) {
                            return Err(error(
                                n,
                                name.column,
                                format!(
                                    "service `{}` is provided twice by app `{}`",
                                    name.text, app.name
                                ),
                            ));
                        }
                        app.provides.push(Provided {
                            service: name.text.to_string(),
                            api,
                            protocol_id: protocol,
                            line: n,
                        });
                    } else {
                        app.requires.push(Required {
                            interface: name.text.to_string(),
                            api,
                        });
                    }
                }
                other => {
                    return Err(error(
                        n,
                        first.column,
                        format!(
                            "expected `match`, `provides`, `requires` or `}}` inside app `{}`, found `{other}`",
                            app.name
                        ),
                    ));
                }
            }
            continue;
        }
        match first.text {
            "app" => {
                let Some(name) = w.get(1) else {
                    return Err(error(
                        n,
                        end_column,
                        "expected an app name after `app`".into(),
                    ));
                };
                if !is_identifier(name.text) {
                    return Err(error(
                        n,
                        name.column,
                        format!(
                            "expected an app name (letters, digits, `_`), found `{}`",
                            name.text
                        ),
                    ));
                }
                if parsed.apps.iter().any(|a| a.name == name.text) {
                    return Err(error(
                        n,
                        name.column,
                        format!("app `{}` is defined twice", name.text),
                    ));
                }
                match w.get(2) {
                    Some(brace) if brace.text == "{" => {
                        if let Some(extra) = w.get(3) {
                            return Err(error(
                                n,
                                extra.column,
                                format!(
                                    "expected the app's lines on the next lines, found `{}`",
                                    extra.text
                                ),
                            ));
                        }
                    }
                    Some(other) => {
                        return Err(error(
                            n,
                            other.column,
                            format!("expected `{{`, found `{}`", other.text),
                        ));
                    }
                    None => {
                        return Err(error(
                            n,
                            end_column,
                            "expected `{` after the app name".into(),
                        ));
                    }
                }
                current = Some(App {
                    name: name.text.to_string(),
                    matchers: Vec::new(),
                    provides: Vec::new(),
                    requires: Vec::new(),
                    line: n,
                });
            }
            "apipath" => {
                let Some(dir) = w.get(1) else {
                    return Err(error(
                        n,
                        end_column,
                        "expected a quoted directory after `apipath`".into(),
                    ));
                };
                let rest = line[dir.column - 1..]
                    .split('#')
                    .next()
                    .unwrap_or("")
                    .trim();
                let Some(inner) = rest.strip_prefix('"').and_then(|r| r.strip_suffix('"')) else {
                    return Err(error(
                        n,
                        dir.column,
                        format!("expected a directory in double quotes, found `{rest}`"),
                    ));
                };
                let base = file.parent().unwrap_or(Path::new("."));
                parsed.apipaths.push((base.join(inner), n));
            }
            "bind" => {
                parsed
                    .bindings
                    .push(binding(&w, n, end_column).map_err(|(c, m)| error(n, c, m))?);
            }
            other => {
                return Err(error(
                    n,
                    first.column,
                    format!("expected `app`, `apipath` or `bind`, found `{other}`"),
                ));
            }
        }
    }
    if let Some(app) = current {
        return Err(error(
            last_line.max(1),
            1,
            format!(
                "expected `}}` to close app `{}` (opened at line {})",
                app.name, app.line
            ),
        ));
    }
    Ok(parsed)
}

fn matcher(word: &Word<'_>) -> Result<Matcher, String> {
    let Some((key, value)) = word.text.split_once('=') else {
        return Err(format!("expected KEY=VALUE, found `{}`", word.text));
    };
    if value.is_empty() {
        return Err(format!("expected a value after `{key}=`"));
    }
    let number = |what: &str| {
        value
            .parse::<u32>()
            .map_err(|_| format!("expected a numeric {what} after `{key}=`, found `{value}`"))
    };
    Ok(match key {
        "uid" => Matcher::Uid(number("uid")?),
        "gid" => Matcher::Gid(number("gid")?),
        "user" => Matcher::User(value.to_string()),
        "group" => Matcher::Group(value.to_string()),
        "exe" => Matcher::Exe(Glob::new(value)),
        "unit" => Matcher::Unit(Glob::new(value)),
        "label" => Matcher::Label(Glob::new(value)),
        _ => {
            return Err(format!(
                "expected one of the keys uid, user, gid, group, exe, unit, label; found `{key}`"
            ));
        }
    })
}

/// `bind CLIENT.IFACE -> APP.SERVICE`
fn binding(w: &[Word<'_>], line: usize, end: usize) -> Result<Binding, (usize, String)> {
    let client = w
        .get(1)
        .ok_or((end, "expected CLIENT.INTERFACE after `bind`".to_string()))?;
    let (client_side, interface) =
        parse_client_interface(client.text).map_err(|m| (client.column, m))?;
    match w.get(2) {
        Some(arrow) if arrow.text == "->" => {}
        Some(other) => {
            return Err((
                other.column,
                format!("expected `->`, found `{}`", other.text),
            ));
        }
        None => return Err((end, "expected `->` after the client interface".into())),
    }
    let server = w
        .get(3)
        .ok_or((end, "expected APP.SERVICE after `->`".to_string()))?;
    let (app, service) = parse_server_service(server.text).map_err(|m| (server.column, m))?;
    if let Some(extra) = w.get(4) {
        return Err((
            extra.column,
            format!("expected the end of the line, found `{}`", extra.text),
        ));
    }
    Ok(Binding {
        client: client_side,
        interface,
        server_app: app,
        service,
        line: Some(line),
    })
}

/// `app.iface`, `<user>.iface` or `*.iface`.
pub fn parse_client_interface(text: &str) -> Result<(ClientSide, String), String> {
    let Some((client, iface)) = text.rsplit_once('.') else {
        return Err(format!(
            "expected CLIENT.INTERFACE (app.iface, <user>.iface or *.iface), found `{text}`"
        ));
    };
    if !is_identifier(iface) {
        return Err(format!(
            "expected an interface name after the `.`, found `{iface}`"
        ));
    }
    let side = parse_client(client).ok_or_else(|| {
        format!("expected an app name, `<user>` or `*` before `.{iface}`, found `{client}`")
    })?;
    Ok((side, iface.to_string()))
}

/// An app name, `<user>` or `*`.
pub fn parse_client(text: &str) -> Option<ClientSide> {
    if text == "*" {
        Some(ClientSide::Any)
    } else if let Some(user) = text.strip_prefix('<').and_then(|r| r.strip_suffix('>')) {
        (!user.is_empty() && !user.contains(['<', '>', '.']))
            .then(|| ClientSide::User(user.to_string()))
    } else {
        is_identifier(text).then(|| ClientSide::App(text.to_string()))
    }
}

/// `app.service`.
pub fn parse_server_service(text: &str) -> Result<(String, String), String> {
    match text.split_once('.') {
        Some((app, service)) if is_identifier(app) && is_identifier(service) => {
            Ok((app.to_string(), service.to_string()))
        }
        _ => Err(format!("expected SERVER_APP.SERVICE, found `{text}`")),
    }
}
