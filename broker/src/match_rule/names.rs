//! The grammar of the names and paths a match rule may hold, as dbus-daemon checks them.
//!
//! zbus has validators for these (`zbus::names`, `ObjectPath`), but they accept and refuse
//! a few strings differently from dbus-daemon: dbus-daemon takes a unique name without any dot
//! (`:1`), and the namespace of `arg0namespace` is a bus name that may have a single element.
//! A bus must give clients the same answer as dbus-daemon, so these follow its rules byte by
//! byte.

/// The longest bus name, interface or member (the specification's limit).
const MAX_NAME_LENGTH: usize = 255;

/// A character that may start an element of an interface or a member: `[A-Za-z_]`.
fn name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

/// A character of an element of an interface, a member or a path: `[A-Za-z0-9_]`.
fn name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// A character that may start an element of a well-known bus name: `[A-Za-z_-]`.
fn bus_name_start(b: u8) -> bool {
    name_start(b) || b == b'-'
}

/// A character of a bus name element: `[A-Za-z0-9_-]`.
fn bus_name_char(b: u8) -> bool {
    name_char(b) || b == b'-'
}

/// Dot-separated elements, each starting with a `start` character and going on with `char`
/// characters; at least two elements unless `single_ok`.
fn dotted(bytes: &[u8], start: fn(u8) -> bool, char: fn(u8) -> bool, single_ok: bool) -> bool {
    let mut elements = 0;
    for element in bytes.split(|&b| b == b'.') {
        match element.split_first() {
            Some((&first, rest)) if start(first) && rest.iter().all(|&b| char(b)) => elements += 1,
            _ => return false,
        }
    }
    elements >= 2 || single_ok
}

pub fn is_interface(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LENGTH
        && dotted(s.as_bytes(), name_start, name_char, false)
}

pub fn is_member(s: &str) -> bool {
    match s.as_bytes().split_first() {
        Some((&first, rest)) => {
            s.len() <= MAX_NAME_LENGTH && name_start(first) && rest.iter().all(|&b| name_char(b))
        }
        None => false,
    }
}

/// A bus name, or with `namespace` a prefix of one made of whole elements (`arg0namespace`).
fn is_bus_name_full(s: &str, namespace: bool) -> bool {
    if s.is_empty() || s.len() > MAX_NAME_LENGTH {
        return false;
    }
    match s.strip_prefix(':') {
        // A unique name: after the colon, dot-separated runs of name characters that may start
        // with digits. dbus-daemon asks for no dot, and lets the first run be empty (":.a").
        Some(rest) => {
            let bytes = rest.as_bytes();
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] == b'.' {
                    match bytes.get(i + 1) {
                        Some(&next) if bus_name_char(next) => i += 2,
                        _ => return false,
                    }
                } else if bus_name_char(bytes[i]) {
                    i += 1;
                } else {
                    return false;
                }
            }
            true
        }
        None => dotted(s.as_bytes(), bus_name_start, bus_name_char, namespace),
    }
}

pub fn is_bus_name(s: &str) -> bool {
    is_bus_name_full(s, false)
}

/// A valid `arg0namespace` value: a bus name, or its first elements.
pub fn is_bus_namespace(s: &str) -> bool {
    is_bus_name_full(s, true)
}

pub fn is_object_path(s: &str) -> bool {
    if s == "/" {
        return true;
    }
    match s.strip_prefix('/') {
        Some(rest) => rest
            .split('/')
            .all(|element| !element.is_empty() && element.bytes().all(name_char)),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interfaces() {
        for ok in ["a.b", "org.freedesktop.DBus", "_a._1", "a.b.c_d9"] {
            assert!(is_interface(ok), "{ok}");
        }
        let long = format!("a.{}", "b".repeat(253));
        assert!(is_interface(&long));
        for bad in [
            "",
            "a",
            ".a.b",
            "a.b.",
            "a..b",
            "a.1b",
            "1a.b",
            "a-b.c",
            "a.b\u{e9}",
            &format!("a.{}", "b".repeat(254)),
        ] {
            assert!(!is_interface(bad), "{bad}");
        }
    }

    #[test]
    fn members() {
        for ok in ["a", "_", "Frobate9", &"m".repeat(255)] {
            assert!(is_member(ok), "{ok}");
        }
        for bad in ["", "9a", "a.b", "a-b", "a b", &"m".repeat(256)] {
            assert!(!is_member(bad), "{bad}");
        }
    }

    #[test]
    fn bus_names() {
        for ok in [
            ":1.5",
            ":1",
            ":",
            ":.a",
            ":1.a-b_c",
            "org.freedesktop.DBus",
            "a-b.c_d",
            "_a.b",
            "a.b9",
        ] {
            assert!(is_bus_name(ok), "{ok}");
        }
        for bad in [
            "",
            "org",
            ":1.",
            ":1..2",
            ":1.!",
            ".a.b",
            "a.b.",
            "a..b",
            "a.9b",
            "9a.b",
            "a.b!",
            &format!("a.{}", "b".repeat(254)),
        ] {
            assert!(!is_bus_name(bad), "{bad}");
        }
    }

    #[test]
    fn namespaces_may_have_one_element() {
        for ok in ["org", "com.example", "a-b", ":1"] {
            assert!(is_bus_namespace(ok), "{ok}");
        }
        for bad in ["", "foo.", "foo..", "foo.bar.", ".foo", "9foo", "a.9"] {
            assert!(!is_bus_namespace(bad), "{bad}");
        }
    }

    #[test]
    fn object_paths() {
        for ok in ["/", "/a", "/a/b_9/C", "/0"] {
            assert!(is_object_path(ok), "{ok}");
        }
        for bad in ["", "a", "//", "/a/", "/a//b", "/a-b", "/a.b", "a/b"] {
            assert!(!is_object_path(bad), "{bad}");
        }
    }
}
