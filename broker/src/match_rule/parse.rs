//! Reading the text of a match rule ([`MatchRule::parse`]).

use zbus::message::Type;

use super::names::{is_bus_name, is_bus_namespace, is_interface, is_member, is_object_path};
use super::{ArgMatch, MAX_ARG, MatchRule, MatchRuleError, PathMatch};

/// The longest rule text dbus-daemon takes, in bytes.
pub const MAX_RULE_LENGTH: usize = 1024;

/// dbus-daemon's whitespace between pairs and around `=` (not C's `isspace`).
fn is_white(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// The `key=value` pairs of a rule, values unquoted.
fn split(text: &str) -> Result<Vec<(&str, String)>, MatchRuleError> {
    let mut pairs = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches(is_white);
        if rest.is_empty() {
            return Ok(pairs);
        }
        let key_end = rest
            .find(|c: char| c == '=' || is_white(c))
            .unwrap_or(rest.len());
        let key = &rest[..key_end];
        if key.is_empty() {
            return Err(MatchRuleError::invalid(
                "Match rule has a '=' character with no key before it",
            ));
        }
        let Some(after) = rest[key_end..]
            .trim_start_matches(is_white)
            .strip_prefix('=')
        else {
            return Err(MatchRuleError::invalid(
                "Match rule has a key with no subsequent '=' character",
            ));
        };
        let (value, remaining) = value(after)?;
        pairs.push((key, value));
        rest = remaining;
    }
}

/// Read one value from the start of `text`: the value, and the text after it (and after the
/// comma that ended it).
fn value(text: &str) -> Result<(String, &str), MatchRuleError> {
    enum State {
        Plain,
        Quoted,
        /// Just after a backslash outside quotes.
        Escape,
    }
    let mut out = String::new();
    let mut state = State::Plain;
    for (i, c) in text.char_indices() {
        state = match (state, c) {
            (State::Plain, ',') => return Ok((out, &text[i + 1..])),
            (State::Plain, '\'') => State::Quoted,
            (State::Plain, '\\') => State::Escape,
            (State::Plain, c) => {
                out.push(c);
                State::Plain
            }
            (State::Quoted, '\'') => State::Plain,
            (State::Quoted, c) => {
                out.push(c);
                State::Quoted
            }
            (State::Escape, c) => {
                // A backslash escapes a quote only; before anything else it is itself.
                if c != '\'' {
                    out.push('\\');
                }
                out.push(c);
                State::Plain
            }
        };
    }
    match state {
        State::Plain => Ok((out, "")),
        State::Escape => {
            out.push('\\');
            Ok((out, ""))
        }
        State::Quoted => Err(MatchRuleError::invalid(
            "Unbalanced quotation marks in match rule",
        )),
    }
}

/// C's `strtoul(text, &end, 0)`, which dbus-daemon reads argument numbers with: leading
/// `isspace` characters, an optional sign (a minus negates modulo 2⁶⁴), then hexadecimal after
/// `0x`, octal after `0`, decimal otherwise. Returns the number and how many bytes it took, or
/// None if there was no number or it overflowed. So `arg01` is argument 1, `arg0x1f` argument
/// 31 and `arg-0` argument 0, as in dbus-daemon.
fn c_strtoul(text: &str) -> Option<(u64, usize)> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while bytes
        .get(i)
        .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'))
    {
        i += 1;
    }
    let negative = match bytes.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let hex_digit_follows = bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
    let radix = match (bytes.get(i), bytes.get(i + 1)) {
        (Some(b'0'), Some(b'x' | b'X')) if hex_digit_follows => {
            i += 2;
            16
        }
        (Some(b'0'), _) => 8,
        _ => 10,
    };
    let start = i;
    let mut value: u64 = 0;
    let mut overflow = false;
    while let Some(digit) = bytes.get(i).and_then(|&b| (b as char).to_digit(radix)) {
        match value
            .checked_mul(radix as u64)
            .and_then(|v| v.checked_add(digit as u64))
        {
            Some(v) => value = v,
            None => overflow = true,
        }
        i += 1;
    }
    if i == start || overflow {
        return None;
    }
    Some((
        if negative {
            value.wrapping_neg()
        } else {
            value
        },
        i,
    ))
}

impl MatchRule {
    /// Parse the text of an AddMatch, RemoveMatch or BecomeMonitor rule, as dbus-daemon does,
    /// with its error texts.
    ///
    /// A rule is `key=value` pairs separated by commas. A value may mix single-quoted parts,
    /// in which every character is literal (commas too), with unquoted parts, in which `\'`
    /// stands for a quote, any other backslash is itself, and a comma ends the value.
    /// Whitespace before a key and between a key and its `=` is skipped; after the `=` it is
    /// part of the value. Rules over 1024 bytes get `LimitsExceeded`, others that are wrong
    /// `MatchRuleInvalid` (see [`MatchRuleError::name`]).
    ///
    /// Where dbus-daemon's behaviour is an accident of its implementation, this parser departs
    /// from it: dbus-daemon reads only the first 16 `key=value` pairs and silently ignores the
    /// rest of the text (so `arg16` to `arg63` can only appear in a short rule); here every
    /// pair counts. A `=` with no key before it makes dbus-daemon skip the rest of the rule;
    /// here it is an error.
    pub fn parse(text: &str) -> Result<MatchRule, MatchRuleError> {
        if text.len() > MAX_RULE_LENGTH {
            return Err(MatchRuleError::too_long(format!(
                "Match rule text is {} bytes, maximum is {MAX_RULE_LENGTH}",
                text.len()
            )));
        }
        let mut rule = MatchRule::default();
        for (key, value) in split(text)? {
            rule.set(key, value)?;
        }
        rule.args.sort_by_key(|(index, _)| *index);
        Ok(rule)
    }

