//! Span and resource attributes, kept in the form the exporter sends: a run of OTLP `KeyValue`
//! messages, each already framed as a `Span.attributes` field. A span's attributes are encoded
//! once, when it is built, and copied into an export request as one slice; there is no list of
//! boxed keys and values to allocate, walk twice for lengths and drop per span.
//!
//! Reading (tests, console, metrics, JSON lines) decodes the bytes back; nothing on the hot
//! path reads attributes.

use std::fmt;

use compact_str::CompactString;
use prost::encoding::{decode_varint, encoded_len_varint};

use crate::varint::put_varint;

/// An owned attribute value, as readers get it back.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    Str(CompactString),
    Int(i64),
    F64(f64),
    Bool(bool),
}

impl From<&str> for AttrValue {
    fn from(v: &str) -> Self {
        AttrValue::Str(CompactString::from(v))
    }
}
impl From<String> for AttrValue {
    fn from(v: String) -> Self {
        AttrValue::Str(CompactString::from(v))
    }
}
impl From<i64> for AttrValue {
    fn from(v: i64) -> Self {
        AttrValue::Int(v)
    }
}
impl From<f64> for AttrValue {
    fn from(v: f64) -> Self {
        AttrValue::F64(v)
    }
}
impl From<bool> for AttrValue {
    fn from(v: bool) -> Self {
        AttrValue::Bool(v)
    }
}

impl fmt::Display for AttrValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_attr().fmt(f)
    }
}

/// An attribute value borrowed for writing (or read back without copying).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AttrRef<'a> {
    Str(&'a str),
    Int(i64),
    F64(f64),
    Bool(bool),
}

impl AttrRef<'_> {
    pub fn to_owned_value(self) -> AttrValue {
        match self {
            AttrRef::Str(s) => AttrValue::Str(CompactString::from(s)),
            AttrRef::Int(i) => AttrValue::Int(i),
            AttrRef::F64(f) => AttrValue::F64(f),
            AttrRef::Bool(b) => AttrValue::Bool(b),
        }
    }
}

impl fmt::Display for AttrRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttrRef::Str(s) => f.write_str(s),
            AttrRef::Int(i) => write!(f, "{i}"),
            AttrRef::F64(v) => write!(f, "{v}"),
            AttrRef::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// What can be written as an attribute value: borrowed or owned text, numbers, booleans.
/// Owned values are only read; pass `&str` where the text exists anyway.
pub trait AsAttr {
    fn as_attr(&self) -> AttrRef<'_>;
}

impl AsAttr for str {
    fn as_attr(&self) -> AttrRef<'_> {
        AttrRef::Str(self)
    }
}
impl AsAttr for String {
    fn as_attr(&self) -> AttrRef<'_> {
        AttrRef::Str(self)
    }
}
impl AsAttr for CompactString {
    fn as_attr(&self) -> AttrRef<'_> {
        AttrRef::Str(self)
    }
}
impl AsAttr for std::borrow::Cow<'_, str> {
    fn as_attr(&self) -> AttrRef<'_> {
        AttrRef::Str(self)
    }
}
impl AsAttr for i64 {
    fn as_attr(&self) -> AttrRef<'_> {
        AttrRef::Int(*self)
    }
}
impl AsAttr for f64 {
    fn as_attr(&self) -> AttrRef<'_> {
        AttrRef::F64(*self)
    }
}
impl AsAttr for bool {
    fn as_attr(&self) -> AttrRef<'_> {
        AttrRef::Bool(*self)
    }
}
impl AsAttr for AttrValue {
    fn as_attr(&self) -> AttrRef<'_> {
        match self {
            AttrValue::Str(s) => AttrRef::Str(s),
            AttrValue::Int(i) => AttrRef::Int(*i),
            AttrValue::F64(f) => AttrRef::F64(*f),
            AttrValue::Bool(b) => AttrRef::Bool(*b),
        }
    }
}
impl AsAttr for AttrRef<'_> {
    fn as_attr(&self) -> AttrRef<'_> {
        *self
    }
}
impl<T: AsAttr + ?Sized> AsAttr for &T {
    fn as_attr(&self) -> AttrRef<'_> {
        (**self).as_attr()
    }
}

