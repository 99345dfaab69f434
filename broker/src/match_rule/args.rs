//! The arguments that `argN` keys test, read straight from a message's bytes.
//!
//! zbus can deserialize a body, but for this it is the wrong tool: it builds a value of every
//! argument (allocating for each string and container) where matching wants to borrow a few
//! strings and step over the rest, and its parsed signature cannot tell a body of two strings
//! (`ss`) from a body of one structure (`(ss)`), which dbus-daemon treats differently (`arg0`
//! of the second is a structure, not a string). So this reads the SIGNATURE header field and
//! walks the body by the D-Bus marshalling rules: strings are borrowed, arrays are skipped by
//! their length without looking inside, and nothing is allocated. It never panics on malformed
//! bytes: a message it cannot read simply has no more arguments from that point.

use std::cell::OnceCell;

/// The highest argument count a rule can test (`arg0` to `arg63`).
const ARGS: usize = super::MAX_ARG as usize + 1;

/// The deepest nesting of structures and variants this reader follows; the specification
/// allows 64 in all, and a message that a bus has validated has no more.
const MAX_DEPTH: u32 = 64;

/// The SIGNATURE header field's code.
const SIGNATURE_FIELD: u8 = 8;

/// One argument as matching sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg<'m> {
    /// A STRING.
    Str(&'m str),
    /// An OBJECT_PATH.
    Path(&'m str),
    /// Anything else.
    Other,
}

/// The first 64 arguments of a message, read on first use.
pub struct LazyArgs<'m> {
    message: &'m [u8],
    args: OnceCell<Args<'m>>,
}

impl<'m> LazyArgs<'m> {
    pub fn new(message: &'m [u8]) -> Self {
        LazyArgs {
            message,
            args: OnceCell::new(),
        }
    }

    /// Argument `index`, or None if the message has fewer arguments.
    pub fn get(&self, index: usize) -> Option<Arg<'m>> {
        self.args
            .get_or_init(|| Args::read(self.message))
            .get(index)
    }
}

struct Args<'m> {
    items: [Arg<'m>; ARGS],
    len: usize,
}

impl<'m> Args<'m> {
    fn get(&self, index: usize) -> Option<Arg<'m>> {
        self.items[..self.len].get(index).copied()
    }

    /// The arguments of the whole message `bytes` (header and body).
    fn read(bytes: &'m [u8]) -> Self {
        let mut args = Args {
            items: [Arg::Other; ARGS],
            len: 0,
        };
        let Some((reader, signature, mut pos)) = Reader::body(bytes) else {
            return args;
        };
        let mut i = 0;
        while i < signature.len() && args.len < ARGS {
            let Some(end) = type_end(signature, i) else {
                break;
            };
            let ty = &signature[i..end];
            let read = match ty {
                b"s" => reader.string(pos).map(|(s, next)| (Arg::Str(s), next)),
                b"o" => reader.string(pos).map(|(s, next)| (Arg::Path(s), next)),
                _ => reader.skip(ty, pos, 0).map(|next| (Arg::Other, next)),
            };
            let Some((arg, next)) = read else {
                break;
            };
            args.items[args.len] = arg;
            args.len += 1;
            pos = next;
            i = end;
        }
        args
    }
}

/// Where the single complete type starting at `sig[i]` ends.
fn type_end(sig: &[u8], i: usize) -> Option<usize> {
    match *sig.get(i)? {
        b'a' => type_end(sig, i + 1),
        open @ (b'(' | b'{') => {
            let close = if open == b'(' { b')' } else { b'}' };
            let mut j = i + 1;
            while *sig.get(j)? != close {
                j = type_end(sig, j)?;
            }
            Some(j + 1)
        }
        _ => Some(i + 1),
    }
}

/// The alignment of values of the type that starts with `code`.
fn alignment(code: u8) -> usize {
    match code {
        b'n' | b'q' => 2,
        b'b' | b'i' | b'u' | b'h' | b's' | b'o' | b'a' => 4,
        b'x' | b't' | b'd' | b'(' | b'{' => 8,
        _ => 1,
    }
}

fn align(pos: usize, to: usize) -> usize {
    pos.next_multiple_of(to)
}

/// Reads values out of a message's bytes. Positions count from the start of the message,
/// which is what D-Bus alignment is relative to.
struct Reader<'m> {
    bytes: &'m [u8],
    big_endian: bool,
}

