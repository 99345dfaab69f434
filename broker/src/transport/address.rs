//! The D-Bus address syntax, `transport:key=value,…` with `;` between alternatives, parsed the
//! way dbus-daemon parses it.
//!
//! zbus has a parser (`zbus::Address`), but it is for connecting: it knows neither
//! `unix:runtime=yes` nor `systemd:`, refuses transports it cannot connect to, rejects the `guid`
//! dbus-daemon ignores in a listen address, keeps the last of repeated keys where dbus keeps the
//! first, and takes one address, not a `;`-list. The grammar is short, so it is written here.

use super::TransportError;

/// One `transport:key=value,…` entry, values unescaped.
#[derive(Debug, PartialEq, Eq)]
pub struct Address {
    pub transport: String,
    keys: Vec<(String, String)>,
}

impl Address {
    /// The value of `key`; the first one when it is repeated, as dbus.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.keys
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parse a `;`-separated list of addresses (one address is a list of one).
pub fn parse_addresses(text: &str) -> Result<Vec<Address>, TransportError> {
    if text.is_empty() {
        return Err(bad(format!("Empty address '{text}'")));
    }
    pieces(text, ';').map(parse_address).collect()
}

/// `text` split at `separator`; like dbus, one separator at the very end is allowed, an empty
/// piece anywhere else is not (and fails to parse).
fn pieces(text: &str, separator: char) -> impl Iterator<Item = &str> {
    text.strip_suffix(separator)
        .unwrap_or(text)
        .split(separator)
}

fn parse_address(text: &str) -> Result<Address, TransportError> {
    let (transport, rest) = text
        .split_once(':')
        .ok_or_else(|| bad("Address does not contain a colon"))?;
    let mut keys = Vec::new();
    if !rest.is_empty() {
        for pair in pieces(rest, ',') {
            match pair.split_once('=') {
                Some((key, value)) if !key.is_empty() && !value.is_empty() => {
                    keys.push((key.to_string(), unescape(value)?));
                }
                _ => return Err(bad("'=' character not found or has no value following it")),
            }
        }
    }
    Ok(Address {
        transport: transport.to_string(),
        keys,
    })
}

/// Bytes that may stand for themselves in an address value; all others are `%xx`-escaped.
fn needs_no_escape(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_/\\*.".contains(&b)
}

fn unescape(value: &str) -> Result<String, TransportError> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b if needs_no_escape(b) => out.push(b),
            b'%' => {
                let digits = bytes.get(i + 1..i + 3).ok_or_else(|| {
                    bad("In D-Bus address, percent character was not followed by two hex digits")
                })?;
                let byte = std::str::from_utf8(digits)
                    .ok()
                    .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
                    .and_then(|d| u8::from_str_radix(d, 16).ok())
                    .ok_or_else(|| {
                        bad(
                            "In D-Bus address, percent character was followed by characters \
                             other than hex digits",
                        )
                    })?;
                out.push(byte);
                i += 2;
            }
            _ => {
                let c = value[i..].chars().next().unwrap_or('?');
                return Err(bad(format!(
                    "In D-Bus address, character '{c}' should have been escaped"
                )));
            }
        }
        i += 1;
    }
    String::from_utf8(out)
        .map_err(|_| bad(format!("In D-Bus address, value '{value}' is not UTF-8")))
}

/// Escape a value for an address: every byte but the few that may stand for themselves.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if needs_no_escape(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

fn bad(text: impl Into<String>) -> TransportError {
    TransportError::BadAddress(text.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> String {
        parse_addresses(text).unwrap_err().to_string()
    }

    #[test]
    fn entries_keys_and_escapes() {
        let a = parse_addresses("unix:path=/tmp/a%20b,guid=x;tcp:host=localhost,port=0").unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].transport, "unix");
        assert_eq!(a[0].get("path"), Some("/tmp/a b"));
        assert_eq!(a[0].get("guid"), Some("x"));
        assert_eq!(a[1].transport, "tcp");
        assert_eq!(a[1].get("port"), Some("0"));
        assert_eq!(a[1].get("family"), None);
        let a = parse_addresses("unix:path=/a,path=/b").unwrap();
        assert_eq!(a[0].get("path"), Some("/a"), "the first of repeated keys");
        assert_eq!(parse_addresses("systemd:").unwrap()[0].transport, "systemd");
        assert_eq!(
            parse_addresses("unix:path=%41%2c").unwrap()[0].get("path"),
            Some("A,")
        );
    }

    #[test]
    fn one_trailing_separator_is_allowed() {
        assert_eq!(parse_addresses("unix:path=/a;").unwrap().len(), 1);
        assert_eq!(
            parse_addresses("unix:path=/a,").unwrap()[0].get("path"),
            Some("/a")
        );
        assert_eq!(
            error_of("unix:path=/a;;"),
            "Address does not contain a colon"
        );
        assert_eq!(
            error_of(";unix:path=/a"),
            "Address does not contain a colon"
        );
        assert_eq!(
            error_of("unix:,path=/a"),
            "'=' character not found or has no value following it"
        );
    }

    #[test]
    fn errors_as_dbus_words_them() {
        assert_eq!(error_of(""), "Empty address ''");
        assert_eq!(error_of("nocolon"), "Address does not contain a colon");
        for text in ["unix:path", "unix:path=", "unix:=x", "unix:tmpdir="] {
            assert_eq!(
                error_of(text),
                "'=' character not found or has no value following it",
                "{text}"
            );
        }
        assert_eq!(
            error_of("unix:path=/a b"),
            "In D-Bus address, character ' ' should have been escaped"
        );
        assert_eq!(
            error_of("tcp:host=::1"),
            "In D-Bus address, character ':' should have been escaped"
        );
        assert_eq!(
            error_of("unix:path=/a%2"),
            "In D-Bus address, percent character was not followed by two hex digits"
        );
        assert_eq!(
            error_of("unix:path=/a%zz"),
            "In D-Bus address, percent character was followed by characters other than hex digits"
        );
        assert!(error_of("unix:path=/é").contains("'é' should have been escaped"));
        assert!(error_of("unix:path=%ff").contains("not UTF-8"));
    }

    #[test]
    fn escaping_round_trips() {
        assert_eq!(escape("/tmp/x y"), "/tmp/x%20y");
        assert_eq!(escape("::1"), "%3a%3a1");
        assert_eq!(escape("a-_/\\*.Z9"), "a-_/\\*.Z9");
        let text = "/tmp/dir with,odd;chars=%é";
        let parsed = parse_addresses(&format!("unix:path={}", escape(text))).unwrap();
        assert_eq!(parsed[0].get("path"), Some(text));
    }
}
