//! The D-Bus wire format as the broker needs it: framing a byte stream into messages, and
//! rewriting a client's header before the message is passed on.
//!
//! Every message a client sends is rewritten once: the bus stamps the SENDER field with the
//! client's unique name and drops header fields it does not know (dbus-daemon's
//! "HeaderFiltering"), then the same bytes go to every recipient. The body is copied as it is,
//! never re-marshalled.
//!
//! zbus parses and validates the rewritten message (`Message::from_bytes`, `Body::validate`), but
//! its header parser refuses unknown header field codes, which the specification says must be
//! ignored, so the first pass over a client's header is ours.

pub mod body;

use std::os::fd::OwnedFd;

use zbus::Message;
use zbus::message::Type;
use zbus::wire::{
    Endian,
    serialized::{Context, Data},
};

/// Length of the fixed part of every header, up to and including the length of the field array.
pub const FIXED_HEADER_LEN: usize = 16;
/// The protocol's own bound on a message (128 MiB).
pub const MAX_MESSAGE_SIZE: usize = 128 * 1024 * 1024;
/// The protocol's bound on an array, the header field array included (64 MiB).
const MAX_ARRAY_LEN: usize = 64 * 1024 * 1024;

/// Header field codes of the specification.
pub mod field {
    pub const PATH: u8 = 1;
    pub const INTERFACE: u8 = 2;
    pub const MEMBER: u8 = 3;
    pub const ERROR_NAME: u8 = 4;
    pub const REPLY_SERIAL: u8 = 5;
    pub const DESTINATION: u8 = 6;
    pub const SENDER: u8 = 7;
    pub const SIGNATURE: u8 = 8;
    pub const UNIX_FDS: u8 = 9;
}

/// Why a client's bytes are not a message. The client is disconnected for any of these.
#[derive(Debug)]
pub enum WireError {
    BadEndian(u8),
    BadVersion(u8),
    TooLarge(usize),
    BadHeader(String),
    Invalid(zbus::Error),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::BadEndian(b) => write!(f, "invalid endianness byte {b:#04x}"),
            WireError::BadVersion(v) => write!(f, "unsupported protocol version {v}"),
            WireError::TooLarge(n) => write!(f, "message of {n} bytes exceeds the limit"),
            WireError::BadHeader(why) => write!(f, "malformed header: {why}"),
            WireError::Invalid(e) => write!(f, "invalid message: {e}"),
        }
    }
}

fn padding8(n: usize) -> usize {
    (8 - n % 8) % 8
}

fn endian_of(byte: u8) -> Result<Endian, WireError> {
    match byte {
        b'l' => Ok(Endian::Little),
        b'B' => Ok(Endian::Big),
        other => Err(WireError::BadEndian(other)),
    }
}

fn read_u32(endian: Endian, bytes: &[u8]) -> u32 {
    let b = [bytes[0], bytes[1], bytes[2], bytes[3]];
    match endian {
        Endian::Little => u32::from_le_bytes(b),
        Endian::Big => u32::from_be_bytes(b),
    }
}

fn write_u32(endian: Endian, value: u32) -> [u8; 4] {
    match endian {
        Endian::Little => value.to_le_bytes(),
        Endian::Big => value.to_be_bytes(),
    }
}

/// The total length of the message that starts `bytes`, once its fixed header is there.
///
/// Returns `Ok(None)` while fewer than [`FIXED_HEADER_LEN`] bytes are available.
pub fn message_len(bytes: &[u8], max_size: usize) -> Result<Option<usize>, WireError> {
    if bytes.len() < FIXED_HEADER_LEN {
        return Ok(None);
    }
    let endian = endian_of(bytes[0])?;
    if bytes[3] != 1 {
        return Err(WireError::BadVersion(bytes[3]));
    }
    let body_len = read_u32(endian, &bytes[4..8]) as usize;
    let fields_len = read_u32(endian, &bytes[12..16]) as usize;
    if fields_len > MAX_ARRAY_LEN {
        return Err(WireError::TooLarge(fields_len));
    }
    let header_len = FIXED_HEADER_LEN + fields_len;
    let total = header_len + padding8(header_len) + body_len;
    if total > max_size.min(MAX_MESSAGE_SIZE) {
        return Err(WireError::TooLarge(total));
    }
    Ok(Some(total))
}

/// How many fields the bus keeps at most: the known codes but SENDER, each at most once.
const MAX_KEPT_FIELDS: usize = 8;

/// Where the fields the bus keeps lie in a client's header.
///
/// A fixed array, not a `Vec`: this is built for every message, and an allocation per message
/// showed in the profile.
struct KeptFields {
    /// Byte ranges of the fields to copy, each starting on an 8-byte boundary: `ranges[..count]`.
    ranges: [(usize, usize); MAX_KEPT_FIELDS],
    count: usize,
    unix_fds: u32,
}

