//! The XML layer: quick-xml's tokens turned into the three events the configuration grammar
//! needs (element start, element end, character data), with positions, entities resolved and
//! the well-formedness checks dbus-daemon gets from expat.
//!
//! Entities: the five predefined ones, character references, and general entities declared in
//! the DOCTYPE's internal subset whose replacement text is plain text. External entities and
//! entities that expand to markup are refused rather than guessed at.

use std::collections::HashMap;

use quick_xml::XmlVersion;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesStart, Event};

/// A 1-based line and column (in characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Position {
    pub line: u32,
    pub column: u32,
}

/// What the configuration parser sees.
#[derive(Debug)]
pub(crate) enum XmlEvent {
    Start {
        name: String,
        attributes: Vec<(String, String)>,
        position: Position,
    },
    End {
        name: String,
    },
    Text(String),
}

/// A document that is not well-formed XML.
#[derive(Debug)]
pub(crate) struct XmlError {
    pub position: Position,
    pub message: String,
}

/// Turns byte offsets into lines and columns; offsets only grow, so it scans each byte once.
struct Lines<'a> {
    text: &'a str,
    offset: usize,
    line: u32,
    line_start: usize,
}

impl Lines<'_> {
    fn at(&mut self, offset: usize) -> Position {
        let offset = offset.min(self.text.len());
        if offset < self.offset {
            // quick-xml reports an error position behind the last event now and then.
            self.offset = 0;
            self.line = 1;
            self.line_start = 0;
        }
        for (i, b) in self.text.as_bytes()[self.offset..offset].iter().enumerate() {
            if *b == b'\n' {
                self.line += 1;
                self.line_start = self.offset + i + 1;
            }
        }
        self.offset = offset;
        let column = self.text[self.line_start..]
            .char_indices()
            .take_while(|(i, _)| self.line_start + i < offset)
            .count();
        Position {
            line: self.line,
            column: column as u32 + 1,
        }
    }
}

/// A pull parser over one document.
pub(crate) struct XmlReader<'a> {
    reader: quick_xml::Reader<&'a [u8]>,
    lines: Lines<'a>,
    /// Declared in the DOCTYPE; None marks an external (unsupported) entity.
    entities: HashMap<String, Option<String>>,
    depth: usize,
    seen_root: bool,
    finished_root: bool,
    /// The element to close after an empty-element tag `<x/>`.
    pending_end: Option<String>,
    /// Set once the first token has been read (an XML declaration must come first).
    started: bool,
}

impl<'a> XmlReader<'a> {
    pub fn new(text: &'a str) -> XmlReader<'a> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut reader = quick_xml::Reader::from_reader(text.as_bytes());
        let config = reader.config_mut();
        config.check_end_names = true;
        config.check_comments = true;
        config.expand_empty_elements = false;
        XmlReader {
            reader,
            lines: Lines {
                text,
                offset: 0,
                line: 1,
                line_start: 0,
            },
            entities: HashMap::new(),
            depth: 0,
            seen_root: false,
            finished_root: false,
            pending_end: None,
            started: false,
        }
    }

    fn error(&mut self, offset: u64, message: impl Into<String>) -> XmlError {
        XmlError {
            position: self.lines.at(offset as usize),
            message: message.into(),
        }
    }

