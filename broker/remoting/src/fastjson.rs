//! JSON as Alibaba fastjson 1.x writes and reads it, which is what every remoting peer speaks.
//!
//! fastjson differs from RFC 8259 in ways the wire shows:
//! - map keys that are not strings are written bare: `{0:"127.0.0.1:10911"}` for a
//!   `HashMap<Long, String>` (`BrokerData.brokerAddrs` inside a route, a cluster info, ...), and
//!   as a whole JSON object when the key is a bean: `{{"brokerName":"b","queueId":0,"topic":"t"}:{..}}`
//!   for the `Map<MessageQueue, _>` offset tables of `TopicStatsTable`, `ConsumeStats`,
//!   `ResetOffsetBody`, `ConsumerRunningInfo.mqTable` and the reset-offset bodies;
//! - its reader also takes bare identifiers as keys and single-quoted strings.
//!
//! So this module has its own small reader ([`parse`]) producing a [`Value`] whose object keys
//! are values, and bridges to serde: [`from_slice`] turns bare numeric keys into their digits and
//! bean keys into [`RAW_KEY`]-marked text, and [`to_vec`] writes keys that carry the [`RAW_KEY`]
//! mark bare again. [`LongKeyMap`] and [`MessageQueueMap`] do the marking for the typed bodies.
//! Plain string-keyed maps and beans go through serde unchanged; serde_json's sorted object keys
//! match fastjson's alphabetical bean fields.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Marks an object key that fastjson writes bare (a number or a bean) rather than quoted.
pub const RAW_KEY: char = '\u{0}';

/// Nesting deeper than this is refused: real bodies nest a handful of levels, and a recursive
/// reader must not let a hostile peer exhaust the stack.
pub const MAX_DEPTH: usize = 64;

/// Why a JSON text could not be read or a value not mapped to a type.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum JsonError {
    #[error("JSON syntax error at byte {offset}: {what}")]
    Syntax { offset: usize, what: &'static str },
    #[error("JSON nested deeper than {MAX_DEPTH} levels at byte {offset}")]
    TooDeep { offset: usize },
    #[error("JSON does not fit the expected shape: {0}")]
    Shape(String),
}

/// A parsed fastjson value. Object keys are values because fastjson's keys can be numbers or
/// objects; numbers keep their text so no precision is lost before the caller picks a type.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(String),
    String(String),
    Array(Vec<Value>),
    Object(Vec<(Value, Value)>),
}

impl Value {
    /// The entries of an object, if this is one.
    pub fn as_object(&self) -> Option<&[(Value, Value)]> {
        match self {
            Value::Object(entries) => Some(entries),
            _ => None,
        }
    }

    /// Looks up a string key in an object.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_object()?
            .iter()
            .find(|(k, _)| matches!(k, Value::String(s) if s == key))
            .map(|(_, v)| v)
    }

    /// The value as a string the way Java's `String.valueOf` would print a scalar, for fields that
    /// a peer may write as a number where a string is expected (or the reverse). `None` for null,
    /// arrays and objects.
    pub fn scalar_text(&self) -> Option<String> {
        match self {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.clone()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// Converts to a serde_json value: non-string keys become text (numbers as their digits,
    /// objects and arrays as compact JSON behind [`RAW_KEY`]).
    pub fn into_serde(self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(b),
            Value::Number(n) => number_to_serde(&n),
            Value::String(s) => serde_json::Value::String(s),
            Value::Array(items) => {
                serde_json::Value::Array(items.into_iter().map(Value::into_serde).collect())
            }
            Value::Object(entries) => {
                let mut map = serde_json::Map::new();
                for (k, v) in entries {
                    let key = match k {
                        Value::String(s) => s,
                        Value::Number(n) => n,
                        Value::Bool(b) => b.to_string(),
                        Value::Null => "null".to_string(),
                        composite => {
                            let mut text = String::from(RAW_KEY);
                            write_serde(&composite.into_serde(), &mut text, Style::Fastjson);
                            text
                        }
                    };
                    map.insert(key, v.into_serde());
                }
                serde_json::Value::Object(map)
            }
        }
    }
}

fn number_to_serde(text: &str) -> serde_json::Value {
    if let Ok(i) = text.parse::<i64>() {
        return serde_json::Value::from(i);
    }
    if let Ok(u) = text.parse::<u64>() {
        return serde_json::Value::from(u);
    }
    match text
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
    {
        Some(n) => serde_json::Value::Number(n),
        None => serde_json::Value::String(text.to_string()),
    }
}

/// Parses fastjson text (a superset of JSON, see the module docs).
pub fn parse(input: &[u8]) -> Result<Value, JsonError> {
    let mut reader = Reader { input, pos: 0 };
    let value = reader.value(0)?;
    reader.skip_ws();
    if reader.pos != input.len() {
        return Err(reader.err("trailing characters"));
    }
    Ok(value)
}