/// The field key every entry is stored under: `Span.attributes` (field 9, length-delimited).
/// `Resource.attributes` (field 1) has a one-byte key too; [`Attributes::write_as`] swaps it.
pub const SPAN_ATTRIBUTES_KEY: u8 = (9 << 3) | 2;

/// Protobuf keys inside `KeyValue` and `AnyValue`.
const KV_KEY: u8 = (1 << 3) | 2;
const KV_VALUE: u8 = (2 << 3) | 2;
const ANY_STRING: u8 = (1 << 3) | 2;
const ANY_BOOL: u8 = 2 << 3;
const ANY_INT: u8 = 3 << 3;
const ANY_DOUBLE: u8 = (4 << 3) | 1;

/// Longest protobuf varint (a u64).
const MAX_VARINT_LEN: usize = 10;

/// Bytes an average entry takes; sizes the buffer up front.
const TYPICAL_ENTRY_BYTES: usize = 40;

/// An ordered attribute list in OTLP wire form (see the module comment).
#[derive(Clone, Default, PartialEq)]
pub struct Attributes {
    wire: Vec<u8>,
    count: usize,
}

impl fmt::Debug for Attributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

fn any_value_len(v: AttrRef<'_>) -> usize {
    // A oneof member is present even when it holds the default value.
    match v {
        AttrRef::Str(s) => 1 + encoded_len_varint(s.len() as u64) + s.len(),
        AttrRef::Bool(_) => 2,
        AttrRef::Int(i) => 1 + encoded_len_varint(i as u64),
        AttrRef::F64(_) => 9,
    }
}

impl Attributes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Room for about `n` attributes without regrowing.
    pub fn with_capacity(n: usize) -> Self {
        Attributes {
            wire: Vec::with_capacity(n * TYPICAL_ENTRY_BYTES),
            count: 0,
        }
    }

    /// Appends an attribute the caller knows is not set yet (span builders set each key
    /// once): no search, unlike [`Attributes::set`].
    pub fn push(&mut self, key: &str, value: impl AsAttr) {
        let value = value.as_attr();
        let w = self.begin_entry(key, any_value_len(value));
        match value {
            AttrRef::Str(s) => {
                w.push(ANY_STRING);
                put_varint(s.len() as u64, w);
                w.extend_from_slice(s.as_bytes());
            }
            AttrRef::Bool(b) => {
                w.push(ANY_BOOL);
                w.push(u8::from(b));
            }
            AttrRef::Int(i) => {
                w.push(ANY_INT);
                put_varint(i as u64, w);
            }
            AttrRef::F64(f) => {
                w.push(ANY_DOUBLE);
                w.extend_from_slice(&f.to_le_bytes());
            }
        }
    }

    /// Appends a string attribute given as consecutive parts (as [`Attributes::push`]), so a
    /// value such as `url.full` is written once, straight into the list, instead of being
    /// formatted into a string first.
    pub fn push_concat(&mut self, key: &str, parts: &[&str]) {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let w = self.begin_entry(key, 1 + encoded_len_varint(len as u64) + len);
        w.push(ANY_STRING);
        put_varint(len as u64, w);
        for p in parts {
            w.extend_from_slice(p.as_bytes());
        }
    }

    /// Writes an entry's framing and key, counts it, and returns the buffer for its
    /// `AnyValue` body of `any_len` bytes.
    fn begin_entry(&mut self, key: &str, any_len: usize) -> &mut Vec<u8> {
        debug_assert!(self.get(key).is_none(), "attribute {key} set twice");
        let key_len = if key.is_empty() {
            0
        } else {
            1 + encoded_len_varint(key.len() as u64) + key.len()
        };
        let kv_len = key_len + 1 + encoded_len_varint(any_len as u64) + any_len;
        self.count += 1;
        let w = &mut self.wire;
        // One capacity check for the whole entry (key byte, length varint, body).
        w.reserve(1 + MAX_VARINT_LEN + kv_len);
        w.push(SPAN_ATTRIBUTES_KEY);
        put_varint(kv_len as u64, w);
        // proto3: an empty key is the default and is not written.
        if !key.is_empty() {
            w.push(KV_KEY);
            put_varint(key.len() as u64, w);
            w.extend_from_slice(key.as_bytes());
        }
        w.push(KV_VALUE);
        put_varint(any_len as u64, w);
        w
    }

    /// Sets `key`, replacing an earlier value (which keeps no place in the order).
    pub fn set(&mut self, key: &str, value: impl AsAttr) {
        if let Some(range) = self.entries().find(|e| e.key == key).map(|e| e.range) {
            self.wire.drain(range);
            self.count -= 1;
        }
        self.push(key, value);
    }

    pub fn get(&self, key: &str) -> Option<AttrValue> {
        self.get_ref(key).map(AttrRef::to_owned_value)
    }

    pub fn get_ref(&self, key: &str) -> Option<AttrRef<'_>> {
        self.entries().find(|e| e.key == key).map(|e| e.value)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        match self.get_ref(key) {
            Some(AttrRef::Str(s)) => Some(s),
            _ => None,
        }
    }

    pub fn get_int(&self, key: &str) -> Option<i64> {
        match self.get_ref(key) {
            Some(AttrRef::Int(i)) => Some(i),
            _ => None,
        }
    }

    pub fn contains(&self, key: &str) -> bool {
        self.entries().any(|e| e.key == key)
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, AttrRef<'_>)> {
        self.entries().map(|e| (e.key, e.value))
    }

    /// The entries as `Span.attributes` fields, ready to copy into a `Span` message.
    pub fn span_wire(&self) -> &[u8] {
        &self.wire
    }

    /// Writes the entries as fields with the one-byte protobuf key `field_key` (same length
    /// as [`Attributes::span_wire`]).
    pub fn write_as(&self, field_key: u8, out: &mut Vec<u8>) {
        if field_key == SPAN_ATTRIBUTES_KEY {
            out.extend_from_slice(&self.wire);
            return;
        }
        for e in self.entries() {
            out.push(field_key);
            out.extend_from_slice(&self.wire[e.range.start + 1..e.range.end]);
        }
    }

    fn entries(&self) -> Entries<'_> {
        Entries {
            wire: &self.wire,
            at: 0,
        }
    }
}