    /// The next event, or None at the end of a well-formed document.
    pub fn next(&mut self) -> Result<Option<XmlEvent>, XmlError> {
        if let Some(name) = self.pending_end.take() {
            self.close_element();
            return Ok(Some(XmlEvent::End { name }));
        }
        loop {
            let offset = self.reader.buffer_position();
            let event = match self.reader.read_event() {
                Ok(event) => event,
                Err(e) => {
                    let at = self.reader.error_position();
                    return Err(self.error(at, format!("not well-formed XML: {e}")));
                }
            };
            let first = !self.started;
            self.started = true;
            match event {
                Event::Decl(_) if first => {}
                Event::Decl(_) => {
                    return Err(self.error(offset, "XML declaration not at start of document"));
                }
                Event::PI(pi) => {
                    if pi.target().eq_ignore_ascii_case("xml") {
                        return Err(self.error(offset, "reserved processing instruction target"));
                    }
                }
                Event::Comment(_) => {}
                Event::DocType(doctype) => {
                    if self.seen_root {
                        return Err(self.error(offset, "DOCTYPE after the root element"));
                    }
                    let text = doctype.into_inner();
                    self.entities =
                        internal_entities(&text).map_err(|message| self.error(offset, message))?;
                }
                Event::Start(start) => return self.start(&start, offset).map(Some),
                Event::Empty(start) => {
                    let event = self.start(&start, offset)?;
                    if let XmlEvent::Start { name, .. } = &event {
                        self.pending_end = Some(name.clone());
                    }
                    return Ok(Some(event));
                }
                Event::End(end) => {
                    let name = end.name().as_ref().to_string();
                    self.close_element();
                    return Ok(Some(XmlEvent::End { name }));
                }
                Event::Text(text) => {
                    let text = text.xml_content(XmlVersion::Implicit1_0);
                    if self.depth == 0 {
                        if !text.chars().all(is_xml_space) {
                            return Err(self.error(offset, "text outside the root element"));
                        }
                        continue;
                    }
                    return Ok(Some(XmlEvent::Text(text.into_owned())));
                }
                Event::CData(data) => {
                    if self.depth == 0 {
                        return Err(self.error(offset, "CDATA outside the root element"));
                    }
                    let text = data.xml_content(XmlVersion::Implicit1_0).into_owned();
                    return Ok(Some(XmlEvent::Text(text)));
                }
                Event::GeneralRef(reference) => {
                    if self.depth == 0 {
                        return Err(self.error(offset, "entity reference outside the root element"));
                    }
                    let name = reference.into_inner();
                    let text = self
                        .expand_reference(&name, 0)
                        .map_err(|message| self.error(offset, message))?;
                    return Ok(Some(XmlEvent::Text(text)));
                }
                Event::Eof => {
                    if self.depth > 0 {
                        let end = self.lines.text.len() as u64;
                        return Err(self.error(
                            end,
                            "unclosed element at the end of the document (truncated file?)",
                        ));
                    }
                    if !self.seen_root {
                        return Err(self.error(offset, "no element found"));
                    }
                    return Ok(None);
                }
            }
        }
    }

    fn close_element(&mut self) {
        self.depth -= 1;
        if self.depth == 0 {
            self.finished_root = true;
        }
    }

    fn start(&mut self, start: &BytesStart<'_>, offset: u64) -> Result<XmlEvent, XmlError> {
        if self.finished_root {
            return Err(self.error(offset, "junk after the document element"));
        }
        let name = start.name().as_ref().to_string();
        if !is_xml_name(&name) {
            return Err(self.error(
                offset,
                format!("not well-formed XML: invalid element name \"{name}\""),
            ));
        }
        let mut attributes: Vec<(String, String)> = Vec::new();
        for attribute in start.attributes() {
            let attribute =
                attribute.map_err(|e| self.error(offset, format!("not well-formed XML: {e}")))?;
            let key = attribute.key.as_ref().to_string();
            if !is_xml_name(&key) {
                return Err(self.error(
                    offset,
                    format!("not well-formed XML: invalid attribute name \"{key}\""),
                ));
            }
            if attributes.iter().any(|(k, _)| *k == key) {
                return Err(self.error(
                    offset,
                    format!("not well-formed XML: duplicate attribute \"{key}\""),
                ));
            }
            let entities = &self.entities;
            let value = attribute
                .normalized_value_with(XmlVersion::Implicit1_0, 16, |entity| {
                    resolve_predefined_entity(entity)
                        .or_else(|| entities.get(entity).and_then(|v| v.as_deref()))
                })
                .map_err(|e| format!("not well-formed XML: {e}"));
            let value = match value {
                Ok(value) if value.contains('<') => {
                    return Err(
                        self.error(offset, "not well-formed XML: '<' in an attribute value")
                    );
                }
                Ok(value) => value.into_owned(),
                Err(message) => return Err(self.error(offset, message)),
            };
            attributes.push((key, value));
        }
        self.depth += 1;
        self.seen_root = true;
        Ok(XmlEvent::Start {
            name,
            attributes,
            position: self.lines.at(offset as usize),
        })
    }