/// The signature each known header field must have.
fn expected_signature(code: u8) -> Option<u8> {
    match code {
        field::PATH => Some(b'o'),
        field::INTERFACE | field::MEMBER | field::ERROR_NAME | field::DESTINATION => Some(b's'),
        field::SENDER => Some(b's'),
        field::REPLY_SERIAL | field::UNIX_FDS => Some(b'u'),
        field::SIGNATURE => Some(b'g'),
        _ => None,
    }
}

/// Walk the header field array, checking the layout of the fields the bus knows and skipping
/// (through zbus's variant parser) those it does not.
fn scan_fields(bytes: &[u8], endian: Endian) -> Result<KeptFields, WireError> {
    let bad = |why: &str| WireError::BadHeader(why.to_string());
    let fields_len = read_u32(endian, &bytes[12..16]) as usize;
    let end = FIXED_HEADER_LEN + fields_len;
    let mut kept = KeptFields {
        ranges: [(0, 0); MAX_KEPT_FIELDS],
        count: 0,
        unix_fds: 0,
    };
    let mut seen = 0u32;
    let mut pos = FIXED_HEADER_LEN;
    while pos < end {
        pos += padding8(pos);
        if pos + 4 > end {
            return Err(bad("truncated field"));
        }
        let start = pos;
        let code = bytes[pos];
        let sig_len = bytes[pos + 1] as usize;
        if code == 0 {
            return Err(bad("field code 0"));
        }
        match expected_signature(code) {
            Some(ty) => {
                if sig_len != 1 || bytes[pos + 2] != ty || bytes[pos + 3] != 0 {
                    return Err(bad(&format!("field {code} has the wrong type")));
                }
                if code < 32 && seen & (1 << code) != 0 {
                    return Err(bad(&format!("field {code} appears twice")));
                }
                seen |= 1 << code;
                pos += 4;
                pos = match ty {
                    b'u' => {
                        if pos + 4 > end {
                            return Err(bad("truncated field"));
                        }
                        let value = read_u32(endian, &bytes[pos..pos + 4]);
                        if code == field::UNIX_FDS {
                            kept.unix_fds = value;
                        } else if value == 0 {
                            return Err(bad("reply serial 0"));
                        }
                        pos + 4
                    }
                    b'g' => {
                        let len = bytes[pos] as usize;
                        let stop = pos + 1 + len + 1;
                        if stop > end || bytes[stop - 1] != 0 {
                            return Err(bad("truncated signature"));
                        }
                        stop
                    }
                    _ => {
                        if pos + 4 > end {
                            return Err(bad("truncated field"));
                        }
                        let len = read_u32(endian, &bytes[pos..pos + 4]) as usize;
                        let stop = pos + 4 + len + 1;
                        if stop > end || bytes[stop - 1] != 0 {
                            return Err(bad("truncated string"));
                        }
                        stop
                    }
                };
                if code != field::SENDER {
                    // Codes are checked unique above, so at most MAX_KEPT_FIELDS get here.
                    kept.ranges[kept.count] = (start, pos);
                    kept.count += 1;
                }
            }
            None => {
                // An unknown field: its value may be of any type. zbus parses the variant to find
                // where it ends (and that it is well formed); the field is then dropped.
                let data = Data::new(&bytes[..end], Context::new(endian, 0));
                let value = data.slice(pos + 1..);
                let (_, used) = value
                    .deserialize_for_signature::<_, zbus::wire::Variant<'_>>("v")
                    .map_err(|e| bad(&format!("unknown field {code}: {e}")))?;
                pos = pos + 1 + used;
            }
        }
    }
    if pos != end {
        return Err(bad("field array overruns its length"));
    }
    Ok(kept)
}

