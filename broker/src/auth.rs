//! The server side of the D-Bus SASL exchange, conducted as dbus-daemon conducts it.
//!
//! zbus has a server handshake, but it takes a single mechanism and has neither a limit on failed
//! attempts nor on the length of a line; a bus needs the `<auth>` list, ANONYMOUS only where
//! `<allow_anonymous/>` says so, and a bound on everything a client that has not authenticated
//! yet can make it hold. So this is our own: a state machine fed with bytes as they arrive. It
//! does no I/O and never blocks; the event loop reads, writes and enforces `auth_timeout`.
//!
//! Replies, error texts and the order of events follow dbus-daemon 1.14 (`dbus/dbus-auth.c`),
//! with these differences:
//! - DBUS_COOKIE_SHA1 is not offered. It exists for transports that cannot pass credentials;
//!   every client falls back to EXTERNAL on unix sockets, and it would need a keyring in the
//!   user's home directory.
//! - ANONYMOUS is offered only when `<allow_anonymous/>` is set. dbus-daemon offers it always,
//!   answers OK and then drops the connection after BEGIN; REJECTED lets the client fall back.
//! - Hex must come in pairs (dbus-daemon reads a lone last digit as a high nibble).
//! - A conversation may last [`MAX_COMMANDS`] lines. dbus-daemon bounds the replies it has not
//!   yet written instead, which this module cannot see.

use std::fmt;
use std::sync::Arc;

/// Longest line a client may send during authentication, as dbus-daemon's auth buffer.
pub const MAX_LINE: usize = 16 * 1024;
/// The REJECTED answer that ends the conversation, as dbus-daemon (its `max_failures`).
pub const MAX_REJECTS: u32 = 6;
/// Lines a conversation may have: a real client needs fewer than ten.
pub const MAX_COMMANDS: u32 = 64;

/// The mechanisms dbus-daemon knows, for checking `<auth>`.
const KNOWN_MECHANISMS: [&str; 3] = ["EXTERNAL", "DBUS_COOKIE_SHA1", "ANONYMOUS"];

/// The mechanisms implemented here, in the order REJECTED lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mechanism {
    External,
    Anonymous,
}

impl Mechanism {
    const ALL: [Mechanism; 2] = [Mechanism::External, Mechanism::Anonymous];

    fn name(self) -> &'static str {
        match self {
            Mechanism::External => "EXTERNAL",
            Mechanism::Anonymous => "ANONYMOUS",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }
}

#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// Mechanisms from `<auth>`; empty means every mechanism we support.
    pub mechanisms: Vec<String>,
    pub allow_anonymous: bool,
    /// The bus's GUID, 32 hex digits, sent with OK.
    pub guid: String,
    /// Whether the transport can pass file descriptors (unix sockets).
    pub unix_fd_capable: bool,
}

impl AuthConfig {
    /// Check an `<auth>` list as dbus-daemon does at start-up (it refuses names it does not
    /// know), and refuse a list that leaves no mechanism we implement.
    pub fn check_mechanisms(mechanisms: &[String]) -> Result<(), String> {
        if let Some(unknown) = mechanisms
            .iter()
            .find(|m| !KNOWN_MECHANISMS.contains(&m.as_str()))
        {
            return Err(format!(
                "Unsupported auth mechanism \"{unknown}\" in bus config file detected. \
                 Supported mechanisms are \"EXTERNAL, ANONYMOUS\"."
            ));
        }
        if !mechanisms.is_empty() && !mechanisms.iter().any(|m| Mechanism::from_name(m).is_some()) {
            return Err(format!(
                "None of the auth mechanisms in the bus config file ({}) is supported; \
                 supported mechanisms are \"EXTERNAL, ANONYMOUS\".",
                mechanisms.join(", ")
            ));
        }
        Ok(())
    }

    fn offers(&self, mechanism: Mechanism) -> bool {
        let listed =
            self.mechanisms.is_empty() || self.mechanisms.iter().any(|m| m == mechanism.name());
        listed && (mechanism != Mechanism::Anonymous || self.allow_anonymous)
    }
}

