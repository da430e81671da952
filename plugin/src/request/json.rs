//! The JSON reading the request parser needs beyond serde's derive: `messages` read in the body's
//! own pass, and string literals unescaped run by run up to a byte budget.

use super::Message;
use serde::Deserialize;
use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// Visitor methods for every JSON value but arrays and objects, all giving `$value`.
macro_rules! other_values_are {
    ($value:expr) => {
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok($value)
        }
    };
}

/// `messages` as the body has it, read in the same pass as the body (a 400 KB conversation is
/// scanned once): the message objects, or the fact that it was something else (an error that names
/// the field, rather than a JSON syntax error).
pub(super) enum Messages<'a> {
    List(Vec<Option<Message<'a>>>),
    NotAnArray,
}

impl<'de: 'a, 'a> Deserialize<'de> for Messages<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Visit<'a> {
            type Value = Messages<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of message objects")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut list = Vec::new();
                while let Some(message) = seq.next_element::<MaybeMessage<'a>>()? {
                    list.push(message.0);
                }
                Ok(Messages::List(list))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                drain_map(map).map(|()| Messages::NotAnArray)
            }
            other_values_are!(Messages::NotAnArray);
        }
        deserializer.deserialize_any(Visit(std::marker::PhantomData))
    }
}

/// One element of `messages`: a message object, or `None` for anything else.
struct MaybeMessage<'a>(Option<Message<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for MaybeMessage<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Visit<'a> {
            type Value = MaybeMessage<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a message object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                Message::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(|m| MaybeMessage(Some(m)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(MaybeMessage(None))
            }
            other_values_are!(MaybeMessage(None));
        }
        deserializer.deserialize_any(Visit(std::marker::PhantomData))
    }
}

fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Unescapes the JSON string literal `raw` (with its quotes) into `out`, stopping after `max_bytes`
/// bytes of output. Errors on an invalid escape within the part read.
pub(super) fn unescape_prefix(raw: &str, max_bytes: usize, out: &mut String) -> Result<bool, ()> {
    let inner = raw.strip_prefix('"').and_then(|s| s.strip_suffix('"')).ok_or(())?;
    let start = out.len();
    let mut rest = inner;
    loop {
        let room = max_bytes - (out.len() - start);
        // Copy the run up to the next escape at once (most text has none).
        let run = rest.find('\\').unwrap_or(rest.len());
        if run >= room {
            let mut end = room;
            while !rest.is_char_boundary(end) {
                end -= 1;
            }
            out.push_str(&rest[..end]);
            return Ok(rest.len() == end);
        }
        out.push_str(&rest[..run]);
        rest = &rest[run..];
        if rest.is_empty() {
            return Ok(true);
        }
        let (decoded, len) = decode_escape(rest.as_bytes())?;
        if decoded.len_utf8() > max_bytes - (out.len() - start) {
            // Never exceed the budget, even by a multi-byte character.
            return Ok(false);
        }
        out.push(decoded);
        rest = &rest[len..];
    }
}

/// The character an escape at the start of `bytes` (`\n`, `\u00e9`, a surrogate pair) stands for,
/// and how many bytes it takes.
fn decode_escape(bytes: &[u8]) -> Result<(char, usize), ()> {
    let decoded = match bytes.get(1).ok_or(())? {
        b'"' => '"',
        b'\\' => '\\',
        b'/' => '/',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        b'u' => {
            let hi = hex4(bytes.get(2..6).ok_or(())?)?;
            if !(0xD800..0xDC00).contains(&hi) {
                return Ok((char::from_u32(hi).unwrap_or('\u{FFFD}'), 6));
            }
            // A surrogate pair: `\uD83D\uDE00`.
            if bytes.get(6..8) != Some(b"\\u") {
                return Err(());
            }
            let lo = hex4(bytes.get(8..12).ok_or(())?)?;
            let code = 0x10000 + ((hi - 0xD800) << 10) + (lo.checked_sub(0xDC00).ok_or(())? & 0x3FF);
            return Ok((char::from_u32(code).ok_or(())?, 12));
        }
        _ => return Err(()),
    };
    Ok((decoded, 2))
}

fn hex4(digits: &[u8]) -> Result<u32, ()> {
    digits.iter().try_fold(0u32, |v, &d| Ok(v * 16 + char::from(d).to_digit(16).ok_or(())?))
}