    /// The text an entity reference (`name` without `&` and `;`) stands for.
    fn expand_reference(&self, name: &str, depth: usize) -> Result<String, String> {
        if let Some(rest) = name.strip_prefix('#') {
            let code = match rest.strip_prefix('x') {
                Some(hex) => u32::from_str_radix(hex, 16),
                None => rest.parse(),
            };
            return code
                .ok()
                .and_then(char::from_u32)
                .filter(|c| is_xml_char(*c))
                .map(String::from)
                .ok_or_else(|| format!("not well-formed XML: bad character reference &{name};"));
        }
        if let Some(text) = resolve_predefined_entity(name) {
            return Ok(text.to_string());
        }
        match self.entities.get(name) {
            Some(Some(value)) => {
                if depth > 16 {
                    return Err(format!("recursive entity reference &{name};"));
                }
                self.expand_text(value, depth + 1)
            }
            Some(None) => Err(format!("external entity &{name}; is not supported")),
            None => Err(format!("not well-formed XML: undefined entity &{name};")),
        }
    }

    /// Expand the references in an entity's replacement text.
    fn expand_text(&self, text: &str, depth: usize) -> Result<String, String> {
        if text.contains('<') {
            return Err("entities that expand to markup are not supported".into());
        }
        let mut out = String::new();
        let mut rest = text;
        while let Some(amp) = rest.find('&') {
            out.push_str(&rest[..amp]);
            let after = &rest[amp + 1..];
            let end = after
                .find(';')
                .ok_or_else(|| "not well-formed XML: '&' without ';' in an entity".to_string())?;
            out.push_str(&self.expand_reference(&after[..end], depth)?);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{fffe}' && c != '\u{ffff}')
}

/// An XML Name, near enough: a letter, `_` or `:` (or any non-ASCII character) first, then
/// those, digits, `-` and `.`.
fn is_xml_name(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    let start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':' || !c.is_ascii();
    start(first) && chars.all(|c| start(c) || c.is_ascii_digit() || c == '-' || c == '.')
}

/// The general entities declared in a DOCTYPE's internal subset (`name` → replacement text,
/// None for external ones). Parameter entities and other declarations are skipped.
fn internal_entities(doctype: &str) -> Result<HashMap<String, Option<String>>, String> {
    let mut entities = HashMap::new();
    let Some(open) = doctype.find('[') else {
        return Ok(entities);
    };
    let mut rest = &doctype[open + 1..];
    while let Some(at) = rest.find("<!ENTITY") {
        rest = rest[at + "<!ENTITY".len()..].trim_start();
        if rest.starts_with('%') {
            continue;
        }
        let name_end = rest
            .find(|c: char| is_xml_space(c))
            .ok_or("not well-formed XML: bad ENTITY declaration")?;
        let name = &rest[..name_end];
        rest = rest[name_end..].trim_start();
        let value = match rest.chars().next() {
            Some(quote @ ('"' | '\'')) => {
                let body = &rest[1..];
                let end = body
                    .find(quote)
                    .ok_or("not well-formed XML: unterminated ENTITY value")?;
                rest = &body[end + 1..];
                Some(body[..end].to_string())
            }
            _ => None,
        };
        // The first declaration of a name wins, as in XML.
        entities.entry(name.to_string()).or_insert(value);
    }
    Ok(entities)
}