/// Who the client turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Identity {
    Uid(u32),
    Anonymous,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Authenticated {
    pub identity: Identity,
    /// Whether the client negotiated file descriptor passing.
    pub unix_fds: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub struct AuthProgress {
    /// Bytes of the input used. Once `done`, the bytes after `BEGIN\r\n` are D-Bus messages and
    /// are not consumed.
    pub consumed: usize,
    pub done: Option<Authenticated>,
}

/// Why the client must be disconnected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// The first byte was not the credentials byte, NUL.
    MissingNulByte,
    /// A line longer than [`MAX_LINE`].
    LineTooLong,
    /// The [`MAX_REJECTS`]th REJECTED.
    TooManyFailures,
    /// More than [`MAX_COMMANDS`] lines without BEGIN.
    TooManyCommands,
    /// BEGIN before OK.
    BeginWithoutOk,
    /// `feed` was called again after it reported `done`.
    AlreadyDone,
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::MissingNulByte => {
                write!(f, "the first byte was not the credentials byte (NUL)")
            }
            AuthError::LineTooLong => {
                write!(f, "an authentication line longer than {MAX_LINE} bytes")
            }
            AuthError::TooManyFailures => write!(f, "{MAX_REJECTS} failed authentication attempts"),
            AuthError::TooManyCommands => {
                write!(
                    f,
                    "more than {MAX_COMMANDS} authentication commands without BEGIN"
                )
            }
            AuthError::BeginWithoutOk => write!(f, "BEGIN before authentication succeeded"),
            AuthError::AlreadyDone => write!(f, "authentication had already finished"),
        }
    }
}

impl std::error::Error for AuthError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Before the credentials byte.
    BeforeNul,
    /// Waiting for AUTH and a mechanism.
    Mechanism,
    /// EXTERNAL without an initial response: we sent DATA to ask who the client claims to be.
    Data,
    /// We sent OK; waiting for BEGIN (or NEGOTIATE_UNIX_FD).
    Begin(Identity),
    /// BEGIN was received and reported.
    Done,
}

/// One client's authentication conversation.
pub struct Sasl {
    config: Arc<AuthConfig>,
    /// The uid the kernel reports for the socket (SO_PEERCRED); None on TCP.
    peer_uid: Option<u32>,
    state: State,
    unix_fds: bool,
    rejects: u32,
    commands: u32,
    /// How many bytes of the unconsumed input are known to hold no complete line, so that a
    /// line arriving a byte at a time is searched once, not once per byte.
    scanned: usize,
}

impl Sasl {
    pub fn new(config: Arc<AuthConfig>, peer_uid: Option<u32>) -> Self {
        Sasl {
            config,
            peer_uid,
            state: State::BeforeNul,
            unix_fds: false,
            rejects: 0,
            commands: 0,
            scanned: 0,
        }
    }