/// One decoded entry: where it sits in the wire bytes, its key and value.
struct Entry<'a> {
    range: std::ops::Range<usize>,
    key: &'a str,
    value: AttrRef<'a>,
}

struct Entries<'a> {
    wire: &'a [u8],
    at: usize,
}

impl<'a> Iterator for Entries<'a> {
    type Item = Entry<'a>;

    fn next(&mut self) -> Option<Entry<'a>> {
        let start = self.at;
        let mut rest = self.wire.get(start + 1..)?;
        let before = rest.len();
        let kv_len = usize::try_from(decode_varint(&mut rest).ok()?).ok()?;
        let body_start = start + 1 + (before - rest.len());
        let end = body_start.checked_add(kv_len)?;
        let body = self.wire.get(body_start..end)?;
        self.at = end;
        let (key, value) = decode_key_value(body)?;
        Some(Entry {
            range: start..end,
            key,
            value,
        })
    }
}

/// Splits a length-delimited field off `buf`: (field key byte, contents).
fn take_field<'a>(buf: &mut &'a [u8]) -> Option<(u8, &'a [u8])> {
    let (&key, mut rest) = buf.split_first()?;
    let len = usize::try_from(decode_varint(&mut rest).ok()?).ok()?;
    let (body, after) = rest.split_at_checked(len)?;
    *buf = after;
    Some((key, body))
}

fn decode_key_value(mut body: &[u8]) -> Option<(&str, AttrRef<'_>)> {
    let mut key = "";
    let mut value = None;
    while !body.is_empty() {
        match take_field(&mut body)? {
            (KV_KEY, k) => key = std::str::from_utf8(k).ok()?,
            (KV_VALUE, v) => value = Some(decode_any_value(v)?),
            _ => return None,
        }
    }
    Some((key, value?))
}

