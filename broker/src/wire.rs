//! The D-Bus wire format as the broker needs it: framing a byte stream into messages, and
//! rewriting a client's header before the message is passed on.
//!
//! Every message a client sends is rewritten once: the bus stamps the SENDER field with the
//! client's unique name and drops header fields it does not know (dbus-daemon's
//! "HeaderFiltering"), then the same bytes go to every recipient. The body is copied as it is,
//! never re-marshalled.
//!
//! The bus checks every message itself, header ([`BusMessage::checked`]) and body ([`body`]),
//! and reads the header fields routing needs from where they lie in the bytes: making a zbus
//! `Message` parses the header once more, which cost a fifth of the broker's time per forwarded
//! call. A zbus `Message` is made only where one is needed (the bus driver, errors, polkit) and
//! takes every message the bus takes (the wire_message fuzz target checks that).

pub mod body;

use std::cell::OnceCell;
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
    BadBody(body::BodyError),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::BadEndian(b) => write!(f, "invalid endianness byte {b:#04x}"),
            WireError::BadVersion(v) => write!(f, "unsupported protocol version {v}"),
            WireError::TooLarge(n) => write!(f, "message of {n} bytes exceeds the limit"),
            WireError::BadHeader(why) => write!(f, "malformed header: {why}"),
            WireError::BadBody(e) => write!(f, "{e}"),
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

/// Take a complete message from a client, stamp `sender` on it and drop unknown header fields
/// ([`restamp`]), then check the result the way the bus takes any message ([`BusMessage::checked`]).
///
/// `take_fds` supplies the file descriptors that came with the message, given how many its
/// header announces; it fails if fewer arrived.
pub fn stamp_client_message(
    bytes: &[u8],
    sender: &str,
    take_fds: impl FnOnce(usize) -> Option<Vec<OwnedFd>>,
) -> Result<BusMessage, WireError> {
    let endian = endian_of(bytes[0])?;
    let (out, unix_fds) = restamp(bytes, sender)?;
    let fds = take_fds(unix_fds as usize)
        .ok_or_else(|| WireError::BadHeader("file descriptors announced but not sent".into()))?;
    BusMessage::checked(Data::new_fds(out, Context::new(endian, 0), fds))
}

/// A client's message with `sender` in its SENDER field and only the header fields the bus
/// knows: the layout of the header is checked, the values are not (see [`BusMessage::checked`]).
/// Also returns how many file descriptors the header announces.
pub fn restamp(bytes: &[u8], sender: &str) -> Result<(Vec<u8>, u32), WireError> {
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
    Ok((out, kept.unix_fds))
}

/// Where a string field's value lies in a message: start and end (its NUL) in the bytes.
type Span = Option<(u32, u32)>;

/// Where the header fields of a message lie, found in one walk over the header.
#[derive(Clone, Copy, Default)]
struct FieldSpans {
    path: Span,
    interface: Span,
    member: Span,
    error_name: Span,
    destination: Span,
    sender: Span,
    signature: Span,
    reply_serial: Option<u32>,
    unix_fds: u32,
}

/// A message as the bus routes it: its bytes (stamped with the sender's unique name) and file
/// descriptors, where its header fields lie, and zbus's view of it, made only when something
/// needs more than the header: the bus driver, monitors, argument matching, polkit.
///
/// Making a zbus `Message` parses and validates the header once more; it was a fifth of the
/// broker's time per forwarded call, so the routing path reads the header from here instead.
/// Clones share the bytes.
#[derive(Clone)]
pub struct BusMessage {
    data: Data<'static, 'static>,
    msg_type: Type,
    flags: u8,
    serial: u32,
    spans: FieldSpans,
    zbus: OnceCell<Message>,
}

