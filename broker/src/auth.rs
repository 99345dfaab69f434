//! The server side of the D-Bus SASL exchange, as dbus-daemon conducts it.
//!
//! zbus's server handshake takes one mechanism, and has no limit on failed attempts or on the
//! length of a line; a bus needs the `<auth>` list, ANONYMOUS only where `<allow_anonymous/>`
//! says so, and bounds on everything a client that has not authenticated can make it hold. So
//! this is our own, a small state machine fed with bytes as they arrive; it does no I/O, and the
//! event loop enforces `auth_timeout`.
//!
//! DBUS_COOKIE_SHA1 is not offered: it is for transports without credentials passing, and every
//! client falls back to EXTERNAL on unix sockets.

use std::sync::Arc;

/// Longest line a client may send during authentication.
pub const MAX_LINE: usize = 16 * 1024;
/// Rejected attempts before the client is disconnected.
pub const MAX_REJECTS: u32 = 6;

const EXTERNAL: &str = "EXTERNAL";
const ANONYMOUS: &str = "ANONYMOUS";

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
    fn offers(&self, mechanism: &str) -> bool {
        let listed = self.mechanisms.is_empty() || self.mechanisms.iter().any(|m| m == mechanism);
        match mechanism {
            EXTERNAL => listed,
            ANONYMOUS => listed && self.allow_anonymous,
            _ => false,
        }
    }

    fn offered(&self) -> String {
        [EXTERNAL, ANONYMOUS]
            .into_iter()
            .filter(|m| self.offers(m))
            .collect::<Vec<_>>()
            .join(" ")
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
    pub unix_fds: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub struct AuthProgress {
    /// Bytes of the input used; after BEGIN, the rest are D-Bus messages.
    pub consumed: usize,
    pub done: Option<Authenticated>,
}

/// Why the client must be disconnected.
#[derive(Debug, PartialEq, Eq)]
pub struct AuthError(pub String);

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    /// Before the credentials byte.
    BeforeNul,
    Mechanism,
    /// EXTERNAL without an initial response: we sent DATA.
    Data,
    /// We sent OK; waiting for BEGIN (or NEGOTIATE_UNIX_FD).
    Begin(Identity),
}

