//! `<limit name="…">value</limit>`: the names dbus-daemon knows, its built-in defaults, and its
//! checks on values.

use std::time::Duration;

/// Every limit dbus-daemon accepts, with its built-in defaults (`Limits::default()`).
///
/// The timeouts are milliseconds in the file. Sizes and counts are as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_incoming_bytes: u64,
    pub max_incoming_unix_fds: u64,
    pub max_outgoing_bytes: u64,
    pub max_outgoing_unix_fds: u64,
    pub max_message_size: u64,
    pub max_message_unix_fds: u64,
    /// `service_start_timeout`.
    pub service_start_timeout: Duration,
    pub auth_timeout: Duration,
    pub pending_fd_timeout: Duration,
    pub max_completed_connections: u64,
    pub max_incomplete_connections: u64,
    pub max_connections_per_user: u64,
    pub max_pending_service_starts: u64,
    pub max_names_per_connection: u64,
    pub max_match_rules_per_connection: u64,
    pub max_replies_per_connection: u64,
    /// None: a method call may wait for its reply forever (the default, and what 0 means).
    pub reply_timeout: Option<Duration>,
    /// telbus's per-user quota (not dbus-daemon's): the bytes that may wait in the bus for
    /// delivery to one user's connections, shared fairly between the users that send them.
    pub max_queued_bytes_per_user: u64,
    /// The same for file descriptors.
    pub max_queued_unix_fds_per_user: u64,
    /// telbus's per-user limits on what a user's connections hold in all: well-known names
    /// owned or queued for, match rules, and method calls waiting for their replies.
    pub max_names_per_user: u64,
    pub max_match_rules_per_user: u64,
    pub max_replies_per_user: u64,
    /// The app-container limits (org.freedesktop.DBus.Containers1): accepted and kept.
    pub max_containers: u64,
    pub max_containers_per_user: u64,
    pub max_container_metadata_bytes: u64,
    pub max_connections_per_container: u64,
}

const MEGABYTE: u64 = 1024 * 1024;
/// dbus-daemon's default number of fds in one message (DBUS_DEFAULT_MESSAGE_UNIX_FDS).
pub const DEFAULT_MESSAGE_UNIX_FDS: u64 = 16;
/// The most fds a message may carry (DBUS_MAXIMUM_MESSAGE_UNIX_FDS: a quarter of the largest
/// message, 128 MiB); also the bound of the `min_fds`/`max_fds` rule attributes.
pub const MAXIMUM_MESSAGE_UNIX_FDS: u32 = 128 * 1024 * 1024 / 4;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_incoming_bytes: 127 * MEGABYTE,
            max_incoming_unix_fds: DEFAULT_MESSAGE_UNIX_FDS * 4,
            max_outgoing_bytes: 127 * MEGABYTE,
            max_outgoing_unix_fds: DEFAULT_MESSAGE_UNIX_FDS * 4,
            max_message_size: 32 * MEGABYTE,
            max_message_unix_fds: DEFAULT_MESSAGE_UNIX_FDS,
            service_start_timeout: Duration::from_millis(25_000),
            auth_timeout: Duration::from_millis(30_000),
            pending_fd_timeout: Duration::from_millis(150_000),
            max_completed_connections: 2048,
            max_incomplete_connections: 64,
            max_connections_per_user: 256,
            max_pending_service_starts: 512,
            max_names_per_connection: 512,
            max_match_rules_per_connection: 512,
            max_replies_per_connection: 128,
            reply_timeout: None,
            max_queued_bytes_per_user: 512 * MEGABYTE,
            max_queued_unix_fds_per_user: 4096,
            max_names_per_user: 16 * 1024,
            max_match_rules_per_user: 16 * 1024,
            max_replies_per_user: 16 * 1024,
            max_containers: 512,
            max_containers_per_user: 16,
            max_container_metadata_bytes: 4096,
            max_connections_per_container: 8,
        }
    }
}