impl BusMessage {
    /// Take a message the bus received (after [`restamp`]), checking what the specification
    /// requires of it: a known type, a serial, valid names, path and signature in the header
    /// fields, the fields its type needs, the descriptors it announces, and a body that holds
    /// what its signature says.
    ///
    /// zbus would accept every message this accepts (the wire_message fuzz target checks it),
    /// so [`BusMessage::zbus`] never fails.
    pub fn checked(data: Data<'static, 'static>) -> Result<Self, WireError> {
        let bad = |why: &str| WireError::BadHeader(why.to_string());
        let bytes = data.bytes();
        if bytes.len() < FIXED_HEADER_LEN {
            return Err(bad("truncated header"));
        }
        let endian = endian_of(bytes[0])?;
        if bytes[3] != 1 {
            return Err(WireError::BadVersion(bytes[3]));
        }
        let msg_type = match bytes[1] {
            1 => Type::MethodCall,
            2 => Type::MethodReturn,
            3 => Type::Error,
            4 => Type::Signal,
            other => return Err(bad(&format!("unknown message type {other}"))),
        };
        let serial = read_u32(endian, &bytes[8..12]);
        if serial == 0 {
            return Err(bad("serial 0"));
        }
        let (spans, body_offset) = locate_fields(bytes, endian, true)?;
        let present = match msg_type {
            Type::MethodCall => spans.path.is_some() && spans.member.is_some(),
            Type::MethodReturn => spans.reply_serial.is_some(),
            Type::Error => spans.error_name.is_some() && spans.reply_serial.is_some(),
            Type::Signal => {
                spans.path.is_some() && spans.interface.is_some() && spans.member.is_some()
            }
        };
        if !present {
            return Err(bad("a field its type requires is missing"));
        }
        if data.fds().len() < spans.unix_fds as usize {
            return Err(bad("file descriptors announced but not sent"));
        }
        if body_offset > bytes.len() {
            return Err(bad("header overruns the message"));
        }
        let flags = bytes[2];
        let msg = BusMessage {
            msg_type,
            flags,
            serial,
            spans,
            zbus: OnceCell::new(),
            data,
        };
        msg.validate_body(body_offset, endian)?;
        Ok(msg)
    }

    /// Check the body against the signature.
    fn validate_body(&self, body_offset: usize, endian: Endian) -> Result<(), WireError> {
        let signature = self.spans.signature.map_or(&[][..], |(start, end)| {
            &self.data.bytes()[start as usize..end as usize]
        });
        body::validate_body(
            &self.data.bytes()[body_offset..],
            signature,
            endian,
            self.spans.unix_fds,
        )
        .map_err(WireError::BadBody)
    }

    /// A message zbus built (the bus driver's replies, errors and signals).
    pub fn from_zbus(msg: Message) -> Self {
        let data = msg.data().clone();
        let bytes = data.bytes();
        let endian = if bytes[0] == b'B' {
            Endian::Big
        } else {
            Endian::Little
        };
        // zbus built it, so its layout is right: the walk only notes where the fields are.
        let (spans, _) = locate_fields(bytes, endian, false).unwrap_or_default();
        BusMessage {
            msg_type: msg.message_type(),
            flags: bytes[2],
            serial: read_u32(endian, &bytes[8..12]),
            spans,
            zbus: OnceCell::from(msg),
            data,
        }
    }

    /// The bytes and descriptors, as they are written to every recipient.
    pub fn data(&self) -> &Data<'static, 'static> {
        &self.data
    }

    /// zbus's view of the message, made the first time it is asked for.
    pub fn zbus(&self) -> &Message {
        self.zbus.get_or_init(|| {
            // SAFETY: the body was checked against its signature in `checked`. zbus's header
            // parser takes every header `checked` takes: the wire_message fuzz target checks it.
            unsafe { Message::from_bytes(self.data.clone()) }
                .expect("zbus takes every message BusMessage::checked takes")
        })
    }