/// Take a complete message from a client, stamp `sender` on it, drop unknown header fields, and
/// hand it to zbus, which checks the header and the body against its signature.
///
/// `take_fds` supplies the file descriptors that came with the message, given how many its
/// header announces; it fails if fewer arrived.
pub fn stamp_client_message(
    bytes: &[u8],
    sender: &str,
    take_fds: impl FnOnce(usize) -> Option<Vec<OwnedFd>>,
) -> Result<Message, WireError> {
    let endian = endian_of(bytes[0])?;
    let kept = scan_fields(bytes, endian)?;
    let fields_len = read_u32(endian, &bytes[12..16]) as usize;
    let header_len = FIXED_HEADER_LEN + fields_len;
    let body = &bytes[header_len + padding8(header_len)..];

    let mut out = Vec::with_capacity(bytes.len() + sender.len() + 16);
    out.extend_from_slice(&bytes[..12]);
    out.extend_from_slice(&[0; 4]); // field array length, patched below
    for (start, stop) in &kept.ranges[..kept.count] {
        out.resize(out.len() + padding8(out.len()), 0);
        out.extend_from_slice(&bytes[*start..*stop]);
    }
    out.resize(out.len() + padding8(out.len()), 0);
    out.extend_from_slice(&[field::SENDER, 1, b's', 0]);
    out.extend_from_slice(&write_u32(endian, sender.len() as u32));
    out.extend_from_slice(sender.as_bytes());
    out.push(0);
    let new_fields_len = out.len() - FIXED_HEADER_LEN;
    out[12..16].copy_from_slice(&write_u32(endian, new_fields_len as u32));
    out.resize(out.len() + padding8(out.len()), 0);
    out.extend_from_slice(body);

    let fds = take_fds(kept.unix_fds as usize)
        .ok_or_else(|| WireError::BadHeader("file descriptors announced but not sent".into()))?;
    // SAFETY: `from_bytes` is unsafe only because it trusts the encoding of the body; the header
    // is parsed and checked by it, and the body is checked with `validate` right after.
    let msg = unsafe { Message::from_bytes(Data::new_fds(out, Context::new(endian, 0), fds)) }
        .map_err(WireError::Invalid)?;
    msg.body().validate().map_err(WireError::Invalid)?;
    Ok(msg)
}

/// The facts about a message that routing needs, borrowed from its header.
pub struct Route<'m> {
    pub msg_type: Type,
    pub serial: u32,
    pub no_reply_expected: bool,
    pub no_auto_start: bool,
    pub path: Option<&'m str>,
    pub interface: Option<&'m str>,
    pub member: Option<&'m str>,
    pub error_name: Option<&'m str>,
    pub destination: Option<&'m str>,
    pub reply_serial: Option<u32>,
    pub unix_fds: u32,
}