    /// Apply one `key=value` pair, as dbus-daemon does, with its error texts.
    fn set(&mut self, key: &str, value: String) -> Result<(), MatchRuleError> {
        let twice = || MatchRuleError::invalid(format!("Key {key} specified twice in match rule"));
        match key {
            "type" => {
                if self.msg_type.is_some() {
                    return Err(twice());
                }
                self.msg_type = Some(match value.as_str() {
                    "signal" => Type::Signal,
                    "method_call" => Type::MethodCall,
                    "method_return" => Type::MethodReturn,
                    "error" => Type::Error,
                    _ => {
                        return Err(MatchRuleError::invalid(format!(
                            "Invalid message type ({value}) in match rule"
                        )));
                    }
                });
            }
            "sender" => {
                if self.sender.is_some() {
                    return Err(twice());
                }
                if !is_bus_name(&value) {
                    return Err(MatchRuleError::invalid(format!(
                        "Sender name '{value}' is invalid"
                    )));
                }
                self.sender = Some(value);
            }
            "interface" => {
                if self.interface.is_some() {
                    return Err(twice());
                }
                if !is_interface(&value) {
                    return Err(MatchRuleError::invalid(format!(
                        "Interface name '{value}' is invalid"
                    )));
                }
                self.interface = Some(value);
            }
            "member" => {
                if self.member.is_some() {
                    return Err(twice());
                }
                if !is_member(&value) {
                    return Err(MatchRuleError::invalid(format!(
                        "Member name '{value}' is invalid"
                    )));
                }
                self.member = Some(value);
            }
            "path" | "path_namespace" => {
                if self.path.is_some() {
                    return Err(MatchRuleError::invalid(
                        "path or path_namespace specified twice in match rule",
                    ));
                }
                if !is_object_path(&value) {
                    return Err(MatchRuleError::invalid(format!(
                        "Path '{value}' is invalid"
                    )));
                }
                self.path = Some(if key == "path" {
                    PathMatch::Exact(value)
                } else {
                    PathMatch::Namespace(value)
                });
            }
            "destination" => {
                if self.destination.is_some() {
                    return Err(twice());
                }
                if !is_bus_name(&value) {
                    return Err(MatchRuleError::invalid(format!(
                        "Destination name '{value}' is invalid"
                    )));
                }
                self.destination = Some(value);
            }
            // dbus-daemon lets eavesdrop appear more than once (the last one counts), so that
            // a tool can turn off an eavesdrop='true' that it added itself.
            "eavesdrop" => {
                self.eavesdrop = match value.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(MatchRuleError::invalid(format!(
                            "eavesdrop='{value}' is invalid, it should be 'true' or 'false'"
                        )));
                    }
                }
            }
            _ if key.starts_with("arg") => self.set_arg(key, value)?,
            _ => {
                return Err(MatchRuleError::invalid(format!(
                    "Unknown key \"{key}\" in match rule"
                )));
            }
        }
        Ok(())
    }

    /// `argN`, `argNpath` or `arg0namespace`.
    fn set_arg(&mut self, key: &str, value: String) -> Result<(), MatchRuleError> {
        if key.len() < 4 {
            return Err(MatchRuleError::invalid(format!(
                "Key '{key}' in match rule starts with 'arg' but lacks an arg number. Should be 'arg0' or 'arg7' for example."
            )));
        }
        let Some((index, used)) = c_strtoul(&key[3..]) else {
            return Err(MatchRuleError::invalid(format!(
                "Key '{key}' in match rule starts with 'arg' but could not parse arg number. Should be 'arg0' or 'arg7' for example."
            )));
        };
        let suffix = &key[3 + used..];
        let matcher = if suffix.is_empty() {
            ArgMatch::Str(value)
        } else if suffix == "path" {
            ArgMatch::Path(value)
        } else if key == "arg0namespace" {
            if !is_bus_namespace(&value) {
                return Err(MatchRuleError::invalid(format!(
                    "arg0namespace='{value}' is not a valid prefix of a bus name"
                )));
            }
            ArgMatch::Namespace(value)
        } else {
            return Err(MatchRuleError::invalid(format!(
                "Key '{key}' in match rule contains junk after argument number ({index}). Only 'arg{index}path' (for example) or 'arg0namespace' are valid"
            )));
        };
        if index > u64::from(MAX_ARG) {
            return Err(MatchRuleError::invalid(format!(
                "Key '{key}' in match rule has arg number {index} but the maximum is {MAX_ARG}."
            )));
        }
        let index = index as u8;
        if self.args.iter().any(|(i, _)| *i == index) {
            return Err(MatchRuleError::invalid(format!(
                "Argument {key} matched more than once in match rule"
            )));
        }
        self.args.push((index, matcher));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(text: &str) -> Vec<(String, String)> {
        split(text)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }

    fn pair(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn splitting() {
        assert_eq!(values(""), vec![]);
        assert_eq!(values(" \t\r\n "), vec![]);
        assert_eq!(values("a='x',b=y"), vec![pair("a", "x"), pair("b", "y")]);
        // Whitespace after '=' belongs to the value, as in dbus-daemon.
        assert_eq!(
            values("  a = 'x' , b=y"),
            vec![pair("a", " x "), pair("b", "y")]
        );
        assert_eq!(values("a='x',"), vec![pair("a", "x")]);
        assert_eq!(values("a='x', \t"), vec![pair("a", "x")]);
        assert_eq!(values("a="), vec![pair("a", "")]);
        assert_eq!(values("a=,b=''"), vec![pair("a", ""), pair("b", "")]);
        // Quotes can open and close anywhere; inside them all is literal.
        assert_eq!(values("a=x'y,z'w"), vec![pair("a", "xy,zw")]);
        assert_eq!(values("a='o''k'''"), vec![pair("a", "ok")]);
        assert_eq!(values(r"a='\'"), vec![pair("a", "\\")]);
        assert_eq!(values(r"a='x\y'"), vec![pair("a", r"x\y")]);
        // Outside quotes a backslash escapes a quote, and is itself before anything else,
        // including a comma, which it keeps from ending the value.
        assert_eq!(values(r"a=\'"), vec![pair("a", "'")]);
        assert_eq!(values(r"a=x\y"), vec![pair("a", r"x\y")]);
        assert_eq!(values(r"a=x\,b=y"), vec![pair("a", r"x\,b=y")]);
        assert_eq!(values(r"a=x\"), vec![pair("a", r"x\")]);
        assert_eq!(values(r"a=x\\"), vec![pair("a", r"x\\")]);
        assert_eq!(values(r"a='it'\''s'"), vec![pair("a", "it's")]);
        assert_eq!(
            values("a='\u{e9}t\u{e9}'"),
            vec![pair("a", "\u{e9}t\u{e9}")]
        );
        // A key is everything up to '=' or whitespace, commas and quotes included.
        assert_eq!(values("a,b='x'"), vec![pair("a,b", "x")]);
        assert_eq!(values("'a'='x'"), vec![pair("'a'", "x")]);
        // Form feed is not whitespace to dbus-daemon.
        assert_eq!(values("\u{c}a=x"), vec![pair("\u{c}a", "x")]);
    }

    #[test]
    fn splitting_errors() {
        for text in [
            "a",
            "a b=c",
            "a='x',b",
            "a='x",
            "a='x',b='y",
            "=x",
            "a=x, =y",
            "  =",
        ] {
            assert!(split(text).is_err(), "{text}");
        }
        assert_eq!(
            split("type").unwrap_err().message(),
            "Match rule has a key with no subsequent '=' character"
        );
        assert_eq!(
            split("a='x").unwrap_err().message(),
            "Unbalanced quotation marks in match rule"
        );
    }

    #[test]
    fn strtoul_like_c() {
        assert_eq!(c_strtoul("0"), Some((0, 1)));
        assert_eq!(c_strtoul("63"), Some((63, 2)));
        assert_eq!(c_strtoul("7path"), Some((7, 1)));
        assert_eq!(c_strtoul("01"), Some((1, 2)));
        assert_eq!(c_strtoul("010"), Some((8, 3)));
        assert_eq!(c_strtoul("08"), Some((0, 1)));
        assert_eq!(c_strtoul("0x1f"), Some((31, 4)));
        assert_eq!(c_strtoul("0X1F"), Some((31, 4)));
        assert_eq!(c_strtoul("0xg"), Some((0, 1)));
        assert_eq!(c_strtoul("0x"), Some((0, 1)));
        assert_eq!(c_strtoul("0xapath"), Some((10, 3)));
        assert_eq!(c_strtoul("+5"), Some((5, 2)));
        assert_eq!(c_strtoul("-0"), Some((0, 2)));
        assert_eq!(c_strtoul("-1"), Some((u64::MAX, 2)));
        assert_eq!(c_strtoul("\u{b}\u{c}3"), Some((3, 3)));
        assert_eq!(c_strtoul("18446744073709551615"), Some((u64::MAX, 20)));
        assert_eq!(c_strtoul("18446744073709551616"), None);
        for none in ["", "x", "+", "-", "path", "namespace", " "] {
            assert_eq!(c_strtoul(none), None, "{none:?}");
        }
    }
}