impl<'m> Reader<'m> {
    /// A reader limited to the message's body, the body's signature, and where the body starts.
    fn body(bytes: &'m [u8]) -> Option<(Self, &'m [u8], usize)> {
        let big_endian = match bytes.first()? {
            b'l' => false,
            b'B' => true,
            _ => return None,
        };
        let header = Reader { bytes, big_endian };
        let body_len = header.u32(4)? as usize;
        let fields_end = 16usize.checked_add(header.u32(12)? as usize)?;
        let mut signature: &[u8] = b"";
        let mut pos = 16;
        while pos < fields_end {
            // Each field is a structure (code, variant), aligned to 8.
            pos = align(pos, 8);
            let code = *bytes.get(pos)?;
            let (field_type, value_pos) = header.signature(pos + 1)?;
            if code == SIGNATURE_FIELD && field_type == b"g" {
                let (sig, next) = header.signature(value_pos)?;
                signature = sig;
                pos = next;
            } else {
                if type_end(field_type, 0)? != field_type.len() {
                    return None;
                }
                pos = header.skip(field_type, value_pos, 0)?;
            }
        }
        let body_start = align(fields_end, 8);
        let body_end = body_start.checked_add(body_len)?;
        let body = Reader {
            bytes: bytes.get(..body_end)?,
            big_endian,
        };
        Some((body, signature, body_start))
    }

    fn u32(&self, pos: usize) -> Option<u32> {
        let raw: [u8; 4] = self.bytes.get(pos..pos.checked_add(4)?)?.try_into().ok()?;
        Some(if self.big_endian {
            u32::from_be_bytes(raw)
        } else {
            u32::from_le_bytes(raw)
        })
    }

    /// A STRING or OBJECT_PATH at `pos` (before alignment), and the position after it.
    fn string(&self, pos: usize) -> Option<(&'m str, usize)> {
        let pos = align(pos, 4);
        let len = self.u32(pos)? as usize;
        let start = pos + 4;
        let end = start.checked_add(len)?;
        let text = std::str::from_utf8(self.bytes.get(start..end)?).ok()?;
        (*self.bytes.get(end)? == 0).then_some((text, end + 1))
    }

    /// A SIGNATURE at `pos`, and the position after it.
    fn signature(&self, pos: usize) -> Option<(&'m [u8], usize)> {
        let len = *self.bytes.get(pos)? as usize;
        let sig = self.bytes.get(pos + 1..pos + 1 + len)?;
        (*self.bytes.get(pos + 1 + len)? == 0).then_some((sig, pos + len + 2))
    }

    /// Step over a value of the single complete type `ty` at `pos`; the position after it.
    fn skip(&self, ty: &[u8], pos: usize, depth: u32) -> Option<usize> {
        if depth > MAX_DEPTH {
            return None;
        }
        let end = match *ty.first()? {
            b'y' => pos + 1,
            b'n' | b'q' => align(pos, 2) + 2,
            b'b' | b'i' | b'u' | b'h' => align(pos, 4) + 4,
            b'x' | b't' | b'd' => align(pos, 8) + 8,
            b's' | b'o' => self.string(pos)?.1,
            b'g' => self.signature(pos)?.1,
            b'v' => {
                let (inner, value_pos) = self.signature(pos)?;
                if inner.is_empty() || type_end(inner, 0)? != inner.len() {
                    return None;
                }
                self.skip(inner, value_pos, depth + 1)?
            }
            b'a' => {
                let len_pos = align(pos, 4);
                let len = self.u32(len_pos)? as usize;
                // Elements start aligned to their type, even when there are none.
                let first = align(len_pos + 4, alignment(*ty.get(1)?));
                first.checked_add(len)?
            }
            b'(' => {
                let mut pos = align(pos, 8);
                let mut i = 1;
                while *ty.get(i)? != b')' {
                    let field_end = type_end(ty, i)?;
                    pos = self.skip(&ty[i..field_end], pos, depth + 1)?;
                    i = field_end;
                }
                pos
            }
            _ => return None,
        };
        (end <= self.bytes.len()).then_some(end)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use zbus::Message;
    use zbus::wire::{Endian, ObjectPath, Variant};

    fn args_of(msg: &Message) -> Vec<Arg<'_>> {
        let lazy = LazyArgs::new(msg.data().bytes());
        (0..ARGS).map_while(|i| lazy.get(i)).collect()
    }

