//! Compact JSON writer for statements: the exact bytes of `serde_json::to_vec`, written faster.
//!
//! serde_json checks every byte of every string against its escape table one at a time, which is
//! most of the cost of serializing a statement (mostly digests, references and names). This
//! serializer checks a whole string at once (vectorized) and copies it when it needs no escape. It
//! writes what serde_json's compact formatter writes: same escapes (`\"`, `\\`, `\b`, `\t`, `\n`,
//! `\f`, `\r`, other control characters as lowercase `\u00XX`, everything else verbatim), same
//! integers, and floats through serde_json itself (non-finite ones as `null`).
//!
//! serde_json's `RawValue` (what [`JsonObject`](super::statement::JsonObject) holds) is copied
//! verbatim, as serde_json does. What it does not cover (map keys that are not strings, serde_json's
//! other private tokens) makes [`to_vec`] fall back to `serde_json::to_vec`, so the output is
//! always serde_json's.

use std::fmt;

use serde::Serialize;
use serde::ser::{self, Impossible};

/// `serde_json::to_vec(value)`, byte for byte.
#[cfg(test)]
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(1024);
    append(&mut out, value)?;
    Ok(out)
}

/// Append the bytes of `serde_json::to_vec(value)` to `out`.
pub fn append<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> serde_json::Result<()> {
    let start = out.len();
    match value.serialize(&mut Writer { out: &mut *out }) {
        Ok(()) => Ok(()),
        Err(Unsupported) => {
            out.truncate(start);
            serde_json::to_writer(&mut *out, value)
        }
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Largest scratch buffer kept for the next call.
const SCRATCH_KEPT: usize = 1 << 20;

/// Run `f` with this thread's scratch buffer, empty. Serializing into a buffer that is kept
/// (instead of a new one, grown by doubling, per statement or object) spares the allocator the
/// churn: buffers of tens of kilobytes, allocated and freed on every statement, otherwise make the
/// C allocator give memory back to the system and fault fresh pages in on the next statement.
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buffer) => {
            buffer.clear();
            let result = f(&mut buffer);
            if buffer.capacity() > SCRATCH_KEPT {
                *buffer = Vec::new();
            }
            result
        }
        // Already in use further up this thread's stack.
        Err(_) => f(&mut Vec::new()),
    })
}

/// This writer's bytes, or `Unsupported` for what it leaves to serde_json.
#[cfg(test)]
fn write<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Unsupported> {
    let mut out = Vec::new();
    value.serialize(&mut Writer { out: &mut out })?;
    Ok(out)
}

/// Serialize `text`, which must be exactly one JSON value, verbatim: as serde_json's `RawValue`
/// serializes (a struct and a field named by serde_json's raw-value token), which serde_json's
/// serializer writes as is (its `Value` serializer parses it), and so does this writer. For JSON
/// text known to be valid, without parsing it again as `RawValue::from_string` would.
pub(crate) fn serialize_raw<S: ser::Serializer>(
    text: &str,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use ser::SerializeStruct as _;
    let mut raw = serializer.serialize_struct(RAW_VALUE_TOKEN, 1)?;
    raw.serialize_field(RAW_VALUE_TOKEN, text)?;
    raw.end()
}

/// Something this writer leaves to serde_json (or an error of a `Serialize` impl, which serde_json
/// then reports).
#[derive(Debug)]
pub struct Unsupported;

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("left to serde_json")
    }
}

impl std::error::Error for Unsupported {}

impl ser::Error for Unsupported {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Unsupported
    }
}

/// Prefix of serde_json's private struct names (`RawValue`, and `Number` with its
/// `arbitrary_precision` feature), which its serializer writes specially.
const SERDE_JSON_PRIVATE: &str = "$serde_json::private::";
/// serde_json's `RawValue` serializes as a struct of this name with one field of this name, the
/// JSON text; serde_json's serializer writes that text verbatim.
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether any byte of `word` is `"`, `\\` or a control character (below 0x20).
#[inline]
fn word_needs_escape(word: u64) -> bool {
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let quote = zero_byte(word ^ (ONES * u64::from(b'"')));
    let backslash = zero_byte(word ^ (ONES * u64::from(b'\\')));
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    (quote | backslash | control) != 0
}

