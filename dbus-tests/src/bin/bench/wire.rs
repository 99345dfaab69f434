//! Pre-marshalled messages, and the few header fields the benchmark clients read back.
//!
//! Every message a client sends is built once with zbus's message builder (a [`Template`]) and
//! then copied with a new serial (and reply serial) patched in, so that sending costs a
//! `memcpy` and the broker, not the client, is what the benchmark measures. Reading is as
//! frugal: [`parse_header`] walks the header fields without building a `zbus::Message`
//! (zbus's parser is `unsafe` to call on bytes and far more than a benchmark client needs).

use std::ops::Range;

use zbus::Message;

/// Message types (the second byte of a message).
pub const METHOD_CALL: u8 = 1;
pub const METHOD_RETURN: u8 = 2;
pub const ERROR: u8 = 3;
pub const SIGNAL: u8 = 4;

/// The fixed part of a header: endianness, type, flags, version, body length, serial, and the
/// length of the header-field array.
const FIXED_HEADER: usize = 16;

/// A message built once, sent many times with a fresh serial.
#[derive(Clone, Debug)]
pub struct Template {
    bytes: Vec<u8>,
    little_endian: bool,
    reply_serial_at: Option<usize>,
}

impl Template {
    pub fn new(message: &Message) -> Self {
        let bytes = message.data().bytes().to_vec();
        let header = parse_header(&bytes).expect("zbus builds messages this parser reads");
        Template {
            little_endian: header.little_endian,
            reply_serial_at: header.reply_serial_at,
            bytes,
        }
    }

    /// Append a copy with `serial` (and `reply_serial`, for a template that has one).
    pub fn append_to(&self, out: &mut Vec<u8>, serial: u32, reply_serial: Option<u32>) {
        let start = out.len();
        out.extend_from_slice(&self.bytes);
        let copy = &mut out[start..];
        put_u32(copy, 8, serial, self.little_endian);
        if let (Some(at), Some(value)) = (self.reply_serial_at, reply_serial) {
            put_u32(copy, at, value, self.little_endian);
        }
    }
}

/// What a client needs to know about a received message.
#[derive(Clone, Debug)]
pub struct Header {
    pub kind: u8,
    pub serial: u32,
    pub reply_serial: Option<u32>,
    pub member: Option<Range<usize>>,
    pub error_name: Option<Range<usize>>,
    /// Where the body starts; it runs to the end of the message.
    pub body_at: usize,
    little_endian: bool,
    reply_serial_at: Option<usize>,
}

impl Header {
    /// The body's first string, for a body that starts with one (a Hello reply).
    pub fn first_string<'m>(&self, message: &'m [u8]) -> Option<&'m str> {
        let len = get_u32(message, self.body_at, self.little_endian)? as usize;
        let text = message.get(self.body_at + 4..self.body_at + 4 + len)?;
        std::str::from_utf8(text).ok()
    }
}

/// The length of the message at the start of `buf`, once its fixed header is there.
pub fn message_len(buf: &[u8]) -> Option<usize> {
    if buf.len() < FIXED_HEADER {
        return None;
    }
    let little_endian = buf[0] == b'l';
    let body = get_u32(buf, 4, little_endian)? as usize;
    let fields = get_u32(buf, 12, little_endian)? as usize;
    Some(align8(FIXED_HEADER + fields) + body)
}

/// The header of one whole message.
pub fn parse_header(msg: &[u8]) -> Result<Header, String> {
    let little_endian = match msg.first() {
        Some(b'l') => true,
        Some(b'B') => false,
        other => return Err(format!("bad endianness byte {other:?}")),
    };
    let short = || "message shorter than its header".to_string();
    let kind = *msg.get(1).ok_or_else(short)?;
    let serial = get_u32(msg, 8, little_endian).ok_or_else(short)?;
    let fields_end = FIXED_HEADER + get_u32(msg, 12, little_endian).ok_or_else(short)? as usize;
    let mut header = Header {
        kind,
        serial,
        reply_serial: None,
        member: None,
        error_name: None,
        body_at: align8(fields_end),
        little_endian,
        reply_serial_at: None,
    };
    let mut at = FIXED_HEADER;
    while at < fields_end {
        at = align8(at);
        let code = *msg.get(at).ok_or_else(short)?;
        let sig_len = *msg.get(at + 1).ok_or_else(short)? as usize;
        let signature = msg.get(at + 2..at + 2 + sig_len).ok_or_else(short)?;
        at += 3 + sig_len;
        match signature {
            b"u" => {
                at = align4(at);
                if code == 5 {
                    header.reply_serial = get_u32(msg, at, little_endian);
                    header.reply_serial_at = Some(at);
                }
                at += 4;
            }
            b"s" | b"o" => {
                at = align4(at);
                let len = get_u32(msg, at, little_endian).ok_or_else(short)? as usize;
                let text = at + 4..at + 4 + len;
                match code {
                    3 => header.member = Some(text),
                    4 => header.error_name = Some(text),
                    _ => {}
                }
                at += 4 + len + 1;
            }
            b"g" => {
                let len = *msg.get(at).ok_or_else(short)? as usize;
                at += 1 + len + 1;
            }
            other => {
                return Err(format!(
                    "header field {code} of type {:?} is not one a bus sends",
                    String::from_utf8_lossy(other)
                ));
            }
        }
    }
    Ok(header)
}

fn align4(at: usize) -> usize {
    (at + 3) & !3
}

fn align8(at: usize) -> usize {
    (at + 7) & !7
}

fn get_u32(buf: &[u8], at: usize, little_endian: bool) -> Option<u32> {
    let bytes: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
    Some(if little_endian {
        u32::from_le_bytes(bytes)
    } else {
        u32::from_be_bytes(bytes)
    })
}

fn put_u32(buf: &mut [u8], at: usize, value: u32, little_endian: bool) {
    let bytes = if little_endian {
        value.to_le_bytes()
    } else {
        value.to_be_bytes()
    };
    buf[at..at + 4].copy_from_slice(&bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    #[test]
    fn serials_are_patched_where_zbus_put_them() {
        let call = Message::method_call("/a", "Ping")
            .sender(":1.7")
            .serial(NonZeroU32::new(77).unwrap())
            .build(&())
            .unwrap();
        let reply = Message::method_return(&call.header()).build(&()).unwrap();
        let template = Template::new(&reply);
        let mut out = Vec::new();
        template.append_to(&mut out, 5, Some(99));
        assert_eq!(message_len(&out), Some(out.len()));
        let header = parse_header(&out).unwrap();
        assert_eq!(header.kind, METHOD_RETURN);
        assert_eq!(header.serial, 5);
        assert_eq!(header.reply_serial, Some(99));
    }

    #[test]
    fn member_error_name_and_body_are_found() {
        let signal = Message::signal("/a", "org.example.I", "Tick")
            .build(&("hello",))
            .unwrap();
        let bytes = signal.data().bytes();
        let header = parse_header(bytes).unwrap();
        assert_eq!(header.kind, SIGNAL);
        assert_eq!(&bytes[header.member.clone().unwrap()], b"Tick");
        assert_eq!(header.first_string(bytes), Some("hello"));
    }
}