    /// Consume what can be consumed of `input` (the initial NUL byte, then CRLF-terminated
    /// lines), appending any replies to `out`.
    ///
    /// `input` must start with the bytes the previous call did not consume. On an error, `out`
    /// may hold a last reply (REJECTED), which dbus-daemon sends before it disconnects.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<AuthProgress, AuthError> {
        let mut consumed = 0;
        match self.state {
            State::Done => return Err(AuthError::AlreadyDone),
            State::BeforeNul => match input.first() {
                None => {
                    return Ok(AuthProgress {
                        consumed,
                        done: None,
                    });
                }
                Some(0) => {
                    consumed = 1;
                    self.state = State::Mechanism;
                }
                Some(_) => return Err(AuthError::MissingNulByte),
            },
            _ => {}
        }
        loop {
            let rest = &input[consumed..];
            // A "\r" at the end of what was searched may start a "\r\n".
            let from = self.scanned.min(rest.len()).saturating_sub(1);
            let Some(end) = find_crlf(&rest[from..]).map(|i| from + i) else {
                // Not too long yet if all that is missing is the "\n".
                if rest.strip_suffix(b"\r").unwrap_or(rest).len() > MAX_LINE {
                    return Err(AuthError::LineTooLong);
                }
                self.scanned = rest.len();
                return Ok(AuthProgress {
                    consumed,
                    done: None,
                });
            };
            if end > MAX_LINE {
                return Err(AuthError::LineTooLong);
            }
            self.scanned = 0;
            consumed += end + 2;
            self.commands += 1;
            if self.commands > MAX_COMMANDS {
                return Err(AuthError::TooManyCommands);
            }
            if let Some(done) = self.line(&rest[..end], out)? {
                return Ok(AuthProgress {
                    consumed,
                    done: Some(done),
                });
            }
        }
    }

    /// Handle one line (without its CRLF).
    fn line(&mut self, line: &[u8], out: &mut Vec<u8>) -> Result<Option<Authenticated>, AuthError> {
        let Some(line) = std::str::from_utf8(line)
            .ok()
            .filter(|l| l.bytes().all(|b| b != 0 && b.is_ascii()))
        else {
            send_error(out, "Command contained non-ASCII");
            return Ok(None);
        };
        let (command, args) = split_word(line);
        match (self.state, command) {
            (State::Mechanism, "AUTH") => self.auth(args, out)?,
            (State::Mechanism, "CANCEL" | "DATA") => {
                send_error(out, "Not currently in an auth conversation")
            }
            (State::Data, "AUTH") => send_error(out, "Sent AUTH while another AUTH in progress"),
            (State::Data, "DATA") => match decode_hex(args) {
                Some(identity) => self.external(&identity, true, out)?,
                None => send_error(out, "Invalid hex encoding"),
            },
            (State::Begin(_), "AUTH") => send_error(out, "Sent AUTH while expecting BEGIN"),
            (State::Begin(_), "DATA") => send_error(out, "Sent DATA while expecting BEGIN"),
            (State::Begin(_), "CANCEL") | (State::Data, "CANCEL") => self.reject(out)?,
            (_, "ERROR") => self.reject(out)?,
            (State::Begin(identity), "BEGIN") => {
                self.state = State::Done;
                return Ok(Some(Authenticated {
                    identity,
                    unix_fds: self.unix_fds,
                }));
            }
            (_, "BEGIN") => return Err(AuthError::BeginWithoutOk),
            (State::Begin(_), "NEGOTIATE_UNIX_FD") => {
                if self.config.unix_fd_capable {
                    self.unix_fds = true;
                    out.extend_from_slice(b"AGREE_UNIX_FD\r\n");
                } else {
                    send_error(
                        out,
                        "Unix FD passing not supported, not authenticated or otherwise not possible",
                    );
                }
            }
            (_, "NEGOTIATE_UNIX_FD") => send_error(out, "Need to authenticate first"),
            // Includes what only a server says (OK, REJECTED, AGREE_UNIX_FD).
            _ => send_error(out, "Unknown command"),
        }
        Ok(None)
    }

    /// `AUTH [mechanism [initial-response]]`.
    fn auth(&mut self, args: &str, out: &mut Vec<u8>) -> Result<(), AuthError> {
        let (name, response) = split_word(args);
        let Some(mechanism) = Mechanism::from_name(name).filter(|m| self.config.offers(*m)) else {
            // Also the answer to a bare AUTH: the list of what we offer.
            return self.reject(out);
        };
        let Some(response) = decode_hex(response) else {
            send_error(out, "Invalid hex encoding");
            return Ok(());
        };
        match mechanism {
            Mechanism::External => self.external(&response, false, out),
            // The response is "trace" text the client may send; it must be UTF-8.
            Mechanism::Anonymous if std::str::from_utf8(&response).is_err() => self.reject(out),
            Mechanism::Anonymous => {
                self.ok(Identity::Anonymous, out);
                Ok(())
            }
        }
    }

    /// EXTERNAL's response: the uid the client claims to have, in decimal digits, or nothing to
    /// mean "whoever the socket says I am".
    fn external(
        &mut self,
        claimed: &[u8],
        asked: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), AuthError> {
        let Some(uid) = self.peer_uid else {
            return self.reject(out);
        };
        if claimed.is_empty() {
            if asked {
                self.ok(Identity::Uid(uid), out);
            } else {
                out.extend_from_slice(b"DATA\r\n");
                self.state = State::Data;
            }
            return Ok(());
        }
        // Only numeric uids: like dbus-daemon, no user names (that would need a user database
        // look-up, which may block).
        let claimed_uid = std::str::from_utf8(claimed)
            .ok()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u32>().ok());
        if claimed_uid == Some(uid) {
            self.ok(Identity::Uid(uid), out);
            Ok(())
        } else {
            self.reject(out)
        }
    }

    fn ok(&mut self, identity: Identity, out: &mut Vec<u8>) {
        out.extend_from_slice(format!("OK {}\r\n", self.config.guid).as_bytes());
        self.state = State::Begin(identity);
    }

    /// REJECTED with what we offer; the conversation starts again, or ends after too many.
    fn reject(&mut self, out: &mut Vec<u8>) -> Result<(), AuthError> {
        out.extend_from_slice(b"REJECTED");
        for mechanism in Mechanism::ALL
            .into_iter()
            .filter(|m| self.config.offers(*m))
        {
            out.push(b' ');
            out.extend_from_slice(mechanism.name().as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        self.state = State::Mechanism;
        // File descriptor passing is negotiated after OK, for that OK.
        self.unix_fds = false;
        self.rejects += 1;
        if self.rejects >= MAX_REJECTS {
            return Err(AuthError::TooManyFailures);
        }
        Ok(())
    }
}

fn send_error(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(format!("ERROR \"{text}\"\r\n").as_bytes());
}

fn find_crlf(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|w| w == b"\r\n")
}