/// Whether serde_json escapes any byte of `bytes`: `"`, `\\` or a control character (below 0x20).
/// Short strings (most keys and values) are checked as one or two overlapping words, longer ones
/// by a loop without early exit, which the compiler vectorizes: strings that need escaping are
/// rare.
#[inline]
fn needs_escape(bytes: &[u8]) -> bool {
    let n = bytes.len();
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let half = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    match n {
        0 => false,
        1..=3 => bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\'),
        4..=7 => word_needs_escape(u64::from(half(0)) | u64::from(half(n - 4)) << 32),
        8..=16 => word_needs_escape(word(0)) | word_needs_escape(word(n - 8)),
        _ => bytes.iter().fold(false, |any, &b| {
            any | (b < 0x20) | (b == b'"') | (b == b'\\')
        }),
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// `"` + the escaped `text` + `"`.
fn write_str(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    if needs_escape(bytes) {
        write_escaped(out, bytes);
    } else {
        out.extend_from_slice(bytes);
    }
    out.push(b'"');
}

/// The escaped bytes of a string, as serde_json writes them.
#[cold]
fn write_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut start = 0; // first byte not yet copied
    for (i, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            0x0C => b"\\f",
            b'\r' => b"\\r",
            0x00..=0x1F => &[],
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0xF)]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

fn write_i64(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    write_u64(out, n.unsigned_abs());
}

/// serde_json's own bytes for a float (its formatting, `null` when not finite).
fn write_float<T: Serialize>(out: &mut Vec<u8>, value: T) -> Result<(), Unsupported> {
    serde_json::to_writer(&mut *out, &value).map_err(|_| Unsupported)
}

type Result<T, E = Unsupported> = std::result::Result<T, E>;

/// A JSON array or object being written: whether the next element is the first.
struct Compound<'a, 'b> {
    writer: &'b mut Writer<'a>,
    first: bool,
    /// A `RawValue`: its one field is written verbatim, nothing else.
    raw: bool,
}

impl Compound<'_, '_> {
    fn separator(&mut self) {
        if self.first {
            self.first = false;
        } else {
            self.writer.out.push(b',');
        }
    }

    fn key(&mut self, key: &str) {
        self.separator();
        write_str(self.writer.out, key);
        self.writer.out.push(b':');
    }
}

impl<'a, 'b> ser::Serializer for &'b mut Writer<'a> {
    type Ok = ();
    type Error = Unsupported;
    type SerializeSeq = Compound<'a, 'b>;
    type SerializeTuple = Compound<'a, 'b>;
    type SerializeTupleStruct = Compound<'a, 'b>;
    type SerializeTupleVariant = Compound<'a, 'b>;
    type SerializeMap = Compound<'a, 'b>;
    type SerializeStruct = Compound<'a, 'b>;
    type SerializeStructVariant = Compound<'a, 'b>;

    fn serialize_bool(self, v: bool) -> Result<()> {
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<()> {
        write_i64(self.out, v.into());
        Ok(())
    }
    fn serialize_i16(self, v: i16) -> Result<()> {
        write_i64(self.out, v.into());
        Ok(())
    }
    fn serialize_i32(self, v: i32) -> Result<()> {
        write_i64(self.out, v.into());
        Ok(())
    }
    fn serialize_i64(self, v: i64) -> Result<()> {
        write_i64(self.out, v);
        Ok(())
    }
    fn serialize_i128(self, v: i128) -> Result<()> {
        self.out.extend_from_slice(v.to_string().as_bytes());
        Ok(())
    }
    fn serialize_u8(self, v: u8) -> Result<()> {
        write_u64(self.out, v.into());
        Ok(())
    }
    fn serialize_u16(self, v: u16) -> Result<()> {
        write_u64(self.out, v.into());
        Ok(())
    }
    fn serialize_u32(self, v: u32) -> Result<()> {
        write_u64(self.out, v.into());
        Ok(())
    }
    fn serialize_u64(self, v: u64) -> Result<()> {
        write_u64(self.out, v);
        Ok(())
    }
    fn serialize_u128(self, v: u128) -> Result<()> {
        self.out.extend_from_slice(v.to_string().as_bytes());
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> Result<()> {
        write_float(self.out, v)
    }
    fn serialize_f64(self, v: f64) -> Result<()> {
        write_float(self.out, v)
    }
    fn serialize_char(self, v: char) -> Result<()> {
        write_str(self.out, v.encode_utf8(&mut [0; 4]));
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result<()> {
        write_str(self.out, v);
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<()> {
        use ser::SerializeSeq as _;
        let mut seq = self.serialize_seq(Some(v.len()))?;
        for byte in v {
            seq.serialize_element(byte)?;
        }
        seq.end()
    }
    fn serialize_none(self) -> Result<()> {
        self.serialize_unit()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<()> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<()> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<()> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<()> {
        write_str(self.out, variant);
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<()> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<()> {
        self.out.push(b'{');
        write_str(self.out, variant);
        self.out.push(b':');
        value.serialize(&mut *self)?;
        self.out.push(b'}');
        Ok(())
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Compound<'a, 'b>> {
        self.out.push(b'[');
        Ok(Compound {
            writer: self,
            first: true,
            raw: false,
        })
    }
    fn serialize_tuple(self, len: usize) -> Result<Compound<'a, 'b>> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<Compound<'a, 'b>> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Compound<'a, 'b>> {
        self.out.push(b'{');
        write_str(self.out, variant);
        self.out.push(b':');
        self.serialize_seq(Some(len))
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Compound<'a, 'b>> {
        self.out.push(b'{');
        Ok(Compound {
            writer: self,
            first: true,
            raw: false,
        })
    }
    fn serialize_struct(self, name: &'static str, len: usize) -> Result<Compound<'a, 'b>> {
        if name == RAW_VALUE_TOKEN {
            return Ok(Compound {
                writer: self,
                first: true,
                raw: true,
            });
        }
        if name.starts_with(SERDE_JSON_PRIVATE) {
            return Err(Unsupported);
        }
        self.serialize_map(Some(len))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Compound<'a, 'b>> {
        self.out.push(b'{');
        write_str(self.out, variant);
        self.out.push(b':');
        self.serialize_map(Some(len))
    }
}

impl ser::SerializeSeq for Compound<'_, '_> {
    type Ok = ();
    type Error = Unsupported;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.separator();
        value.serialize(&mut *self.writer)
    }
    fn end(self) -> Result<()> {
        self.writer.out.push(b']');
        Ok(())
    }
}

impl ser::SerializeTuple for Compound<'_, '_> {
    type Ok = ();
    type Error = Unsupported;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<()> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleStruct for Compound<'_, '_> {
    type Ok = ();
    type Error = Unsupported;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<()> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleVariant for Compound<'_, '_> {
    type Ok = ();
    type Error = Unsupported;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<()> {
        self.writer.out.extend_from_slice(b"]}");
        Ok(())
    }
}

impl ser::SerializeMap for Compound<'_, '_> {
    type Ok = ();
    type Error = Unsupported;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<()> {
        self.separator();
        key.serialize(StrWriter {
            out: self.writer.out,
            verbatim: false,
        })?;
        self.writer.out.push(b':');
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        value.serialize(&mut *self.writer)
    }
    fn end(self) -> Result<()> {
        self.writer.out.push(b'}');
        Ok(())
    }
}

impl ser::SerializeStruct for Compound<'_, '_> {
    type Ok = ();
    type Error = Unsupported;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<()> {
        if self.raw {
            if key != RAW_VALUE_TOKEN || !self.first {
                return Err(Unsupported);
            }
            self.first = false;
            return value.serialize(StrWriter {
                out: self.writer.out,
                verbatim: true,
            });
        }
        self.key(key);
        value.serialize(&mut *self.writer)
    }
    fn end(self) -> Result<()> {
        if self.raw {
            // The text was the whole value.
            return if self.first { Err(Unsupported) } else { Ok(()) };
        }
        self.writer.out.push(b'}');
        Ok(())
    }
}

impl ser::SerializeStructVariant for Compound<'_, '_> {
    type Ok = ();
    type Error = Unsupported;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<()> {
        self.key(key);
        value.serialize(&mut *self.writer)
    }
    fn end(self) -> Result<()> {
        self.writer.out.extend_from_slice(b"}}");
        Ok(())
    }
}

/// Map keys: strings only (what statements have); anything else goes to serde_json, which quotes
/// numbers and booleans in its own way. `verbatim`: the JSON text of a `RawValue`, copied as is.
struct StrWriter<'a> {
    out: &'a mut Vec<u8>,
    verbatim: bool,
}

impl ser::Serializer for StrWriter<'_> {
    type Ok = ();
    type Error = Unsupported;
    type SerializeSeq = Impossible<(), Unsupported>;
    type SerializeTuple = Impossible<(), Unsupported>;
    type SerializeTupleStruct = Impossible<(), Unsupported>;
    type SerializeTupleVariant = Impossible<(), Unsupported>;
    type SerializeMap = Impossible<(), Unsupported>;
    type SerializeStruct = Impossible<(), Unsupported>;
    type SerializeStructVariant = Impossible<(), Unsupported>;

    fn serialize_str(self, v: &str) -> Result<()> {
        if self.verbatim {
            self.out.extend_from_slice(v.as_bytes());
        } else {
            write_str(self.out, v);
        }
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<()> {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<()> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<()> {
        value.serialize(self)
    }

    fn serialize_bool(self, _: bool) -> Result<()> {
        Err(Unsupported)
    }
    fn serialize_i8(self, _: i8) -> Result<()> {
        Err(Unsupported)
    }
    fn serialize_i16(self, _: i16) -> Result<()> {
        Err(Unsupported)
    }
    fn serialize_i32(self, _: i32) -> Result<()> {
        Err(Unsupported)
    }
    fn serialize_i64(self, _: i64) -> Result<()> {
        Err(Unsupported)
    }
    fn serialize_u8(self, _: u8) -> Result<()> {
        Err(Unsupported)
    }
    fn serialize_u16(self, _: u16) -> Result<()> {
        Err(Unsupported)
    }
    fn serialize_u32(self, _: u32) -> Result<()> {
        Err(Unsupported)
    }
    fn serialize_u64(self, _: u64) -> Result<()> {
        Err(Unsupported)
    }
    fn serialize_f32(self, _: f32) -> Result<()> {
        Err(Unsupported)
    }
    fn serialize_f64(self, _: f64) -> Result<()> {
        Err(Unsupported)
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<()> {
        Err(Unsupported)
    }
    fn serialize_none(self) -> Result<()> {
        Err(Unsupported)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<()> {
        Err(Unsupported)
    }
    fn serialize_unit(self) -> Result<()> {
        Err(Unsupported)
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<()> {
        Err(Unsupported)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<()> {
        Err(Unsupported)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq> {
        Err(Unsupported)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple> {
        Err(Unsupported)
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct> {
        Err(Unsupported)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant> {
        Err(Unsupported)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap> {
        Err(Unsupported)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct> {
        Err(Unsupported)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant> {
        Err(Unsupported)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::{Value, json};

    use super::*;

    fn same_as_serde_json<T: Serialize + ?Sized + fmt::Debug>(value: &T) {
        let ours = to_vec(value).expect("serializes");
        let theirs = serde_json::to_vec(value).expect("serde_json serializes");
        assert!(
            ours == theirs,
            "{value:?}\n ours: {}\n serde_json: {}",
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs)
        );
    }

    #[test]
    fn every_byte_is_escaped_as_serde_json_does() {
        // Each ASCII byte (and DEL) alone, at every offset of an 8-byte word, and next to others.
        for byte in 0u8..=0x7F {
            let c = char::from(byte);
            for offset in 0..17 {
                let text: String = "a".repeat(offset) + &c.to_string() + "bcdefghijklmnop";
                same_as_serde_json(&text);
                let text: String = c.to_string().repeat(offset + 1);
                same_as_serde_json(&text);
            }
        }
        // Strings of every short length with one byte to escape at every position.
        for len in 1..=40 {
            for at in 0..len {
                for special in [b'"', b'\\', b'\n', 0x1F, 0x00] {
                    let mut bytes = vec![b'x'; len];
                    bytes[at] = special;
                    same_as_serde_json(std::str::from_utf8(&bytes).expect("ascii"));
                }
                let mut bytes = vec![b'x'; len];
                bytes[at] = 0x7F;
                same_as_serde_json(std::str::from_utf8(&bytes).expect("ascii"));
            }
        }
        for text in [
            "",
            "plain ascii, longer than a word",
            "\u{e9}t\u{e9} \u{1F680} \u{10FFFF} \u{80} \u{7FF} \u{800}",
            "\u{e9}\"\u{e9}\\\n\u{1F680}\u{1}",
            "ends with a quote\"",
            "\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"",
            "sha256:4f1c1a8e8f0a7c1d2f3e4d5c6b7a8f9e0d1c2b3a4f5e6d7c8b9a0f1e2d3c4b5a",
        ] {
            same_as_serde_json(text);
        }
    }

    #[test]
    fn values_are_written_as_serde_json_does() {
        same_as_serde_json(&json!({
            "null": null, "t": true, "f": false,
            "ints": [0, 1, -1, 9, 10, 99, 100, i64::MAX, i64::MIN, u64::MAX],
            "floats": [0.0, -0.0, 1.0, 0.1, 1e-300, 1e300, 123456789.125, -2.5e-7, f64::MAX, f64::MIN_POSITIVE],
            "nested": {"a": [], "b": {}, "c": [[], [{}], [1, [2, [3]]]], "\u{1}key\"": "v"},
            "": ""
        }));
        same_as_serde_json(&BTreeMap::from([
            ("nan", f64::NAN),
            ("inf", f64::INFINITY),
            ("-inf", f64::NEG_INFINITY),
        ]));
        same_as_serde_json(&(1u8, -2i8, 3u16, -4i16, 5u32, -6i32, u128::MAX, i128::MIN));
        same_as_serde_json(&(1.5f32, f32::NAN, 'x', '"', '\u{0}'));
        same_as_serde_json(&Option::<u8>::None);
        same_as_serde_json(&Some(()));
        same_as_serde_json(&serde_bytes_like(b"\x00\xff"));

        #[derive(Debug, Serialize)]
        enum E {
            Unit,
            Newtype(u8),
            Tuple(u8, String),
            Struct {
                a: u8,
                #[serde(skip_serializing_if = "Option::is_none")]
                b: Option<u8>,
            },
        }
        #[derive(Debug, Serialize)]
        struct Unit;
        #[derive(Debug, Serialize)]
        struct Newtype(String);
        #[derive(Debug, Serialize)]
        struct Tuple(u8, u8);
        #[derive(Debug, Serialize)]
        #[serde(rename_all = "camelCase")]
        struct S {
            first_field: Vec<E>,
            unit: Unit,
            newtype: Newtype,
            tuple: Tuple,
            #[serde(skip_serializing_if = "Option::is_none")]
            skipped: Option<u8>,
            map: BTreeMap<String, Value>,
            #[serde(flatten)]
            flattened: BTreeMap<String, u8>,
        }
        same_as_serde_json(&S {
            first_field: vec![
                E::Unit,
                E::Newtype(1),
                E::Tuple(2, "t".into()),
                E::Struct { a: 3, b: None },
                E::Struct { a: 4, b: Some(5) },
            ],
            unit: Unit,
            newtype: Newtype("n\"".into()),
            tuple: Tuple(6, 7),
            skipped: None,
            map: BTreeMap::from([("k".into(), json!([1, "2"]))]),
            flattened: BTreeMap::from([("x".into(), 8)]),
        });
    }

    fn serde_bytes_like(bytes: &'static [u8]) -> impl Serialize + fmt::Debug {
        #[derive(Debug)]
        struct Bytes(&'static [u8]);
        impl Serialize for Bytes {
            fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(self.0)
            }
        }
        Bytes(bytes)
    }

    #[test]
    fn statements_are_written_here_not_by_the_fallback() {
        let run: crate::api::TrainingRun =
            serde_saphyr::from_str(include_str!("../../tests/fixtures/succeeded-run.yaml"))
                .expect("fixture");
        let placement = crate::config::ControllerConfig::defaults()
            .placement(run.spec.accelerator.as_ref())
            .expect("placement");
        let builder =
            super::super::BuilderIdentity::controller(super::super::DEFAULT_BUILDER_ID, None);
        let statement =
            super::super::statement_for_run(&run, &placement, &builder).expect("statement");
        let written = write(&statement).expect("written here");
        assert_eq!(written, serde_json::to_vec(&statement).expect("serde_json"));
    }

    #[test]
    fn raw_values_are_written_here_and_other_keys_left_to_serde_json() {
        let raw = serde_json::value::RawValue::from_string("{\"a\" : 1}".into()).expect("raw");
        assert_eq!(write(&raw).expect("written here"), b"{\"a\" : 1}");
        assert_eq!(
            write(&BTreeMap::from([("k", &raw)])).expect("written here"),
            b"{\"k\":{\"a\" : 1}}"
        );
        assert!(write(&BTreeMap::from([(1u8, "a")])).is_err());
    }

    #[test]
    fn what_it_leaves_to_serde_json_still_gives_serde_jsons_bytes() {
        // Non-string map keys: serde_json quotes them.
        same_as_serde_json(&BTreeMap::from([(1u8, "a"), (2u8, "b")]));
        same_as_serde_json(&BTreeMap::from([(true, 1)]));
        // serde_json's RawValue: verbatim, whitespace and all.
        let raw = serde_json::value::RawValue::from_string("{\"a\" : 1}".into()).expect("raw");
        same_as_serde_json(&BTreeMap::from([("raw", &raw), ("again", &raw)]));
        same_as_serde_json(&raw);
        same_as_serde_json(&vec![raw.clone(), raw]);
    }
}