    /// The header facts routing needs.
    pub fn route(&self) -> Route<'_> {
        let text = |span: Span| {
            span.and_then(|(start, end)| {
                std::str::from_utf8(&self.data.bytes()[start as usize..end as usize]).ok()
            })
        };
        let s = &self.spans;
        Route {
            msg_type: self.msg_type,
            serial: self.serial,
            no_reply_expected: self.flags & 0x1 != 0,
            no_auto_start: self.flags & 0x2 != 0,
            path: text(s.path),
            interface: text(s.interface),
            member: text(s.member),
            error_name: text(s.error_name),
            destination: text(s.destination),
            sender: text(s.sender),
            signature: text(s.signature).unwrap_or(""),
            reply_serial: s.reply_serial,
            unix_fds: s.unix_fds,
        }
    }
}

/// Walk the header fields of a message whose unknown fields the bus dropped, noting where each
/// lies; with `validate`, also check each value (names, path, signature) as zbus would. Returns
/// the spans and where the body starts.
fn locate_fields(
    bytes: &[u8],
    endian: Endian,
    validate: bool,
) -> Result<(FieldSpans, usize), WireError> {
    use zbus_utils::{names, object_path, signature};
    let bad = |why: &str| WireError::BadHeader(why.to_string());
    let fields_len = read_u32(endian, &bytes[12..16]) as usize;
    let end = FIXED_HEADER_LEN + fields_len;
    if end > bytes.len() {
        return Err(bad("field array overruns the message"));
    }
    let mut spans = FieldSpans::default();
    let mut seen = 0u32;
    let mut pos = FIXED_HEADER_LEN;
    while pos < end {
        let padding = padding8(pos);
        // [`restamp`] writes zeros there; a header from elsewhere must have them too, as zbus
        // (and libdbus) require.
        if validate && bytes[pos..(pos + padding).min(end)].iter().any(|&b| b != 0) {
            return Err(bad("padding is not zero"));
        }
        pos += padding;
        if pos + 4 > end {
            return Err(bad("truncated field"));
        }
        let (code, ty) = (bytes[pos], bytes[pos + 2]);
        if bytes[pos + 1] != 1 || bytes[pos + 3] != 0 || expected_signature(code) != Some(ty) {
            return Err(bad(&format!("field {code} has the wrong type")));
        }
        // Known codes are below 32 (expected_signature said so).
        if seen & (1 << code) != 0 {
            return Err(bad(&format!("field {code} appears twice")));
        }
        seen |= 1 << code;
        pos += 4;
        if ty == b'u' {
            if pos + 4 > end {
                return Err(bad("truncated field"));
            }
            let value = read_u32(endian, &bytes[pos..pos + 4]);
            if code == field::UNIX_FDS {
                spans.unix_fds = value;
            } else {
                spans.reply_serial = Some(value);
            }
            pos += 4;
            continue;
        }
        let (start, len) = if ty == b'g' {
            (pos + 1, bytes[pos] as usize)
        } else {
            if pos + 4 > end {
                return Err(bad("truncated field"));
            }
            (pos + 4, read_u32(endian, &bytes[pos..pos + 4]) as usize)
        };
        let stop = start + len;
        if stop >= end || bytes[stop] != 0 {
            return Err(bad("truncated string"));
        }
        let value = &bytes[start..stop];
        if validate {
            let valid = match code {
                field::PATH => object_path::validate(value).is_ok(),
                field::INTERFACE => names::validate_interface_name(value).is_ok(),
                field::MEMBER => names::validate_member_name(value).is_ok(),
                field::ERROR_NAME => names::validate_error_name(value).is_ok(),
                field::DESTINATION => names::validate_bus_name(value).is_ok(),
                field::SENDER => names::validate_unique_name(value).is_ok(),
                _ => signature::validate(value).is_ok(),
            };
            if !valid {
                return Err(bad(&format!(
                    "field {code} is not valid: {:?}",
                    String::from_utf8_lossy(value)
                )));
            }
        }
        let span = Some((start as u32, stop as u32));
        match code {
            field::PATH => spans.path = span,
            field::INTERFACE => spans.interface = span,
            field::MEMBER => spans.member = span,
            field::ERROR_NAME => spans.error_name = span,
            field::DESTINATION => spans.destination = span,
            field::SENDER => spans.sender = span,
            _ => spans.signature = span,
        }
        pos = stop + 1;
    }
    let body_offset = end + padding8(end);
    if validate
        && bytes[end..body_offset.min(bytes.len())]
            .iter()
            .any(|&b| b != 0)
    {
        return Err(bad("padding after the header is not zero"));
    }
    Ok((spans, body_offset))
}