/// The first word and the rest after the blanks that follow it; blanks are spaces and tabs.
fn split_word(text: &str) -> (&str, &str) {
    let is_blank = |c: char| c == ' ' || c == '\t';
    match text.find(is_blank) {
        Some(end) => (&text[..end], text[end..].trim_start_matches(is_blank)),
        None => (text, ""),
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let digits = text.as_bytes();
    if !digits.len().is_multiple_of(2) || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let value = |digit: u8| (digit as char).to_digit(16).unwrap_or(0) as u8;
    Some(
        digits
            .chunks(2)
            .map(|pair| (value(pair[0]) << 4) | value(pair[1]))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUID: &str = "0123456789abcdef0123456789abcdef";

    fn config(mechanisms: &[&str], anonymous: bool, unix_fds: bool) -> Arc<AuthConfig> {
        Arc::new(AuthConfig {
            mechanisms: mechanisms.iter().map(|m| m.to_string()).collect(),
            allow_anonymous: anonymous,
            guid: GUID.into(),
            unix_fd_capable: unix_fds,
        })
    }

    fn server(uid: Option<u32>) -> Sasl {
        Sasl::new(config(&[], false, true), uid)
    }

    fn hex(s: &str) -> String {
        s.bytes().map(|b| format!("{b:02x}")).collect()
    }

    /// Feed `input` at once: the replies and the outcome.
    fn run(sasl: &mut Sasl, input: &[u8]) -> (String, Result<AuthProgress, AuthError>) {
        let mut out = Vec::new();
        let r = sasl.feed(input, &mut out);
        (String::from_utf8(out).unwrap(), r)
    }

    /// Feed a line after the NUL byte was sent; the reply.
    fn say(sasl: &mut Sasl, line: &str) -> String {
        let (out, r) = run(sasl, format!("{line}\r\n").as_bytes());
        let p = r.unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(p.consumed, line.len() + 2);
        out
    }

    fn started(uid: Option<u32>) -> Sasl {
        let mut s = server(uid);
        assert_eq!(run(&mut s, b"\0").1.unwrap().consumed, 1);
        s
    }

    #[test]
    fn external_with_the_socket_uid_then_fds_then_begin() {
        let mut s = server(Some(1000));
        let input = format!(
            "\0AUTH EXTERNAL {}\r\nNEGOTIATE_UNIX_FD\r\nBEGIN\r\nl\x01\0\x01rest",
            hex("1000")
        );
        let (out, r) = run(&mut s, input.as_bytes());
        assert_eq!(out, format!("OK {GUID}\r\nAGREE_UNIX_FD\r\n"));
        let p = r.unwrap();
        assert_eq!(&input.as_bytes()[p.consumed..], b"l\x01\0\x01rest");
        let done = p.done.unwrap();
        assert_eq!(done.identity, Identity::Uid(1000));
        assert!(done.unix_fds);
        assert_eq!(run(&mut s, b"").1, Err(AuthError::AlreadyDone));
    }

    #[test]
    fn external_with_another_uid_or_a_name_is_rejected() {
        let mut s = started(Some(1000));
        assert_eq!(
            say(&mut s, &format!("AUTH EXTERNAL {}", hex("0"))),
            "REJECTED EXTERNAL\r\n"
        );
        assert_eq!(
            say(&mut s, &format!("AUTH EXTERNAL {}", hex("root"))),
            "REJECTED EXTERNAL\r\n"
        );
        assert_eq!(
            say(&mut s, &format!("AUTH EXTERNAL {}", hex("+1000"))),
            "REJECTED EXTERNAL\r\n"
        );
        assert_eq!(
            say(&mut s, &format!("AUTH EXTERNAL {}", hex("01000"))),
            format!("OK {GUID}\r\n")
        );
    }

    #[test]
    fn external_without_credentials_is_rejected_at_once() {
        let mut s = started(None);
        assert_eq!(say(&mut s, "AUTH EXTERNAL"), "REJECTED EXTERNAL\r\n");
        assert_eq!(
            say(&mut s, &format!("AUTH EXTERNAL {}", hex("0"))),
            "REJECTED EXTERNAL\r\n"
        );
    }

    #[test]
    fn external_data_round_trip() {
        // No initial response: DATA asks, an empty DATA means "the socket's uid".
        let mut s = started(Some(7));
        assert_eq!(say(&mut s, "AUTH EXTERNAL"), "DATA\r\n");
        assert_eq!(say(&mut s, "DATA"), format!("OK {GUID}\r\n"));
        let (_, r) = run(&mut s, b"BEGIN\r\n");
        assert_eq!(r.unwrap().done.unwrap().identity, Identity::Uid(7));

        // A trailing blank is no response either; the identity may come with DATA.
        let mut s = started(Some(7));
        assert_eq!(say(&mut s, "AUTH EXTERNAL "), "DATA\r\n");
        assert_eq!(say(&mut s, "DATA zz"), "ERROR \"Invalid hex encoding\"\r\n");
        assert_eq!(
            say(&mut s, &format!("DATA {}", hex("7"))),
            format!("OK {GUID}\r\n")
        );

        let mut s = started(Some(7));
        assert_eq!(say(&mut s, "AUTH EXTERNAL"), "DATA\r\n");
        assert_eq!(
            say(&mut s, &format!("DATA {}", hex("8"))),
            "REJECTED EXTERNAL\r\n"
        );
    }

    #[test]
    fn commands_while_waiting_for_data() {
        let mut s = started(Some(7));
        assert_eq!(say(&mut s, "AUTH EXTERNAL"), "DATA\r\n");
        assert_eq!(
            say(&mut s, "AUTH EXTERNAL"),
            "ERROR \"Sent AUTH while another AUTH in progress\"\r\n"
        );
        assert_eq!(
            say(&mut s, "NEGOTIATE_UNIX_FD"),
            "ERROR \"Need to authenticate first\"\r\n"
        );
        assert_eq!(say(&mut s, "OK"), "ERROR \"Unknown command\"\r\n");
        assert_eq!(say(&mut s, "CANCEL"), "REJECTED EXTERNAL\r\n");
        assert_eq!(say(&mut s, "AUTH EXTERNAL"), "DATA\r\n");
        assert_eq!(say(&mut s, "ERROR"), "REJECTED EXTERNAL\r\n");
        assert_eq!(say(&mut s, "AUTH EXTERNAL"), "DATA\r\n");
        assert_eq!(run(&mut s, b"BEGIN\r\n").1, Err(AuthError::BeginWithoutOk));
    }

    #[test]
    fn commands_before_auth() {
        let mut s = started(Some(1));
        assert_eq!(say(&mut s, "AUTH"), "REJECTED EXTERNAL\r\n");
        assert_eq!(say(&mut s, "AUTH "), "REJECTED EXTERNAL\r\n");
        assert_eq!(
            say(&mut s, "CANCEL"),
            "ERROR \"Not currently in an auth conversation\"\r\n"
        );
        assert_eq!(
            say(&mut s, "DATA 30"),
            "ERROR \"Not currently in an auth conversation\"\r\n"
        );
        assert_eq!(
            say(&mut s, "NEGOTIATE_UNIX_FD"),
            "ERROR \"Need to authenticate first\"\r\n"
        );
        assert_eq!(say(&mut s, "ERROR \"bored\""), "REJECTED EXTERNAL\r\n");
        for unknown in [
            "FOO bar",
            "auth",
            "OK 1234",
            "REJECTED",
            "AGREE_UNIX_FD",
            " AUTH",
            "",
        ] {
            assert_eq!(
                say(&mut s, unknown),
                "ERROR \"Unknown command\"\r\n",
                "{unknown:?}"
            );
        }
        assert_eq!(run(&mut s, b"BEGIN\r\n").1, Err(AuthError::BeginWithoutOk));
    }

    #[test]
    fn commands_after_ok() {
        let mut s = started(Some(1));
        let ok = format!("OK {GUID}\r\n");
        assert_eq!(say(&mut s, &format!("AUTH EXTERNAL {}", hex("1"))), ok);
        assert_eq!(
            say(&mut s, "AUTH EXTERNAL"),
            "ERROR \"Sent AUTH while expecting BEGIN\"\r\n"
        );
        assert_eq!(
            say(&mut s, "DATA"),
            "ERROR \"Sent DATA while expecting BEGIN\"\r\n"
        );
        assert_eq!(say(&mut s, "FOO"), "ERROR \"Unknown command\"\r\n");
        assert_eq!(say(&mut s, "NEGOTIATE_UNIX_FD"), "AGREE_UNIX_FD\r\n");
        // CANCEL after OK starts over, and forgets the fd negotiation.
        assert_eq!(say(&mut s, "CANCEL"), "REJECTED EXTERNAL\r\n");
        assert_eq!(say(&mut s, &format!("AUTH\tEXTERNAL\t\t{}", hex("1"))), ok);
        let done = run(&mut s, b"BEGIN\r\n").1.unwrap().done.unwrap();
        assert!(!done.unix_fds);
    }

    #[test]
    fn bad_hex_is_an_error_not_a_rejection() {
        let mut s = started(Some(1));
        for response in ["willy", "3", "31 32", "+1", "3g"] {
            assert_eq!(
                say(&mut s, &format!("AUTH EXTERNAL {response}")),
                "ERROR \"Invalid hex encoding\"\r\n",
                "{response}"
            );
        }
        // An unknown mechanism is rejected before its response is looked at.
        assert_eq!(say(&mut s, "AUTH BOGUS zz"), "REJECTED EXTERNAL\r\n");
        assert_eq!(say(&mut s, "AUTH EXTERNAL 3A"), "REJECTED EXTERNAL\r\n");
    }

    #[test]
    fn non_ascii_lines_are_errors() {
        let mut s = started(Some(1));
        let (out, r) = run(&mut s, b"AUTH \xff\r\nAUTH\0X\r\nAUTH\r\n");
        assert_eq!(
            out,
            "ERROR \"Command contained non-ASCII\"\r\n\
             ERROR \"Command contained non-ASCII\"\r\n\
             REJECTED EXTERNAL\r\n"
        );
        assert_eq!(r.unwrap().consumed, 22);
    }

    #[test]
    fn a_bare_newline_is_part_of_the_line() {
        let mut s = started(Some(1));
        let (out, r) = run(&mut s, b"AUTH\n");
        assert_eq!((out.as_str(), r.unwrap().consumed), ("", 0));
        let (out, r) = run(&mut s, b"AUTH\n\r\n");
        assert_eq!(out, "ERROR \"Unknown command\"\r\n");
        assert_eq!(r.unwrap().consumed, 7);
    }

    #[test]
    fn anonymous_only_when_allowed_and_listed() {
        let mut s = Sasl::new(config(&[], true, true), Some(1));
        let (out, _) = run(&mut s, b"\0AUTH\r\n");
        assert_eq!(out, "REJECTED EXTERNAL ANONYMOUS\r\n");
        // The trace string must be UTF-8.
        assert_eq!(
            say(&mut s, "AUTH ANONYMOUS ff"),
            "REJECTED EXTERNAL ANONYMOUS\r\n"
        );
        assert_eq!(
            say(&mut s, &format!("AUTH ANONYMOUS {}", hex("D-Bus 1.1.1"))),
            format!("OK {GUID}\r\n")
        );
        let done = run(&mut s, b"BEGIN\r\n").1.unwrap().done.unwrap();
        assert_eq!(done.identity, Identity::Anonymous);

        let mut s = Sasl::new(config(&["ANONYMOUS"], true, true), None);
        let (out, _) = run(&mut s, b"\0AUTH ANONYMOUS\r\n");
        assert_eq!(out, format!("OK {GUID}\r\n"));

        let mut s = Sasl::new(config(&["EXTERNAL"], true, true), Some(1));
        assert_eq!(
            run(&mut s, b"\0AUTH ANONYMOUS\r\n").0,
            "REJECTED EXTERNAL\r\n"
        );
        let mut s = Sasl::new(config(&[], false, true), Some(1));
        assert_eq!(
            run(&mut s, b"\0AUTH ANONYMOUS\r\n").0,
            "REJECTED EXTERNAL\r\n"
        );
        let mut s = Sasl::new(config(&["ANONYMOUS"], true, true), Some(1));
        assert_eq!(
            run(&mut s, b"\0AUTH EXTERNAL 31\r\n").0,
            "REJECTED ANONYMOUS\r\n"
        );
    }

    #[test]
    fn cookie_sha1_and_unknown_mechanisms_are_rejected() {
        let mut s = started(Some(0));
        assert_eq!(
            say(&mut s, &format!("AUTH DBUS_COOKIE_SHA1 {}", hex("root"))),
            "REJECTED EXTERNAL\r\n"
        );
        assert_eq!(say(&mut s, "AUTH external 30"), "REJECTED EXTERNAL\r\n");
        assert_eq!(say(&mut s, "AUTH KERBEROS_V4"), "REJECTED EXTERNAL\r\n");
    }

    #[test]
    fn no_fd_passing_where_the_transport_cannot() {
        let mut s = Sasl::new(config(&[], true, false), None);
        let (out, r) = run(
            &mut s,
            b"\0AUTH ANONYMOUS\r\nNEGOTIATE_UNIX_FD\r\nBEGIN\r\n",
        );
        assert_eq!(
            out,
            format!(
                "OK {GUID}\r\nERROR \"Unix FD passing not supported, not authenticated or \
                 otherwise not possible\"\r\n"
            )
        );
        let done = r.unwrap().done.unwrap();
        assert_eq!(
            done,
            Authenticated {
                identity: Identity::Anonymous,
                unix_fds: false
            }
        );
    }

    #[test]
    fn the_sixth_rejection_disconnects_after_saying_rejected() {
        let mut s = started(Some(1));
        for _ in 1..MAX_REJECTS {
            assert_eq!(say(&mut s, "AUTH EXTERNAL 32"), "REJECTED EXTERNAL\r\n");
        }
        let (out, r) = run(&mut s, b"ERROR\r\n");
        assert_eq!(out, "REJECTED EXTERNAL\r\n");
        assert_eq!(r, Err(AuthError::TooManyFailures));
    }

    #[test]
    fn the_first_byte_must_be_nul() {
        let mut s = server(Some(1));
        assert_eq!(
            run(&mut s, b"").1.unwrap(),
            AuthProgress {
                consumed: 0,
                done: None
            }
        );
        assert_eq!(run(&mut s, b"AUTH\r\n").1, Err(AuthError::MissingNulByte));
    }

    #[test]
    fn lines_are_bounded() {
        let mut s = started(Some(1));
        let mut long = vec![b'A'; MAX_LINE];
        long.push(b'\r');
        assert_eq!(
            run(&mut s, &long).1.unwrap().consumed,
            0,
            "not too long yet"
        );
        long.pop();
        long.push(b'A');
        assert_eq!(run(&mut s, &long).1, Err(AuthError::LineTooLong));

        let mut s = started(Some(1));
        let mut line = b"AUTH ".to_vec();
        line.resize(MAX_LINE + 1, b'A');
        line.extend_from_slice(b"\r\n");
        assert_eq!(run(&mut s, &line).1, Err(AuthError::LineTooLong));

        let mut s = started(Some(1));
        let mut line = b"AUTH ".to_vec();
        line.resize(MAX_LINE, b'A');
        line.extend_from_slice(b"\r\n");
        assert_eq!(run(&mut s, &line).0, "REJECTED EXTERNAL\r\n");
    }

    #[test]
    fn conversations_are_bounded() {
        let mut s = started(Some(1));
        let input = "FOO\r\n".repeat(MAX_COMMANDS as usize);
        let (_, r) = run(&mut s, input.as_bytes());
        assert_eq!(r.unwrap().consumed, input.len());
        assert_eq!(run(&mut s, b"FOO\r\n").1, Err(AuthError::TooManyCommands));
    }

    #[test]
    fn a_crlf_split_between_reads_is_found() {
        let mut s = started(Some(1));
        let (out, r) = run(&mut s, b"AUTH\r");
        assert_eq!((out.as_str(), r.unwrap().consumed), ("", 0));
        let (out, r) = run(&mut s, b"AUTH\r\n");
        assert_eq!(
            (out.as_str(), r.unwrap().consumed),
            ("REJECTED EXTERNAL\r\n", 6)
        );
    }

    #[test]
    fn checking_the_auth_list() {
        let list = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert!(AuthConfig::check_mechanisms(&[]).is_ok());
        assert!(AuthConfig::check_mechanisms(&list(&["EXTERNAL", "DBUS_COOKIE_SHA1"])).is_ok());
        let e = AuthConfig::check_mechanisms(&list(&["EXTERNAL", "FOO"])).unwrap_err();
        assert!(e.contains("\"FOO\""), "{e}");
        assert!(AuthConfig::check_mechanisms(&list(&["DBUS_COOKIE_SHA1"])).is_err());
    }

    #[test]
    fn hex_decoding() {
        assert_eq!(decode_hex(""), Some(vec![]));
        assert_eq!(decode_hex("3031aAfF"), Some(vec![0x30, 0x31, 0xaa, 0xff]));
        assert_eq!(decode_hex("303"), None);
        assert_eq!(decode_hex("+1"), None);
        assert_eq!(decode_hex("é1"), None);
    }
}