impl<'m> Route<'m> {
    pub fn of(header: &'m zbus::message::Header<'m>) -> Self {
        use zbus::message::Flags;
        let flags = header.primary().flags();
        Route {
            msg_type: header.message_type(),
            serial: header.primary().serial_num().get(),
            no_reply_expected: flags.contains(Flags::NO_REPLY_EXPECTED),
            no_auto_start: flags.contains(Flags::NO_AUTO_START),
            path: header.path().map(|p| p.as_str()),
            interface: header.interface().map(|i| i.as_str()),
            member: header.member().map(|m| m.as_str()),
            error_name: header.error_name().map(|e| e.as_str()),
            destination: header.destination().map(|d| d.as_str()),
            reply_serial: header.reply_serial().map(|s| s.get()),
            unix_fds: header.unix_fds().unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call_bytes(endian: Endian) -> Vec<u8> {
        let msg = Message::method_call("/a/b", "Ping")
            .interface("org.example.I")
            .destination("org.example.S")
            .build(&("hello", 7u32))
            .unwrap();
        let bytes = msg.data().bytes().to_vec();
        if endian == Endian::Little {
            assert_eq!(bytes[0], b'l');
        }
        bytes
    }

    #[test]
    fn length_needs_the_fixed_header() {
        let bytes = call_bytes(Endian::Little);
        assert!(
            message_len(&bytes[..10], MAX_MESSAGE_SIZE)
                .unwrap()
                .is_none()
        );
        assert_eq!(
            message_len(&bytes, MAX_MESSAGE_SIZE).unwrap(),
            Some(bytes.len())
        );
        assert!(matches!(
            message_len(&bytes, 20),
            Err(WireError::TooLarge(_))
        ));
    }

    #[test]
    fn bad_endianness_and_version_are_refused() {
        let mut bytes = call_bytes(Endian::Little);
        bytes[0] = b'x';
        assert!(matches!(
            message_len(&bytes, MAX_MESSAGE_SIZE),
            Err(WireError::BadEndian(b'x'))
        ));
        let mut bytes = call_bytes(Endian::Little);
        bytes[3] = 2;
        assert!(matches!(
            message_len(&bytes, MAX_MESSAGE_SIZE),
            Err(WireError::BadVersion(2))
        ));
    }

    #[test]
    fn stamping_sets_the_sender_and_keeps_the_rest() {
        let bytes = call_bytes(Endian::Little);
        let msg = stamp_client_message(&bytes, ":1.42", |n| {
            assert_eq!(n, 0);
            Some(vec![])
        })
        .unwrap();
        let header = msg.header();
        assert_eq!(header.sender().unwrap().as_str(), ":1.42");
        assert_eq!(header.path().unwrap().as_str(), "/a/b");
        assert_eq!(header.member().unwrap().as_str(), "Ping");
        assert_eq!(header.destination().unwrap().as_str(), "org.example.S");
        let (s, n): (String, u32) = msg.body().deserialize().unwrap();
        assert_eq!((s.as_str(), n), ("hello", 7));
    }

    #[test]
    fn a_forged_sender_is_replaced() {
        let msg = Message::signal("/", "org.example.I", "Sig")
            .sender("org.freedesktop.DBus")
            .build(&())
            .unwrap();
        let stamped = stamp_client_message(msg.data().bytes(), ":1.7", |_| Some(vec![])).unwrap();
        assert_eq!(stamped.header().sender().unwrap().as_str(), ":1.7");
    }

    /// Append a header field with an unknown code and a structured value to a message.
    fn with_unknown_field(bytes: &[u8]) -> Vec<u8> {
        let endian = Endian::Little;
        let fields_len = read_u32(endian, &bytes[12..16]) as usize;
        let header_len = FIXED_HEADER_LEN + fields_len;
        let body = &bytes[header_len + padding8(header_len)..];
        let mut out = bytes[..header_len].to_vec();
        out.resize(out.len() + padding8(out.len()), 0);
        // code 42, variant of signature "(us)": u32 5, string "xy"
        out.extend_from_slice(&[42, 4, b'(', b'u', b's', b')', 0]);
        out.resize(out.len() + padding8(out.len()), 0);
        out.extend_from_slice(&5u32.to_le_bytes());
        out.extend_from_slice(&2u32.to_le_bytes());
        out.extend_from_slice(b"xy\0");
        let new_len = out.len() - FIXED_HEADER_LEN;
        out[12..16].copy_from_slice(&(new_len as u32).to_le_bytes());
        out.resize(out.len() + padding8(out.len()), 0);
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn unknown_fields_are_dropped() {
        let bytes = with_unknown_field(&call_bytes(Endian::Little));
        assert_eq!(
            message_len(&bytes, MAX_MESSAGE_SIZE).unwrap(),
            Some(bytes.len())
        );
        let msg = stamp_client_message(&bytes, ":1.1", |_| Some(vec![])).unwrap();
        assert_eq!(msg.header().member().unwrap().as_str(), "Ping");
        let (s, _): (String, u32) = msg.body().deserialize().unwrap();
        assert_eq!(s, "hello");
    }

    #[test]
    fn a_field_of_the_wrong_type_is_refused() {
        let mut bytes = call_bytes(Endian::Little);
        // The first field is PATH ('o'): claim it is a string.
        assert_eq!(bytes[16], field::PATH);
        bytes[18] = b's';
        assert!(matches!(
            stamp_client_message(&bytes, ":1.1", |_| Some(vec![])),
            Err(WireError::BadHeader(_))
        ));
    }

    #[test]
    fn a_body_that_does_not_match_its_signature_is_refused() {
        let mut bytes = call_bytes(Endian::Little);
        let n = bytes.len();
        // Corrupt the string's terminating NUL.
        let nul = n - 5;
        assert_eq!(bytes[nul], 0);
        bytes[nul] = b'!';
        assert!(stamp_client_message(&bytes, ":1.1", |_| Some(vec![])).is_err());
    }

    #[test]
    fn missing_fds_are_refused() {
        let bytes = call_bytes(Endian::Little);
        assert!(stamp_client_message(&bytes, ":1.1", |_| None).is_err());
    }

    #[test]
    fn big_endian_messages_are_stamped_in_their_own_order() {
        // Build a big-endian message by hand: a signal with no body.
        let mut out = vec![b'B', 4, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0];
        let push_str_field = |out: &mut Vec<u8>, code: u8, ty: u8, s: &str| {
            out.resize(out.len() + padding8(out.len()), 0);
            out.extend_from_slice(&[code, 1, ty, 0]);
            out.extend_from_slice(&(s.len() as u32).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
            out.push(0);
        };
        push_str_field(&mut out, field::PATH, b'o', "/x");
        push_str_field(&mut out, field::INTERFACE, b's', "a.b");
        push_str_field(&mut out, field::MEMBER, b's', "C");
        let len = (out.len() - FIXED_HEADER_LEN) as u32;
        out[12..16].copy_from_slice(&len.to_be_bytes());
        out.resize(out.len() + padding8(out.len()), 0);
        let msg = stamp_client_message(&out, ":1.9", |_| Some(vec![])).unwrap();
        assert_eq!(msg.data().bytes()[0], b'B');
        assert_eq!(msg.header().sender().unwrap().as_str(), ":1.9");
        assert_eq!(msg.header().primary().serial_num().get(), 9);
    }
}