/// How a limit's value is stored.
enum Slot<'a> {
    /// A byte or fd count: any non-negative `long`.
    Wide(&'a mut u64),
    /// A count that dbus-daemon keeps in an `int`.
    Int(&'a mut u64),
    /// Milliseconds, in an `int`.
    Millis(&'a mut Duration),
}

impl Limits {
    /// The names `<limit name>` accepts.
    pub const NAMES: [&'static str; 26] = [
        "max_incoming_bytes",
        "max_incoming_unix_fds",
        "max_outgoing_bytes",
        "max_outgoing_unix_fds",
        "max_message_size",
        "max_message_unix_fds",
        "service_start_timeout",
        "auth_timeout",
        "pending_fd_timeout",
        "reply_timeout",
        "max_completed_connections",
        "max_incomplete_connections",
        "max_connections_per_user",
        "max_pending_service_starts",
        "max_names_per_connection",
        "max_match_rules_per_connection",
        "max_replies_per_connection",
        "max_queued_bytes_per_user",
        "max_queued_unix_fds_per_user",
        "max_names_per_user",
        "max_match_rules_per_user",
        "max_replies_per_user",
        "max_containers",
        "max_containers_per_user",
        "max_container_metadata_bytes",
        "max_connections_per_container",
    ];

    /// Set the limit called `name` to `value`, refusing what dbus-daemon refuses: unknown
    /// names, negative values, and values beyond a C `int` for the limits it keeps in one.
    pub fn set(&mut self, name: &str, value: i64) -> Result<(), String> {
        if name == "reply_timeout" {
            // dbus-daemon treats a timeout of 0 (or less) as "never".
            check_value(name, value, true)?;
            self.reply_timeout = (value > 0).then(|| Duration::from_millis(value as u64));
            return Ok(());
        }
        let slot = match name {
            "max_incoming_bytes" => Slot::Wide(&mut self.max_incoming_bytes),
            "max_incoming_unix_fds" => Slot::Wide(&mut self.max_incoming_unix_fds),
            "max_outgoing_bytes" => Slot::Wide(&mut self.max_outgoing_bytes),
            "max_outgoing_unix_fds" => Slot::Wide(&mut self.max_outgoing_unix_fds),
            "max_message_size" => Slot::Wide(&mut self.max_message_size),
            "max_message_unix_fds" => Slot::Wide(&mut self.max_message_unix_fds),
            "service_start_timeout" => Slot::Millis(&mut self.service_start_timeout),
            "auth_timeout" => Slot::Millis(&mut self.auth_timeout),
            "pending_fd_timeout" => Slot::Millis(&mut self.pending_fd_timeout),
            "max_completed_connections" => Slot::Int(&mut self.max_completed_connections),
            "max_incomplete_connections" => Slot::Int(&mut self.max_incomplete_connections),
            "max_connections_per_user" => Slot::Int(&mut self.max_connections_per_user),
            "max_pending_service_starts" => Slot::Int(&mut self.max_pending_service_starts),
            "max_names_per_connection" => Slot::Int(&mut self.max_names_per_connection),
            "max_match_rules_per_connection" => Slot::Int(&mut self.max_match_rules_per_connection),
            "max_replies_per_connection" => Slot::Int(&mut self.max_replies_per_connection),
            "max_queued_bytes_per_user" => Slot::Wide(&mut self.max_queued_bytes_per_user),
            "max_queued_unix_fds_per_user" => Slot::Wide(&mut self.max_queued_unix_fds_per_user),
            "max_names_per_user" => Slot::Int(&mut self.max_names_per_user),
            "max_match_rules_per_user" => Slot::Int(&mut self.max_match_rules_per_user),
            "max_replies_per_user" => Slot::Int(&mut self.max_replies_per_user),
            "max_containers" => Slot::Int(&mut self.max_containers),
            "max_containers_per_user" => Slot::Int(&mut self.max_containers_per_user),
            "max_container_metadata_bytes" => Slot::Int(&mut self.max_container_metadata_bytes),
            "max_connections_per_container" => Slot::Int(&mut self.max_connections_per_container),
            _ => return Err(format!("There is no limit called \"{name}\"")),
        };
        match slot {
            Slot::Wide(v) => {
                check_value(name, value, false)?;
                *v = value as u64;
            }
            Slot::Int(v) => {
                check_value(name, value, true)?;
                *v = value as u64;
            }
            Slot::Millis(v) => {
                check_value(name, value, true)?;
                *v = Duration::from_millis(value as u64);
            }
        }
        Ok(())
    }
}

fn check_value(name: &str, value: i64, must_fit_int: bool) -> Result<(), String> {
    if value < 0 {
        return Err(format!("<limit name=\"{name}\"> must be a positive number"));
    }
    if must_fit_int && value > i64::from(i32::MAX) {
        return Err(format!("<limit name=\"{name}\"> value is too large"));
    }
    Ok(())
}

/// Read an integer the way C's `strtol(text, &end, 0)` does, which is how dbus-daemon reads
/// limit values and fd counts: leading white space, a sign, `0x` for hexadecimal and a leading
/// `0` for octal; whatever follows the digits is ignored. None when there are no digits or the
/// value does not fit in a `long`.
///
/// Written by hand: the point is to accept exactly what strtol accepts, which no crate
/// promises.
pub fn parse_c_long(text: &str) -> Option<i64> {
    parse_c_integer(text).map(|(value, _)| value)
}

/// Like [`parse_c_long`], also returning how many bytes the number used.
pub(crate) fn parse_c_integer(text: &str) -> Option<(i64, usize)> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() && matches!(bytes[i], b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r') {
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
    let mut radix = 10;
    if bytes.get(i) == Some(&b'0') {
        let hex_digit_follows = bytes.get(i + 2).is_some_and(|b| b.is_ascii_hexdigit());
        if matches!(bytes.get(i + 1), Some(b'x' | b'X')) && hex_digit_follows {
            radix = 16;
            i += 2;
        } else {
            radix = 8;
        }
    }
    let start = i;
    // Accumulate negatively so that i64::MIN is reachable, as strtol's LONG_MIN is.
    let mut value: i64 = 0;
    while let Some(digit) = bytes.get(i).and_then(|b| (*b as char).to_digit(radix)) {
        value = value
            .checked_mul(i64::from(radix))?
            .checked_sub(i64::from(digit))?;
        i += 1;
    }
    if i == start {
        return None;
    }
    let value = if negative {
        value
    } else {
        value.checked_neg()?
    };
    Some((value, i))
}