/// Reads fastjson text into a serde type (keys mapped as [`Value::into_serde`] does).
pub fn from_slice<T: DeserializeOwned>(input: &[u8]) -> Result<T, JsonError> {
    from_value(parse(input)?)
}

/// Maps a parsed value into a serde type.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, JsonError> {
    serde_json::from_value(value.into_serde()).map_err(|e| JsonError::Shape(e.to_string()))
}

/// How to write keys marked [`RAW_KEY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Bare, as fastjson's default writer does (`{0:"a"}`, `{{"topic":..}:1}`).
    Fastjson,
    /// Quoted (`{"0":"a"}`): standard JSON, what RocketMQ's name server sends clients from 4.9.4
    /// on and to any client that asks with `acceptStandardJsonOnly`.
    Standard,
}

/// Writes a serde value as fastjson would.
pub fn to_vec<T: Serialize + ?Sized>(value: &T, style: Style) -> Vec<u8> {
    to_string(value, style).into_bytes()
}

/// Writes a serde value as fastjson would, as text.
pub fn to_string<T: Serialize + ?Sized>(value: &T, style: Style) -> String {
    // Serializing our own body types into a serde_json::Value cannot fail: they hold only strings,
    // numbers, booleans, sequences and string-keyed maps. A failure is a bug, shown as null.
    let tree = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
    let mut out = String::new();
    write_serde(&tree, &mut out, style);
    out
}

fn write_serde(value: &serde_json::Value, out: &mut String, style: Style) {
    match value {
        serde_json::Value::Object(map) => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                match k.strip_prefix(RAW_KEY).filter(|raw| is_raw_key(raw)) {
                    Some(raw) if style == Style::Fastjson => out.push_str(raw),
                    Some(raw) => write_string(raw, out),
                    // Includes a key that merely starts with the marker byte (hostile input): it
                    // is written as the string it is, so the output always parses.
                    None => write_string(k, out),
                }
                out.push(':');
                write_serde(v, out, style);
            }
            out.push('}');
        }
        serde_json::Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_serde(item, out, style);
            }
            out.push(']');
        }
        serde_json::Value::String(s) => write_string(s, out),
        other => out.push_str(&other.to_string()),
    }
}

/// Whether `raw` may be written bare: an integer, or a whole JSON object or array.
fn is_raw_key(raw: &str) -> bool {
    if raw.parse::<i64>().is_ok() {
        return true;
    }
    matches!(raw.as_bytes().first(), Some(b'{' | b'[')) && parse(raw.as_bytes()).is_ok()
}

fn write_string(s: &str, out: &mut String) {
    out.push_str(&serde_json::Value::String(s.to_string()).to_string());
}

struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn err(&self, what: &'static str) -> JsonError {
        JsonError::Syntax {
            offset: self.pos,
            what,
        }
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.input.get(self.pos) {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.input.get(self.pos).copied()
    }

    fn value(&mut self, depth: usize) -> Result<Value, JsonError> {
        if depth > MAX_DEPTH {
            return Err(JsonError::TooDeep { offset: self.pos });
        }
        match self.peek() {
            None => Err(self.err("unexpected end")),
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(q @ (b'"' | b'\'')) => self.string(q).map(Value::String),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => match self.word() {
                "null" => Ok(Value::Null),
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                _ => Err(self.err("unexpected token")),
            },
        }
    }

    /// A bare identifier (fastjson's unquoted field names) or literal.
    fn word(&mut self) -> &str {
        let start = self.pos;
        while let Some(b) = self.input.get(self.pos) {
            if b.is_ascii_alphanumeric() || *b == b'_' || *b == b'$' {
                self.pos += 1;
            } else {
                break;
            }
        }
        // Only ASCII was consumed, so this cannot fail.
        std::str::from_utf8(&self.input[start..self.pos]).unwrap_or("")
    }

    fn number(&mut self) -> Result<Value, JsonError> {
        let start = self.pos;
        if self.input.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        let digits = self.pos;
        while let Some(b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') = self.input.get(self.pos) {
            self.pos += 1;
        }
        if self.pos == digits {
            return Err(self.err("bad number"));
        }
        let text = std::str::from_utf8(&self.input[start..self.pos]).unwrap_or("");
        if text.parse::<f64>().is_err() {
            return Err(JsonError::Syntax {
                offset: start,
                what: "bad number",
            });
        }
        // fastjson writes longs with an `L` suffix under some features; accept and drop it.
        if let Some(b'L' | b'l') = self.input.get(self.pos) {
            self.pos += 1;
        }
        Ok(Value::Number(text.to_string()))
    }

    fn string(&mut self, quote: u8) -> Result<String, JsonError> {
        self.pos += 1; // opening quote
        let mut out: Vec<u8> = Vec::new();
        loop {
            let Some(&b) = self.input.get(self.pos) else {
                return Err(self.err("unterminated string"));
            };
            self.pos += 1;
            match b {
                _ if b == quote => break,
                b'\\' => {
                    let Some(&e) = self.input.get(self.pos) else {
                        return Err(self.err("unterminated escape"));
                    };
                    self.pos += 1;
                    let c = match e {
                        b'"' => '"',
                        b'\'' => '\'',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.unicode_escape()?,
                        _ => return Err(self.err("bad escape")),
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                _ => out.push(b),
            }
        }
        String::from_utf8(out).map_err(|_| self.err("string is not UTF-8"))
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let digits = self
            .input
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| self.err("short \\u escape"))?;
        let text = std::str::from_utf8(digits).map_err(|_| self.err("bad \\u escape"))?;
        let n = u32::from_str_radix(text, 16).map_err(|_| self.err("bad \\u escape"))?;
        self.pos += 4;
        Ok(n)
    }

    fn unicode_escape(&mut self) -> Result<char, JsonError> {
        let high = self.hex4()?;
        if (0xD800..0xDC00).contains(&high)
            && self.input.get(self.pos..self.pos + 2) == Some(b"\\u")
        {
            let save = self.pos;
            self.pos += 2;
            let low = self.hex4()?;
            if (0xDC00..0xE000).contains(&low) {
                let c = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
                return Ok(char::from_u32(c).unwrap_or('\u{FFFD}'));
            }
            self.pos = save;
        }
        // A lone surrogate: Java strings can hold one, UTF-8 cannot; keep the replacement char.
        Ok(char::from_u32(high).unwrap_or('\u{FFFD}'))
    }

    fn array(&mut self, depth: usize) -> Result<Value, JsonError> {
        self.pos += 1;
        let mut items = Vec::new();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            items.push(self.value(depth + 1)?);
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(self.err("expected , or ]")),
            }
        }
    }

    fn key(&mut self, depth: usize) -> Result<Value, JsonError> {
        match self.peek() {
            Some(b'{' | b'[' | b'"' | b'\'' | b'-' | b'0'..=b'9') => self.value(depth + 1),
            Some(b) if b.is_ascii_alphabetic() || b == b'_' || b == b'$' => {
                let w = self.word().to_string();
                Ok(match w.as_str() {
                    "null" => Value::Null,
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    _ => Value::String(w),
                })
            }
            _ => Err(self.err("expected an object key")),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, JsonError> {
        self.pos += 1;
        let mut entries = Vec::new();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Object(entries));
        }
        loop {
            let key = self.key(depth)?;
            if self.peek() != Some(b':') {
                return Err(self.err("expected :"));
            }
            self.pos += 1;
            let value = self.value(depth + 1)?;
            entries.push((key, value));
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    // fastjson tolerates a trailing comma before the closing brace.
                    if self.peek() == Some(b'}') {
                        self.pos += 1;
                        return Ok(Value::Object(entries));
                    }
                }
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Value::Object(entries));
                }
                _ => return Err(self.err("expected , or }")),
            }
        }
    }
}

/// A map whose keys fastjson writes as bare numbers (`HashMap<Long, String>` in Java), e.g.
/// `BrokerData.brokerAddrs` (broker id → address). Reads quoted and bare keys alike.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LongKeyMap<V>(pub BTreeMap<i64, V>);

impl<V: Serialize> Serialize for LongKeyMap<V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(&format!("{RAW_KEY}{k}"), v)?;
        }
        map.end()
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for LongKeyMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_map(KeyedVisitor(PhantomData, |k: &str| {
                k.trim().parse::<i64>().ok()
            }))
            .map(LongKeyMap)
    }
}

/// A queue as the remoting protocol names it (`MessageQueue`): also the key of the offset tables.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct MessageQueue {
    pub topic: String,
    pub broker_name: String,
    pub queue_id: i32,
}

/// A map keyed by [`MessageQueue`], which fastjson writes with the queue object itself as the key.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MessageQueueMap<V>(pub BTreeMap<MessageQueue, V>);

impl<V: Serialize> Serialize for MessageQueueMap<V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            let key = format!("{RAW_KEY}{}", to_string(k, Style::Fastjson));
            map.serialize_entry(&key, v)?;
        }
        map.end()
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for MessageQueueMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let parse_key = |k: &str| {
            from_slice::<MessageQueue>(k.strip_prefix(RAW_KEY).unwrap_or(k).as_bytes()).ok()
        };
        deserializer
            .deserialize_map(KeyedVisitor(PhantomData, parse_key))
            .map(MessageQueueMap)
    }
}