    fn signal<B>(endian: Endian, body: &B) -> Message
    where
        B: serde::Serialize + zbus::wire::DynamicType,
    {
        Message::signal("/a/b", "org.x.I", "S")
            .endian(endian)
            .build(body)
            .unwrap()
    }

    #[test]
    fn strings_and_paths_in_both_byte_orders() {
        for endian in [Endian::Little, Endian::Big] {
            let mut dict: HashMap<&str, Variant<'_>> = HashMap::new();
            dict.insert("k", Variant::from(7u32));
            let body = (
                7u8,
                "first",
                ObjectPath::try_from("/x/y").unwrap(),
                vec![1u64, 2, 3],
                dict,
                (1u16, "inner", 2.5f64),
                Variant::from("in a variant"),
                zbus::wire::Signature::try_from("a{sv}").unwrap(),
                -3i64,
                "last",
            );
            let msg = signal(endian, &body);
            assert_eq!(
                args_of(&msg),
                vec![
                    Arg::Other,
                    Arg::Str("first"),
                    Arg::Path("/x/y"),
                    Arg::Other,
                    Arg::Other,
                    Arg::Other,
                    Arg::Other,
                    Arg::Other,
                    Arg::Other,
                    Arg::Str("last"),
                ],
                "{endian:?}"
            );
        }
    }

    #[test]
    fn a_structure_argument_is_not_its_fields() {
        let two = signal(Endian::Little, &("a", "b"));
        assert_eq!(args_of(&two), vec![Arg::Str("a"), Arg::Str("b")]);
        let one = signal(Endian::Little, &(("a", "b"),));
        assert_eq!(args_of(&one), vec![Arg::Other]);
    }

    #[test]
    fn empty_arrays_and_bodies() {
        let msg = signal(Endian::Big, &(Vec::<(u64, u8)>::new(), "after"));
        assert_eq!(args_of(&msg), vec![Arg::Other, Arg::Str("after")]);
        let msg = signal(Endian::Little, &());
        assert_eq!(args_of(&msg), vec![]);
    }

    #[test]
    fn at_most_64_arguments() {
        // A 70-argument body, built by hand: a header with only a signature, then strings.
        let signature = "s".repeat(70);
        let mut body = Vec::new();
        for i in 0..70u32 {
            let text = format!("v{i}");
            body.resize(body.len().next_multiple_of(4), 0);
            body.extend_from_slice(&(text.len() as u32).to_le_bytes());
            body.extend_from_slice(text.as_bytes());
            body.push(0);
        }
        let mut msg = vec![b'l', 4, 0, 1];
        msg.extend_from_slice(&(body.len() as u32).to_le_bytes());
        msg.extend_from_slice(&1u32.to_le_bytes());
        let mut fields = vec![SIGNATURE_FIELD, 1, b'g', 0, signature.len() as u8];
        fields.extend_from_slice(signature.as_bytes());
        fields.push(0);
        msg.extend_from_slice(&(fields.len() as u32).to_le_bytes());
        msg.extend_from_slice(&fields);
        msg.resize(msg.len().next_multiple_of(8), 0);
        msg.extend_from_slice(&body);
        let args = Args::read(&msg);
        assert_eq!(args.len, 64);
        assert_eq!(args.get(0), Some(Arg::Str("v0")));
        assert_eq!(args.get(63), Some(Arg::Str("v63")));
        assert_eq!(args.get(64), None);
    }

    #[test]
    fn malformed_bytes_end_the_arguments_without_panicking() {
        let msg = signal(Endian::Little, &("abc", 5u32, "def", vec!["x", "y"]));
        let bytes = msg.data().bytes().to_vec();
        let whole = Args::read(&bytes);
        assert_eq!(whole.len, 4);
        // Every truncation and every single-byte corruption must be survivable.
        for cut in 0..bytes.len() {
            let _ = Args::read(&bytes[..cut]);
        }
        let mut rng = 0x2545F4914F6CDD1Du64;
        for pos in 0..bytes.len() {
            for _ in 0..8 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let mut copy = bytes.clone();
                copy[pos] = rng as u8;
                let _ = Args::read(&copy);
            }
        }
    }

    #[test]
    fn signature_types_end_where_they_should() {
        assert_eq!(type_end(b"a{sv}s", 0), Some(5));
        assert_eq!(type_end(b"(a(ii)s)", 0), Some(8));
        assert_eq!(type_end(b"aai", 0), Some(3));
        assert_eq!(type_end(b"(ii", 0), None);
        assert_eq!(type_end(b"a", 0), None);
    }
}