fn decode_any_value(v: &[u8]) -> Option<AttrRef<'_>> {
    let (&tag, mut rest) = v.split_first()?;
    Some(match tag {
        ANY_STRING => {
            let len = usize::try_from(decode_varint(&mut rest).ok()?).ok()?;
            AttrRef::Str(std::str::from_utf8(rest.get(..len)?).ok()?)
        }
        ANY_BOOL => AttrRef::Bool(*rest.first()? != 0),
        ANY_INT => AttrRef::Int(decode_varint(&mut rest).ok()? as i64),
        ANY_DOUBLE => AttrRef::F64(f64::from_le_bytes(rest.get(..8)?.try_into().ok()?)),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
    use prost::Message;

    fn kv(key: &str, v: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    /// The wire bytes are exactly what prost writes for `Span { attributes }`.
    #[test]
    fn wire_matches_prost_encoding() {
        use opentelemetry_proto::tonic::trace::v1::Span;
        let mut a = Attributes::new();
        a.push("s", "text");
        a.push("empty", "");
        a.push("", "keyless");
        a.push("i", -3i64);
        a.push("zero", 0i64);
        a.push("f", 0.25);
        a.push("b", true);
        a.push("long", "x".repeat(300).as_str());
        let want = Span {
            attributes: vec![
                kv("s", Value::StringValue("text".into())),
                kv("empty", Value::StringValue(String::new())),
                kv("", Value::StringValue("keyless".into())),
                kv("i", Value::IntValue(-3)),
                kv("zero", Value::IntValue(0)),
                kv("f", Value::DoubleValue(0.25)),
                kv("b", Value::BoolValue(true)),
                kv("long", Value::StringValue("x".repeat(300))),
            ],
            ..Default::default()
        }
        .encode_to_vec();
        assert_eq!(a.span_wire(), &want[..]);
        assert_eq!(a.len(), 8);
    }

    /// A value written in parts is the same entry as the whole value pushed at once,
    /// including when the parts cross a varint length boundary (127/128 bytes).
    #[test]
    fn concatenated_value_matches_a_single_push() {
        let long = "y".repeat(120);
        for parts in [
            &["http://", "host", ":8080", "/p", "?q=1"][..],
            &[][..],
            &["", ""][..],
            &["http://", long.as_str(), "/abcdefgh"][..],
        ] {
            let mut a = Attributes::new();
            a.push_concat("url.full", parts);
            let mut b = Attributes::new();
            b.push("url.full", parts.concat().as_str());
            assert_eq!(a, b, "{parts:?}");
            assert_eq!(a.len(), 1);
        }
    }

    #[test]
    fn reads_back_what_was_written() {
        let mut a = Attributes::with_capacity(4);
        a.push("s", "text");
        a.push("i", 42i64);
        a.push("", "keyless");
        assert_eq!(a.get_str("s"), Some("text"));
        assert_eq!(a.get_int("i"), Some(42));
        assert_eq!(a.get(""), Some(AttrValue::Str("keyless".into())));
        assert_eq!(a.get("missing"), None);
        let keys: Vec<&str> = a.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["s", "i", ""]);
    }

    #[test]
    fn set_replaces_and_moves_to_the_end() {
        let mut a = Attributes::new();
        a.push("a", 1i64);
        a.push("b", 2i64);
        a.set("a", "one");
        a.set("c", false);
        assert_eq!(a.len(), 3);
        let got: Vec<(&str, AttrValue)> = a.iter().map(|(k, v)| (k, v.to_owned_value())).collect();
        assert_eq!(
            got,
            [
                ("b", AttrValue::Int(2)),
                ("a", AttrValue::Str("one".into())),
                ("c", AttrValue::Bool(false)),
            ]
        );
    }

    #[test]
    fn rewritten_under_another_field_key() {
        use opentelemetry_proto::tonic::resource::v1::Resource;
        let mut a = Attributes::new();
        a.push("service.name", "svc");
        a.push("process.pid", 7i64);
        let mut out = Vec::new();
        a.write_as((1 << 3) | 2, &mut out);
        let want = Resource {
            attributes: vec![
                kv("service.name", Value::StringValue("svc".into())),
                kv("process.pid", Value::IntValue(7)),
            ],
            ..Default::default()
        }
        .encode_to_vec();
        assert_eq!(out, want);
    }
}