pub struct Sasl {
    config: Arc<AuthConfig>,
    peer_uid: Option<u32>,
    state: State,
    unix_fds: bool,
    rejects: u32,
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Sasl {
    pub fn new(config: Arc<AuthConfig>, peer_uid: Option<u32>) -> Self {
        Sasl {
            config,
            peer_uid,
            state: State::BeforeNul,
            unix_fds: false,
            rejects: 0,
        }
    }

    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<AuthProgress, AuthError> {
        let mut consumed = 0;
        if self.state == State::BeforeNul {
            match input.first() {
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
                Some(_) => {
                    return Err(AuthError(
                        "the first byte was not the credentials byte (NUL)".into(),
                    ));
                }
            }
        }
        loop {
            let rest = &input[consumed..];
            let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else {
                if rest.len() > MAX_LINE {
                    return Err(AuthError(format!(
                        "authentication line longer than {MAX_LINE} bytes"
                    )));
                }
                return Ok(AuthProgress {
                    consumed,
                    done: None,
                });
            };
            if end > MAX_LINE {
                return Err(AuthError(format!(
                    "authentication line longer than {MAX_LINE} bytes"
                )));
            }
            let line = std::str::from_utf8(&rest[..end])
                .map_err(|_| AuthError("authentication line is not ASCII".into()))?;
            consumed += end + 2;
            if let Some(done) = self.line(line, out)? {
                return Ok(AuthProgress {
                    consumed,
                    done: Some(done),
                });
            }
        }
    }

    fn reject(&mut self, out: &mut Vec<u8>) -> Result<(), AuthError> {
        self.rejects += 1;
        if self.rejects > MAX_REJECTS {
            return Err(AuthError(format!(
                "more than {MAX_REJECTS} failed authentication attempts"
            )));
        }
        self.state = State::Mechanism;
        out.extend_from_slice(format!("REJECTED {}\r\n", self.config.offered()).as_bytes());
        Ok(())
    }

    fn error(out: &mut Vec<u8>, text: &str) {
        out.extend_from_slice(format!("ERROR \"{text}\"\r\n").as_bytes());
    }

    fn ok(&mut self, identity: Identity, out: &mut Vec<u8>) {
        out.extend_from_slice(format!("OK {}\r\n", self.config.guid).as_bytes());
        self.state = State::Begin(identity);
    }

    /// EXTERNAL's response: the client's claimed uid (hex of its decimal digits), or nothing
    /// to mean "whoever the socket says I am".
    fn external(&mut self, response: &str, out: &mut Vec<u8>) -> Result<(), AuthError> {
        let Some(uid) = self.peer_uid else {
            return self.reject(out);
        };
        let claimed = match decode_hex(response) {
            Some(bytes) => bytes,
            None => return self.reject(out),
        };
        if claimed.is_empty() {
            self.ok(Identity::Uid(uid), out);
            return Ok(());
        }
        let matches = std::str::from_utf8(&claimed)
            .ok()
            .and_then(|s| s.parse::<u32>().ok())
            == Some(uid);
        if matches {
            self.ok(Identity::Uid(uid), out);
            Ok(())
        } else {
            self.reject(out)
        }
    }

    fn line(&mut self, line: &str, out: &mut Vec<u8>) -> Result<Option<Authenticated>, AuthError> {
        let (command, args) = match line.split_once(' ') {
            Some((c, a)) => (c, a),
            None => (line, ""),
        };
        match (&self.state, command) {
            (_, "CANCEL" | "ERROR") => {
                // CANCEL before anything started is answered the same way: the mechanisms.
                self.reject(out)?;
            }
            (State::Mechanism, "AUTH") => {
                let mut words = args.split(' ').filter(|w| !w.is_empty());
                let mechanism = words.next();
                let response = words.next();
                match mechanism {
                    Some(m) if self.config.offers(m) => match (m, response) {
                        (EXTERNAL, Some(r)) => self.external(r, out)?,
                        (EXTERNAL, None) => {
                            out.extend_from_slice(b"DATA\r\n");
                            self.state = State::Data;
                        }
                        (ANONYMOUS, _) => self.ok(Identity::Anonymous, out),
                        _ => self.reject(out)?,
                    },
                    _ => self.reject(out)?,
                }
            }
            (State::Data, "DATA") => self.external(args.trim(), out)?,
            (State::Begin(_), "NEGOTIATE_UNIX_FD") => {
                if self.config.unix_fd_capable {
                    self.unix_fds = true;
                    out.extend_from_slice(b"AGREE_UNIX_FD\r\n");
                } else {
                    Self::error(
                        out,
                        "Unix file descriptor passing is not supported on this transport",
                    );
                }
            }
            (State::Begin(identity), "BEGIN") => {
                return Ok(Some(Authenticated {
                    identity: *identity,
                    unix_fds: self.unix_fds,
                }));
            }
            (State::Mechanism, "BEGIN" | "DATA" | "NEGOTIATE_UNIX_FD") => {
                Self::error(out, "Not expecting this command before authentication");
            }
            (State::Data, _) => {
                Self::error(out, "Expecting DATA or CANCEL");
            }
            (State::Begin(_), "AUTH" | "DATA") => {
                Self::error(out, "Already authenticated; expecting BEGIN");
            }
            _ => Self::error(out, "Unknown command"),
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUID: &str = "0123456789abcdef0123456789abcdef";

    fn config(mechanisms: &[&str], anonymous: bool) -> Arc<AuthConfig> {
        Arc::new(AuthConfig {
            mechanisms: mechanisms.iter().map(|m| m.to_string()).collect(),
            allow_anonymous: anonymous,
            guid: GUID.into(),
            unix_fd_capable: true,
        })
    }

    fn hex(s: &str) -> String {
        s.bytes().map(|b| format!("{b:02x}")).collect()
    }

    /// Feed everything at once; the server's replies and the outcome.
    fn run(sasl: &mut Sasl, input: &[u8]) -> (String, Result<AuthProgress, AuthError>) {
        let mut out = Vec::new();
        let r = sasl.feed(input, &mut out);
        (String::from_utf8(out).unwrap(), r)
    }

    #[test]
    fn external_with_our_uid_succeeds_and_leaves_the_messages() {
        let mut s = Sasl::new(config(&[], false), Some(1000));
        let input = format!(
            "\0AUTH EXTERNAL {}\r\nNEGOTIATE_UNIX_FD\r\nBEGIN\r\nlXYZ",
            hex("1000")
        );
        let (out, r) = run(&mut s, input.as_bytes());
        assert_eq!(out, format!("OK {GUID}\r\nAGREE_UNIX_FD\r\n"));
        let p = r.unwrap();
        assert_eq!(&input.as_bytes()[p.consumed..], b"lXYZ");
        assert_eq!(
            p.done,
            Some(Authenticated {
                identity: Identity::Uid(1000),
                unix_fds: true
            })
        );
    }

    #[test]
    fn external_with_another_uid_is_rejected() {
        let mut s = Sasl::new(config(&[], false), Some(1000));
        let (out, r) = run(
            &mut s,
            format!("\0AUTH EXTERNAL {}\r\n", hex("0")).as_bytes(),
        );
        assert_eq!(out, "REJECTED EXTERNAL\r\n");
        assert!(r.unwrap().done.is_none());
    }

    #[test]
    fn external_data_round_trip_and_empty_identity() {
        let mut s = Sasl::new(config(&[], false), Some(7));
        let (out, _) = run(&mut s, b"\0AUTH EXTERNAL\r\n");
        assert_eq!(out, "DATA\r\n");
        let (out, _) = run(&mut s, b"DATA\r\n");
        assert_eq!(out, format!("OK {GUID}\r\n"));
        let (_, r) = run(&mut s, b"BEGIN\r\n");
        assert_eq!(r.unwrap().done.unwrap().identity, Identity::Uid(7));
    }

    #[test]
    fn bytes_may_arrive_one_at_a_time() {
        let mut s = Sasl::new(config(&[], false), Some(5));
        let input = format!("\0AUTH EXTERNAL {}\r\nBEGIN\r\n", hex("5"));
        let mut pending: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        let mut done = None;
        for b in input.bytes() {
            pending.push(b);
            let p = s.feed(&pending, &mut out).unwrap();
            pending.drain(..p.consumed);
            if p.done.is_some() {
                done = p.done;
            }
        }
        assert_eq!(done.unwrap().identity, Identity::Uid(5));
        assert!(pending.is_empty());
    }

    #[test]
    fn mechanisms_follow_the_configuration() {
        let mut s = Sasl::new(config(&[], true), Some(1));
        let (out, _) = run(&mut s, b"\0AUTH\r\n");
        assert_eq!(out, "REJECTED EXTERNAL ANONYMOUS\r\n");
        let (out, _) = run(&mut s, b"AUTH ANONYMOUS 74657374\r\nBEGIN\r\n");
        assert_eq!(out, format!("OK {GUID}\r\n"));

        let mut s = Sasl::new(config(&["EXTERNAL"], true), Some(1));
        let (out, _) = run(&mut s, b"\0AUTH ANONYMOUS\r\n");
        assert_eq!(out, "REJECTED EXTERNAL\r\n");
        let mut s = Sasl::new(config(&[], false), Some(1));
        let (out, _) = run(&mut s, b"\0AUTH DBUS_COOKIE_SHA1 abcd\r\n");
        assert_eq!(out, "REJECTED EXTERNAL\r\n");
    }

    #[test]
    fn errors_and_wrong_order() {
        let mut s = Sasl::new(config(&[], false), Some(1));
        let (out, _) = run(&mut s, b"\0BEGIN\r\nFOO\r\nCANCEL\r\n");
        assert!(out.starts_with("ERROR"));
        assert!(out.contains("ERROR \"Unknown command\""));
        assert!(out.ends_with("REJECTED EXTERNAL\r\n"));
        let (out, _) = run(&mut s, b"NEGOTIATE_UNIX_FD\r\n");
        assert!(out.starts_with("ERROR"));
    }

    #[test]
    fn no_unix_fds_on_tcp() {
        let cfg = Arc::new(AuthConfig {
            unix_fd_capable: false,
            ..(*config(&[], true)).clone()
        });
        let mut s = Sasl::new(cfg, None);
        let (out, r) = run(
            &mut s,
            b"\0AUTH ANONYMOUS\r\nNEGOTIATE_UNIX_FD\r\nBEGIN\r\n",
        );
        assert!(out.contains("ERROR"));
        let done = r.unwrap().done.unwrap();
        assert!(!done.unix_fds);
        assert_eq!(done.identity, Identity::Anonymous);
    }

    #[test]
    fn hostile_input_is_bounded() {
        let mut s = Sasl::new(config(&[], false), Some(1));
        assert!(run(&mut s, b"AUTH\r\n").1.is_err(), "no credentials byte");
        let mut s = Sasl::new(config(&[], false), Some(1));
        let long = vec![b'A'; MAX_LINE + 10];
        let mut input = vec![0];
        input.extend_from_slice(&long);
        assert!(run(&mut s, &input).1.is_err(), "endless line");
        let mut s = Sasl::new(config(&[], false), Some(1));
        let mut input = b"\0".to_vec();
        for _ in 0..=MAX_REJECTS {
            input.extend_from_slice(b"AUTH EXTERNAL 30\r\n");
        }
        assert!(run(&mut s, &input).1.is_err(), "too many rejects");
    }
}
