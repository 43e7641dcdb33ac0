//! The remoting command: one request or response, the unit every frame carries.
//!
//! A command is a small header (code, language, version, opaque, flag, remark and the string map
//! `extFields` that carries the typed "custom header" of each request) plus an opaque body. The
//! header travels in one of two serializations ([`SerializeType`]); a server answers in the one the
//! request used, which [`Command::response_to`] arranges.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::code::LanguageCode;
use crate::custom::CustomHeader;

/// The string map every custom header travels in. Ordered so encodings are deterministic.
pub type ExtFields = BTreeMap<String, String>;

/// Bit 0 of `flag`: set on responses.
pub const FLAG_RESPONSE: i32 = 1;
/// Bit 1 of `flag`: set on one-way requests, which get no response.
pub const FLAG_ONEWAY: i32 = 1 << 1;

/// How a command's header is serialized: the high byte of the frame's second word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SerializeType {
    /// fastjson text; what Java clients send unless `rocketmq.serialize.type=ROCKETMQ`.
    #[default]
    Json,
    /// RocketMQ's compact binary header (`RocketMQSerializable`).
    RocketMq,
}

impl SerializeType {
    /// The byte on the wire.
    pub fn code(self) -> u8 {
        match self {
            SerializeType::Json => 0,
            SerializeType::RocketMq => 1,
        }
    }

    /// From the byte on the wire; `None` for a type RocketMQ does not define.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(SerializeType::Json),
            1 => Some(SerializeType::RocketMq),
            _ => None,
        }
    }
}

/// One remoting request or response.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Command {
    /// Request code ([`crate::code::request`]) or response code ([`crate::code::response`]).
    pub code: i32,
    pub language: LanguageCode,
    /// The sender's RocketMQ version as an ordinal of `MQVersion.Version` (4.9.8 = 409, 5.3.3 =
    /// 479); it changes answers, e.g. the route's JSON style.
    pub version: i32,
    /// Correlates a response with its request: a response carries the request's opaque.
    pub opaque: i32,
    /// [`FLAG_RESPONSE`] and [`FLAG_ONEWAY`] bits.
    pub flag: i32,
    /// Human-readable text; on error responses the reason clients show.
    pub remark: Option<String>,
    pub ext_fields: ExtFields,
    pub body: Bytes,
    /// The header serialization this command arrived in or will be written in.
    pub serialize_type: SerializeType,
}

impl Command {
    /// A request with the given code and custom header (JSON header, Java language code).
    pub fn request(code: i32, opaque: i32, header: &impl CustomHeader) -> Self {
        Command {
            code,
            opaque,
            ext_fields: header.to_ext_fields(),
            ..Command::default()
        }
    }

    /// Whether this is a response (flag bit 0).
    pub fn is_response(&self) -> bool {
        self.flag & FLAG_RESPONSE != 0
    }

    /// Whether this is a one-way request: the sender waits for no answer, so none is written.
    pub fn is_oneway(&self) -> bool {
        self.flag & FLAG_ONEWAY != 0
    }

    /// The response to `self` with a code and remark: same opaque and serialization, response bit
    /// set, the server's language and version left to the caller.
    pub fn response_to(&self, code: i32, remark: impl Into<Option<String>>) -> Command {
        Command {
            code,
            language: LanguageCode::Java,
            version: self.version,
            opaque: self.opaque,
            flag: FLAG_RESPONSE,
            remark: remark.into(),
            ext_fields: ExtFields::new(),
            body: Bytes::new(),
            serialize_type: self.serialize_type,
        }
    }

    /// Builder: sets the custom header (replacing `ext_fields`).
    pub fn with_header(mut self, header: &impl CustomHeader) -> Command {
        self.ext_fields = header.to_ext_fields();
        self
    }

    /// Builder: sets the body.
    pub fn with_body(mut self, body: impl Into<Bytes>) -> Command {
        self.body = body.into();
        self
    }

    /// Decodes the custom header of this command.
    pub fn header<H: CustomHeader>(&self) -> Result<H, crate::custom::FieldError> {
        H::from_ext_fields(&self.ext_fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::code::{request, response};

    #[test]
    fn response_keeps_opaque_and_serialization() {
        let req = Command {
            code: request::HEART_BEAT,
            opaque: 77,
            flag: 0,
            serialize_type: SerializeType::RocketMq,
            ..Command::default()
        };
        assert!(!req.is_response());
        assert!(!req.is_oneway());
        let resp = req.response_to(response::SUCCESS, None);
        assert!(resp.is_response());
        assert_eq!(resp.opaque, 77);
        assert_eq!(resp.serialize_type, SerializeType::RocketMq);
        let oneway = Command {
            flag: FLAG_ONEWAY,
            ..Command::default()
        };
        assert!(oneway.is_oneway());
    }
}