/// Reads a map whose string keys are parsed by `F` (shared by the two key-mapped maps).
struct KeyedVisitor<K, V, F>(PhantomData<(K, V)>, F);

impl<'de, K: Ord, V: Deserialize<'de>, F: Fn(&str) -> Option<K>> Visitor<'de>
    for KeyedVisitor<K, V, F>
{
    type Value = BTreeMap<K, V>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map with typed keys")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some((k, v)) = access.next_entry::<String, V>()? {
            let key = (self.1)(k.strip_prefix(RAW_KEY).unwrap_or(&k))
                .ok_or_else(|| serde::de::Error::custom(format!("bad map key {k:?}")))?;
            out.insert(key, v);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_bare_numeric_and_object_keys() {
        let v = parse(br#"{0:"127.0.0.1:10911",1:'b'}"#).unwrap();
        assert_eq!(
            v,
            Value::Object(vec![
                (
                    Value::Number("0".into()),
                    Value::String("127.0.0.1:10911".into())
                ),
                (Value::Number("1".into()), Value::String("b".into())),
            ])
        );
        let m: LongKeyMap<String> = from_slice(br#"{0:"a","1":"b"}"#).unwrap();
        assert_eq!(m.0.get(&0).map(String::as_str), Some("a"));
        assert_eq!(m.0.get(&1).map(String::as_str), Some("b"));

        let t: MessageQueueMap<i64> =
            from_slice(br#"{{"brokerName":"b","queueId":3,"topic":"t"}:42,{"brokerName":"b","queueId":0,"topic":"t"}:7}"#)
                .unwrap();
        let mq = MessageQueue {
            topic: "t".into(),
            broker_name: "b".into(),
            queue_id: 3,
        };
        assert_eq!(t.0.get(&mq), Some(&42));
        assert_eq!(t.0.len(), 2);
    }

    #[test]
    fn writes_keys_as_fastjson_does() {
        let mut m = LongKeyMap::default();
        m.0.insert(0, "127.0.0.1:10911".to_string());
        assert_eq!(to_string(&m, Style::Fastjson), r#"{0:"127.0.0.1:10911"}"#);
        assert_eq!(to_string(&m, Style::Standard), r#"{"0":"127.0.0.1:10911"}"#);

        let mut q = MessageQueueMap::default();
        q.0.insert(
            MessageQueue {
                topic: "t".into(),
                broker_name: "b".into(),
                queue_id: 1,
            },
            5i64,
        );
        assert_eq!(
            to_string(&q, Style::Fastjson),
            r#"{{"brokerName":"b","queueId":1,"topic":"t"}:5}"#
        );
    }

    #[test]
    fn marker_bytes_in_real_keys_stay_strings() {
        let mut m = BTreeMap::new();
        m.insert("\u{0}not a key".to_string(), 1);
        m.insert("\u{0}{broken".to_string(), 2);
        let text = to_vec(&m, Style::Fastjson);
        let back: BTreeMap<String, i32> = from_slice(&text).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn refuses_bad_text_precisely() {
        assert!(matches!(parse(b"{\"a\":}"), Err(JsonError::Syntax { .. })));
        assert!(matches!(parse(b"[1,2"), Err(JsonError::Syntax { .. })));
        assert!(matches!(parse(b"\"abc"), Err(JsonError::Syntax { .. })));
        assert!(matches!(parse(b"{} x"), Err(JsonError::Syntax { .. })));
        let deep = "[".repeat(MAX_DEPTH + 5);
        assert!(matches!(
            parse(deep.as_bytes()),
            Err(JsonError::TooDeep { .. })
        ));
    }

    #[test]
    fn unicode_escapes_and_surrogates() {
        assert_eq!(
            parse(br#""\u00e9\ud83d\ude00""#).unwrap(),
            Value::String("é😀".into())
        );
        assert_eq!(
            parse(br#""\ud83d""#).unwrap(),
            Value::String("\u{FFFD}".into())
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn queue_maps_round_trip(entries in proptest::collection::btree_map(
            ("[a-zA-Z0-9_%-]{1,20}", "[a-z0-9-]{1,10}", 0i32..64), any::<i64>(), 0..8)) {
            let map = MessageQueueMap(entries.into_iter()
                .map(|((topic, broker_name, queue_id), v)| (MessageQueue { topic, broker_name, queue_id }, v))
                .collect());
            let text = to_vec(&map, Style::Fastjson);
            let back: MessageQueueMap<i64> = from_slice(&text).unwrap();
            prop_assert_eq!(back, map);
        }

        #[test]
        fn strings_round_trip(s in "\\PC*") {
            let text = to_vec(&s, Style::Fastjson);
            prop_assert_eq!(parse(&text).unwrap(), Value::String(s));
        }
    }
}