/// The facts about a message that routing needs, borrowed from its bytes.
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
    pub sender: Option<&'m str>,
    /// The body's signature ("" for none).
    pub signature: &'m str,
    pub reply_serial: Option<u32>,
    pub unix_fds: u32,
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
        let header = msg.zbus().header();
        assert_eq!(header.sender().unwrap().as_str(), ":1.42");
        assert_eq!(header.path().unwrap().as_str(), "/a/b");
        assert_eq!(header.member().unwrap().as_str(), "Ping");
        assert_eq!(header.destination().unwrap().as_str(), "org.example.S");
        let (s, n): (String, u32) = msg.zbus().body().deserialize().unwrap();
        assert_eq!((s.as_str(), n), ("hello", 7));
        // The bus's own reading of the header says the same as zbus's.
        let route = msg.route();
        assert_eq!(route.sender, Some(":1.42"));
        assert_eq!(route.path, Some("/a/b"));
        assert_eq!(route.interface, Some("org.example.I"));
        assert_eq!(route.member, Some("Ping"));
        assert_eq!(route.destination, Some("org.example.S"));
        assert_eq!(route.signature, "su");
        assert_eq!(route.msg_type, Type::MethodCall);
        assert_eq!(route.serial, header.primary().serial_num().get());
        assert_eq!(route.reply_serial, None);
        assert!(!route.no_reply_expected);
    }

    #[test]
    fn a_forged_sender_is_replaced() {
        let msg = Message::signal("/", "org.example.I", "Sig")
            .sender("org.freedesktop.DBus")
            .build(&())
            .unwrap();
        let stamped = stamp_client_message(msg.data().bytes(), ":1.7", |_| Some(vec![])).unwrap();
        assert_eq!(stamped.zbus().header().sender().unwrap().as_str(), ":1.7");
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
        assert_eq!(msg.zbus().header().member().unwrap().as_str(), "Ping");
        let (s, _): (String, u32) = msg.zbus().body().deserialize().unwrap();
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

    /// Stamp `bytes` after `change` edits them; Err if the bus refuses them.
    fn stamp_changed(change: impl FnOnce(&mut Vec<u8>)) -> Result<BusMessage, WireError> {
        let mut bytes = call_bytes(Endian::Little);
        change(&mut bytes);
        stamp_client_message(&bytes, ":1.1", |_| Some(vec![]))
    }

    fn replace(bytes: &mut [u8], from: &[u8], to: &[u8]) {
        let at = bytes
            .windows(from.len())
            .position(|w| w == from)
            .expect("text in the message");
        bytes[at..at + to.len()].copy_from_slice(to);
    }

    #[test]
    fn header_values_are_checked() {
        assert!(stamp_changed(|_| {}).is_ok());
        // Names, path and the body signature must each be valid.
        assert!(stamp_changed(|b| replace(b, b"Ping", b"Pi-g")).is_err());
        assert!(stamp_changed(|b| replace(b, b"org.example.I", b"org..xample.I")).is_err());
        assert!(stamp_changed(|b| replace(b, b"org.example.S", b"org.example.$")).is_err());
        assert!(stamp_changed(|b| replace(b, b"/a/b", b"/a//")).is_err());
        assert!(stamp_changed(|b| replace(b, b"su\0", b"s(\0")).is_err());
    }

    #[test]
    fn type_and_serial_are_checked() {
        assert!(stamp_changed(|b| b[1] = 0).is_err());
        assert!(stamp_changed(|b| b[1] = 5).is_err());
        assert!(stamp_changed(|b| b[8..12].copy_from_slice(&[0; 4])).is_err());
        // A method call needs a member: as a signal it also needs an interface, which it
        // has; as an error it needs an error name and a reply serial, which it has not.
        assert!(stamp_changed(|b| b[1] = 4).is_ok());
        assert!(stamp_changed(|b| b[1] = 3).is_err());
        assert!(stamp_changed(|b| b[1] = 2).is_err());
    }

    #[test]
    fn checked_refuses_what_restamp_never_writes() {
        let ctx = Context::new(Endian::Little, 0);
        let ok = |bytes: Vec<u8>| BusMessage::checked(Data::new(bytes, ctx)).is_ok();
        let (out, _) = restamp(&call_bytes(Endian::Little), ":1.1").unwrap();
        assert!(ok(out.clone()));
        // The first field, PATH "/a/b", ends at 29: padding follows up to 32.
        assert_eq!(out[16], field::PATH);
        let mut bytes = out.clone();
        bytes[29] = 1;
        assert!(!ok(bytes));
        // The padding between the header and the body.
        let header_end = FIXED_HEADER_LEN + read_u32(Endian::Little, &out[12..16]) as usize;
        if !header_end.is_multiple_of(8) {
            let mut bytes = out.clone();
            bytes[header_end] = 1;
            assert!(!ok(bytes));
        }
        // A field that comes twice.
        let signal = |fields: &[(u8, u8, &str)]| {
            let mut bytes = vec![b'l', 4, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0];
            for &(code, ty, text) in fields {
                bytes.resize(bytes.len() + padding8(bytes.len()), 0);
                bytes.extend_from_slice(&[code, 1, ty, 0]);
                bytes.extend_from_slice(&(text.len() as u32).to_le_bytes());
                bytes.extend_from_slice(text.as_bytes());
                bytes.push(0);
            }
            let len = (bytes.len() - FIXED_HEADER_LEN) as u32;
            bytes[12..16].copy_from_slice(&len.to_le_bytes());
            bytes.resize(bytes.len() + padding8(bytes.len()), 0);
            bytes
        };
        let once = [
            (field::PATH, b'o', "/x"),
            (field::INTERFACE, b's', "a.b"),
            (field::MEMBER, b's', "C"),
        ];
        assert!(ok(signal(&once)));
        let twice = [once[0], once[1], once[2], (field::MEMBER, b's', "D")];
        assert!(!ok(signal(&twice)));
    }

    #[test]
    fn flags_are_read() {
        let msg = stamp_changed(|b| b[2] = 0x3).unwrap();
        let route = msg.route();
        assert!(route.no_reply_expected && route.no_auto_start);
    }

    #[test]
    fn a_message_zbus_built_reads_the_same() {
        let call = Message::method_call("/x", "Y")
            .destination(":1.5")
            .serial(std::num::NonZeroU32::new(3).unwrap())
            .build(&())
            .unwrap();
        let reply = Message::error(&call.header(), "org.example.Error.E")
            .sender("org.freedesktop.DBus")
            .build(&("why",))
            .unwrap();
        let msg = BusMessage::from_zbus(reply);
        let route = msg.route();
        assert_eq!(route.msg_type, Type::Error);
        assert_eq!(route.error_name, Some("org.example.Error.E"));
        assert_eq!(route.reply_serial, Some(3));
        assert_eq!(route.sender, Some("org.freedesktop.DBus"));
        assert_eq!(route.signature, "s");
        assert_eq!(route.path, None);
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
        assert_eq!(msg.zbus().header().sender().unwrap().as_str(), ":1.9");
        assert_eq!(msg.zbus().header().primary().serial_num().get(), 9);
    }
}
