//! The two serializations of a command header.
//!
//! JSON (serialize type 0) is fastjson's rendering of the Java `RemotingCommand` bean, fields in
//! alphabetical order, nulls left out:
//! `{"code":105,"extFields":{"topic":"t"},"flag":0,"language":"JAVA","opaque":3,"serializeTypeCurrentRPC":"JSON","version":409}`.
//! Readers must take numbers given as strings and the reverse, since non-Java clients write the
//! header with their own JSON libraries.
//!
//! ROCKETMQ (serialize type 1), all integers big-endian:
//!
//! ```text
//! code       i16
//! language   u8   (LanguageCode number)
//! version    i16
//! opaque     i32
//! flag       i32
//! remark     i32 length + UTF-8 bytes (length 0 = no remark)
//! extFields  i32 length of the whole map, then per entry:
//!            key   i16 length + UTF-8, value i32 length + UTF-8
//! ```
//! A zero length reads as "absent" in Java (a null key or value), so an empty value is dropped.

use crate::code::LanguageCode;
use crate::command::{Command, SerializeType};
use crate::fastjson::{self, JsonError, Value};

/// Why a header could not be read or written.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum HeaderError {
    #[error("JSON header: {0}")]
    Json(#[from] JsonError),
    #[error("JSON header is not an object")]
    NotAnObject,
    #[error("JSON header field {field} has a bad value {value:?}")]
    BadField { field: &'static str, value: String },
    #[error("binary header truncated reading {field}: need {need} bytes, {have} left")]
    Truncated {
        field: &'static str,
        need: usize,
        have: usize,
    },
    #[error("binary header field {field} is not UTF-8")]
    NotUtf8 { field: &'static str },
    #[error("binary header: {field} length {length} is negative")]
    NegativeLength { field: &'static str, length: i32 },
    #[error("binary header: {len} trailing bytes after the ext fields")]
    Trailing { len: usize },
    #[error("{field} value {value} does not fit the binary header's 16 bits")]
    TooWide { field: &'static str, value: i64 },
}

/// Decodes a header of the given serialization into a command (body left empty).
pub fn decode(serialize_type: SerializeType, bytes: &[u8]) -> Result<Command, HeaderError> {
    let mut cmd = match serialize_type {
        SerializeType::Json => decode_json(bytes)?,
        SerializeType::RocketMq => decode_binary(bytes)?,
    };
    cmd.serialize_type = serialize_type;
    Ok(cmd)
}

/// Encodes the header of `cmd` in its own serialization.
pub fn encode(cmd: &Command) -> Result<Vec<u8>, HeaderError> {
    match cmd.serialize_type {
        SerializeType::Json => Ok(encode_json(cmd)),
        SerializeType::RocketMq => encode_binary(cmd),
    }
}

fn int_field(v: &Value, field: &'static str) -> Result<i32, HeaderError> {
    let text = v.scalar_text().unwrap_or_default();
    text.trim()
        .parse::<i64>()
        .ok()
        .and_then(|n| i32::try_from(n).ok())
        .ok_or(HeaderError::BadField { field, value: text })
}

fn decode_json(bytes: &[u8]) -> Result<Command, HeaderError> {
    let value = fastjson::parse(bytes)?;
    let entries = value.as_object().ok_or(HeaderError::NotAnObject)?;
    let mut cmd = Command::default();
    let mut saw_code = false;
    for (k, v) in entries {
        let Value::String(key) = k else { continue };
        if matches!(v, Value::Null) {
            continue;
        }
        match key.as_str() {
            "code" => {
                cmd.code = int_field(v, "code")?;
                saw_code = true;
            }
            "opaque" => cmd.opaque = int_field(v, "opaque")?,
            "flag" => cmd.flag = int_field(v, "flag")?,
            "version" => cmd.version = int_field(v, "version")?,
            "language" => {
                cmd.language = match v {
                    // Some clients write the number; an unknown one becomes OTHER, since JSON
                    // answers can only carry names.
                    Value::Number(n) => match LanguageCode::from_code(n.parse().unwrap_or(7)) {
                        LanguageCode::Unknown(_) => LanguageCode::Other,
                        known => known,
                    },
                    other => LanguageCode::from_name(&other.scalar_text().unwrap_or_default()),
                }
            }
            "remark" => cmd.remark = v.scalar_text(),
            "extFields" => {
                let fields = v.as_object().ok_or(HeaderError::BadField {
                    field: "extFields",
                    value: format!("{v:?}"),
                })?;
                for (fk, fv) in fields {
                    let (Some(name), Some(text)) = (fk.scalar_text(), fv.scalar_text()) else {
                        continue;
                    };
                    cmd.ext_fields.insert(name, text);
                }
            }
            _ => {}
        }
    }
    if !saw_code {
        return Err(HeaderError::BadField {
            field: "code",
            value: "(missing)".into(),
        });
    }
    Ok(cmd)
}

fn encode_json(cmd: &Command) -> Vec<u8> {
    // Written by hand to keep fastjson's field order and to leave out nulls, as Java peers do.
    let mut out = String::with_capacity(128);
    out.push_str(&format!("{{\"code\":{}", cmd.code));
    if !cmd.ext_fields.is_empty() {
        out.push_str(",\"extFields\":");
        // A plain string map: serde_json's escaping, none of fastjson's key handling.
        out.push_str(&serde_json::to_string(&cmd.ext_fields).unwrap_or_else(|_| "{}".into()));
    }
    out.push_str(&format!(
        ",\"flag\":{},\"language\":\"{}\",\"opaque\":{}",
        cmd.flag,
        cmd.language.name(),
        cmd.opaque
    ));
    if let Some(remark) = &cmd.remark {
        out.push_str(",\"remark\":");
        out.push_str(&serde_json::Value::String(remark.clone()).to_string());
    }
    out.push_str(&format!(
        ",\"serializeTypeCurrentRPC\":\"JSON\",\"version\":{}}}",
        cmd.version
    ));
    out.into_bytes()
}

struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], HeaderError> {
        if self.buf.len() < n {
            return Err(HeaderError::Truncated {
                field,
                need: n,
                have: self.buf.len(),
            });
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], HeaderError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    fn i16(&mut self, field: &'static str) -> Result<i16, HeaderError> {
        Ok(i16::from_be_bytes(self.array(field)?))
    }

    fn i32(&mut self, field: &'static str) -> Result<i32, HeaderError> {
        Ok(i32::from_be_bytes(self.array(field)?))
    }

    /// A string with a length prefix; `None` when the length is 0 (Java's null).
    fn string(&mut self, short: bool, field: &'static str) -> Result<Option<String>, HeaderError> {
        let len = if short {
            i32::from(self.i16(field)?)
        } else {
            self.i32(field)?
        };
        if len < 0 {
            return Err(HeaderError::NegativeLength { field, length: len });
        }
        if len == 0 {
            return Ok(None);
        }
        // The length is checked against what is left before anything is allocated.
        let bytes = self.take(len as usize, field)?;
        String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|_| HeaderError::NotUtf8 { field })
    }
}

fn decode_binary(bytes: &[u8]) -> Result<Command, HeaderError> {
    let mut c = Cursor { buf: bytes };
    let mut cmd = Command {
        code: i32::from(c.i16("code")?),
        language: LanguageCode::from_code(c.array::<1>("language")?[0]),
        version: i32::from(c.i16("version")?),
        opaque: c.i32("opaque")?,
        flag: c.i32("flag")?,
        remark: c.string(false, "remark")?,
        ..Command::default()
    };
    let map_len = c.i32("extFields length")?;
    if map_len < 0 {
        return Err(HeaderError::NegativeLength {
            field: "extFields",
            length: map_len,
        });
    }
    let mut map = Cursor {
        buf: c.take(map_len as usize, "extFields")?,
    };
    while !map.buf.is_empty() {
        let key = map.string(true, "extFields key")?;
        let value = map.string(false, "extFields value")?;
        if let (Some(k), Some(v)) = (key, value) {
            cmd.ext_fields.insert(k, v);
        }
    }
    if !c.buf.is_empty() {
        return Err(HeaderError::Trailing { len: c.buf.len() });
    }
    Ok(cmd)
}

fn narrow(value: i32, field: &'static str) -> Result<i16, HeaderError> {
    i16::try_from(value).map_err(|_| HeaderError::TooWide {
        field,
        value: i64::from(value),
    })
}

fn encode_binary(cmd: &Command) -> Result<Vec<u8>, HeaderError> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&narrow(cmd.code, "code")?.to_be_bytes());
    out.push(cmd.language.code());
    out.extend_from_slice(&narrow(cmd.version, "version")?.to_be_bytes());
    out.extend_from_slice(&cmd.opaque.to_be_bytes());
    out.extend_from_slice(&cmd.flag.to_be_bytes());
    let remark = cmd.remark.as_deref().unwrap_or("");
    out.extend_from_slice(&(remark.len() as i32).to_be_bytes());
    out.extend_from_slice(remark.as_bytes());
    let map_at = out.len();
    out.extend_from_slice(&[0; 4]);
    for (k, v) in &cmd.ext_fields {
        let key_len = i16::try_from(k.len()).map_err(|_| HeaderError::TooWide {
            field: "extFields key length",
            value: k.len() as i64,
        })?;
        out.extend_from_slice(&key_len.to_be_bytes());
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&(v.len() as i32).to_be_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    let map_len = (out.len() - map_at - 4) as i32;
    out[map_at..map_at + 4].copy_from_slice(&map_len.to_be_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::ExtFields;
    use proptest::prelude::*;

    fn sample() -> Command {
        let mut ext = ExtFields::new();
        ext.insert("topic".into(), "TopicA".into());
        Command {
            code: 105,
            language: LanguageCode::Java,
            version: 409,
            opaque: 3,
            flag: 0,
            remark: None,
            ext_fields: ext,
            ..Command::default()
        }
    }

    #[test]
    fn json_header_is_fastjson_shaped() {
        let text = String::from_utf8(encode_json(&sample())).unwrap();
        assert_eq!(
            text,
            r#"{"code":105,"extFields":{"topic":"TopicA"},"flag":0,"language":"JAVA","opaque":3,"serializeTypeCurrentRPC":"JSON","version":409}"#
        );
        let back = decode(SerializeType::Json, text.as_bytes()).unwrap();
        assert_eq!(back, sample());
    }

    /// Found by the `header` fuzz target: an extFields key starting with a NUL byte was taken
    /// for fastjson's bare-key marker and written unquoted.
    #[test]
    fn control_characters_in_ext_fields_round_trip() {
        let mut cmd = sample();
        cmd.ext_fields
            .insert("\u{0}\u{0}x".into(), "\u{1}v\u{2}".into());
        cmd.remark = Some("\u{0}".into());
        let bytes = encode_json(&cmd);
        assert_eq!(decode(SerializeType::Json, &bytes).unwrap(), cmd);
    }

    #[test]
    fn json_header_tolerates_other_writers() {
        // Numbers as strings, language as a number, unknown fields, extFields values not strings.
        let cmd = decode(
            SerializeType::Json,
            br#"{"code":"34","language":9,"version":"0","opaque":12,"flag":2,"extFields":{"a":1,"b":true,"c":null},"x":[1]}"#,
        )
        .unwrap();
        assert_eq!(cmd.code, 34);
        assert_eq!(cmd.language, LanguageCode::Go);
        assert_eq!(cmd.opaque, 12);
        assert!(cmd.is_oneway());
        assert_eq!(cmd.ext_fields.get("a").map(String::as_str), Some("1"));
        assert_eq!(cmd.ext_fields.get("b").map(String::as_str), Some("true"));
        assert!(!cmd.ext_fields.contains_key("c"));
        assert!(matches!(
            decode(SerializeType::Json, br#"{"opaque":1}"#),
            Err(HeaderError::BadField { field: "code", .. })
        ));
        assert!(matches!(
            decode(SerializeType::Json, br#"[1]"#),
            Err(HeaderError::NotAnObject)
        ));
        assert!(matches!(
            decode(SerializeType::Json, br#"{"code":"x"}"#),
            Err(HeaderError::BadField { .. })
        ));
    }

    /// Byte layout written out by hand from the field list in the module docs.
    #[test]
    fn binary_header_vector() {
        let bytes = encode_binary(&sample()).unwrap();
        let expected: Vec<u8> = [
            &[0x00, 0x69][..], // code 105
            &[0x00],           // JAVA
            &[0x01, 0x99],     // version 409
            &[0, 0, 0, 3],     // opaque
            &[0, 0, 0, 0],     // flag
            &[0, 0, 0, 0],     // no remark
            &[0, 0, 0, 17],    // map length: 2+5+4+6
            &[0, 5],
            b"topic",
            &[0, 0, 0, 6],
            b"TopicA",
        ]
        .concat();
        assert_eq!(bytes, expected);
        assert_eq!(
            decode(SerializeType::RocketMq, &bytes).unwrap(),
            Command {
                serialize_type: SerializeType::RocketMq,
                ..sample()
            }
        );
    }

    #[test]
    fn binary_header_refuses_lies() {
        let good = encode_binary(&sample()).unwrap();
        for cut in 0..good.len() {
            assert!(decode_binary(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut long_remark = good.clone();
        long_remark[13..17].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(matches!(
            decode_binary(&long_remark),
            Err(HeaderError::Truncated {
                field: "remark",
                ..
            })
        ));
        let mut negative = good.clone();
        negative[17..21].copy_from_slice(&(-1i32).to_be_bytes());
        assert!(matches!(
            decode_binary(&negative),
            Err(HeaderError::NegativeLength { .. })
        ));
        let wide = Command {
            code: 200_050,
            ..sample()
        };
        assert!(matches!(
            encode_binary(&wide),
            Err(HeaderError::TooWide { field: "code", .. })
        ));
    }

    fn arb_command() -> impl Strategy<Value = Command> {
        (
            any::<i16>(),
            0u8..14,
            any::<i16>(),
            any::<i32>(),
            any::<i32>(),
            proptest::option::of("\\PC{1,40}"),
            proptest::collection::btree_map("[a-zA-Z]{1,12}", "\\PC{1,30}", 0..6),
        )
            .prop_map(|(code, lang, version, opaque, flag, remark, ext)| Command {
                code: code.into(),
                language: LanguageCode::from_code(lang),
                version: version.into(),
                opaque,
                flag,
                remark,
                ext_fields: ext,
                ..Command::default()
            })
    }

    proptest! {
        #[test]
        fn both_serializations_round_trip(cmd in arb_command()) {
            for st in [SerializeType::Json, SerializeType::RocketMq] {
                let cmd = Command { serialize_type: st, ..cmd.clone() };
                let bytes = encode(&cmd).unwrap();
                prop_assert_eq!(decode(st, &bytes).unwrap(), cmd);
            }
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = decode(SerializeType::Json, &bytes);
            let _ = decode(SerializeType::RocketMq, &bytes);
        }
    }
}
