//! ReceiveMessage answers as raw bytes: the proxy decodes a receive's small request as usual,
//! but passes the broker's answer stream through without decoding the messages, rewriting only
//! each message's receipt handle (the group prefix of [`super::handles`]).
//!
//! Decoding every delivered message (body, properties, system properties) and encoding it again
//! was most of the proxy's cost per received message. The rewrite walks three levels of the
//! encoding (`ReceiveMessageResponse.message` #2, `Message.system_properties` #3,
//! `SystemProperties.receipt_handle` #12), copies every other field as it is, and writes the
//! new lengths: one copy of each message, no allocation per field.

use bytes::{Buf, BufMut, Bytes};
use ferromq_proto::v2;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::codegen::GrpcMethod;
use tonic::{Request, Response, Status, Streaming};

use super::handles::wrap_handle;
use super::raw::RawClient;

/// The RocketMQ API's receive method, the path the proxy answers with raw bytes.
pub const RECEIVE_PATH: &str = "/apache.rocketmq.v2.MessagingService/ReceiveMessage";
const SERVICE: &str = "apache.rocketmq.v2.MessagingService";

/// `ReceiveMessageResponse.status`, `.message`; `Message.system_properties`;
/// `SystemProperties.receipt_handle`; `Status.code`.
const RESPONSE_STATUS: u32 = 1;
const RESPONSE_MESSAGE: u32 = 2;
const MESSAGE_SYSTEM_PROPERTIES: u32 = 3;
const SYSTEM_PROPERTIES_RECEIPT_HANDLE: u32 = 12;
const STATUS_CODE: u32 = 1;

/// One encoded `ReceiveMessageResponse`.
#[derive(Debug, Clone, PartialEq)]
pub struct RawReceived(pub Bytes);

impl RawReceived {
    pub fn encode(resp: &v2::ReceiveMessageResponse) -> RawReceived {
        RawReceived(resp.encode_to_vec().into())
    }

    /// Whether the item carries a message (rather than a status or the delivery timestamp).
    pub fn is_message(&self) -> bool {
        find_field(&self.0, RESPONSE_MESSAGE).is_some()
    }

    /// The item with its message's receipt handle wrapped for `group`. An item that does not
    /// parse is passed on as it is: the client's decoder then reports it, as it would have.
    pub fn wrapped(self, group: &str) -> RawReceived {
        let rewritten = rewrite_len_field(&self.0, RESPONSE_MESSAGE, &mut |m| {
            rewrite_len_field(m, MESSAGE_SYSTEM_PROPERTIES, &mut |sp| {
                rewrite_len_field(sp, SYSTEM_PROPERTIES_RECEIPT_HANDLE, &mut |h| {
                    let h = std::str::from_utf8(h).ok()?;
                    Some(wrap_handle(group, h).into_bytes())
                })
            })
        });
        match rewritten {
            Some(b) => RawReceived(b.into()),
            None => self,
        }
    }
}

impl crate::rpc::StreamItem for RawReceived {
    fn status_code(&self) -> Option<i32> {
        let status = find_field(&self.0, RESPONSE_STATUS)?;
        let code = find_varint(status, STATUS_CODE).unwrap_or(0);
        Some(code as i32)
    }

    fn refusal(status: v2::Status) -> Self {
        RawReceived::encode(&v2::ReceiveMessageResponse {
            content: Some(v2::receive_message_response::Content::Status(status)),
        })
    }
}

/// Reads a varint at `*pos`, advancing it; `None` if it is cut short or too long.
fn read_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// One field of an encoding: its number, wire type, where it starts, and where its value
/// (the payload, for length-delimited fields) starts and ends.
struct Field {
    number: u32,
    wire: u8,
    start: usize,
    value: std::ops::Range<usize>,
}

/// The fields of an encoded message, in order; stops (`None` item) at the first malformed one.
fn fields(buf: &[u8]) -> impl Iterator<Item = Option<Field>> + '_ {
    let mut pos = 0;
    let mut broken = false;
    std::iter::from_fn(move || {
        if broken || pos >= buf.len() {
            return None;
        }
        let start = pos;
        let f = (|| {
            let key = read_varint(buf, &mut pos)?;
            let number = u32::try_from(key >> 3).ok()?;
            let wire = (key & 7) as u8;
            let value = match wire {
                0 => {
                    let from = pos;
                    read_varint(buf, &mut pos)?;
                    from..pos
                }
                1 => pos..pos.checked_add(8)?,
                2 => {
                    let len = usize::try_from(read_varint(buf, &mut pos)?).ok()?;
                    pos..pos.checked_add(len)?
                }
                5 => pos..pos.checked_add(4)?,
                _ => return None,
            };
            if value.end > buf.len() {
                return None;
            }
            pos = value.end;
            Some(Field {
                number,
                wire,
                start,
                value,
            })
        })();
        broken = f.is_none();
        Some(f)
    })
}

/// The payload of the last length-delimited field `number` (the one a decoder keeps).
fn find_field(buf: &[u8], number: u32) -> Option<&[u8]> {
    let mut found = None;
    for f in fields(buf) {
        let f = f?;
        if f.number == number && f.wire == 2 {
            found = Some(&buf[f.value]);
        }
    }
    found
}

/// The value of the last varint field `number`.
fn find_varint(buf: &[u8], number: u32) -> Option<u64> {
    let mut found = None;
    for f in fields(buf) {
        let f = f?;
        if f.number == number && f.wire == 0 {
            let mut p = f.value.start;
            found = read_varint(buf, &mut p);
        }
    }
    found
}

/// `buf` with the payload of every length-delimited field `number` replaced by what `f` makes
/// of it; `None` when `buf` does not parse, the field is absent, or `f` declines.
fn rewrite_len_field(
    buf: &[u8],
    number: u32,
    f: &mut dyn FnMut(&[u8]) -> Option<Vec<u8>>,
) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(buf.len() + 64);
    let mut hit = false;
    for field in fields(buf) {
        let field = field?;
        if field.number == number && field.wire == 2 {
            let new = f(&buf[field.value.clone()])?;
            let key = (u64::from(number) << 3) | 2;
            prost::encoding::encode_varint(key, &mut out);
            prost::encoding::encode_varint(new.len() as u64, &mut out);
            out.extend_from_slice(&new);
            hit = true;
        } else {
            out.extend_from_slice(&buf[field.start..field.value.end]);
        }
    }
    hit.then_some(out)
}

/// Server side of the raw receive: decodes the request, writes each answer's bytes as they are.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServeCodec;

/// Client side: encodes the request, passes each answer's bytes up undecoded.
#[derive(Debug, Clone, Copy, Default)]
pub struct ForwardCodec;

#[derive(Debug, Clone, Copy, Default)]
pub struct RequestDecoder;

#[derive(Debug, Clone, Copy, Default)]
pub struct RequestEncoder;

#[derive(Debug, Clone, Copy, Default)]
pub struct AnswerEncoder;

#[derive(Debug, Clone, Copy, Default)]
pub struct AnswerDecoder;

impl Codec for ServeCodec {
    type Encode = RawReceived;
    type Decode = v2::ReceiveMessageRequest;
    type Encoder = AnswerEncoder;
    type Decoder = RequestDecoder;

    fn encoder(&mut self) -> AnswerEncoder {
        AnswerEncoder
    }

    fn decoder(&mut self) -> RequestDecoder {
        RequestDecoder
    }
}

impl Codec for ForwardCodec {
    type Encode = v2::ReceiveMessageRequest;
    type Decode = RawReceived;
    type Encoder = RequestEncoder;
    type Decoder = AnswerDecoder;

    fn encoder(&mut self) -> RequestEncoder {
        RequestEncoder
    }

    fn decoder(&mut self) -> AnswerDecoder {
        AnswerDecoder
    }
}

impl Decoder for RequestDecoder {
    type Item = v2::ReceiveMessageRequest;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        v2::ReceiveMessageRequest::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

impl Encoder for RequestEncoder {
    type Item = v2::ReceiveMessageRequest;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encode the receive: {e}")))
    }
}

impl Encoder for AnswerEncoder {
    type Item = RawReceived;
    type Error = Status;

    fn encode(&mut self, item: RawReceived, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item.0);
        Ok(())
    }
}

impl Decoder for AnswerDecoder {
    type Item = RawReceived;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<RawReceived>, Status> {
        let n = src.remaining();
        Ok(Some(RawReceived(src.copy_to_bytes(n))))
    }
}

/// Sends a receive to a broker and returns its answers undecoded.
pub async fn receive(
    c: &mut RawClient,
    mut req: Request<v2::ReceiveMessageRequest>,
) -> Result<Response<Streaming<RawReceived>>, Status> {
    c.ready()
        .await
        .map_err(|e| Status::unknown(format!("Service was not ready: {e}")))?;
    req.extensions_mut()
        .insert(GrpcMethod::new(SERVICE, "ReceiveMessage"));
    c.server_streaming(req, PathAndQuery::from_static(RECEIVE_PATH), ForwardCodec)
        .await
}

/// Decodes a raw answer (for the generated server's typed method, which the front never
/// reaches in practice).
pub fn decode(item: RawReceived) -> Result<v2::ReceiveMessageResponse, Status> {
    v2::ReceiveMessageResponse::decode(item.0).map_err(|e| Status::internal(e.to_string()))
}

/// A length-delimited field, for tests and for answers the proxy builds.
#[cfg(test)]
fn put_len_field(out: &mut bytes::BytesMut, number: u32, payload: &[u8]) {
    prost::encoding::encode_varint((u64::from(number) << 3) | 2, out);
    prost::encoding::encode_varint(payload.len() as u64, out);
    out.put_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::StreamItem;
    use bytes::BytesMut;

    fn delivered(handle: Option<&str>) -> v2::ReceiveMessageResponse {
        v2::ReceiveMessageResponse {
            content: Some(v2::receive_message_response::Content::Message(
                v2::Message {
                    topic: Some(v2::Resource {
                        resource_namespace: "ns".into(),
                        name: "orders".into(),
                    }),
                    user_properties: [("k".to_string(), "v".to_string())].into_iter().collect(),
                    system_properties: Some(v2::SystemProperties {
                        message_id: "01ABC".into(),
                        tag: Some("paid".into()),
                        receipt_handle: handle.map(str::to_string),
                        delivery_attempt: Some(2),
                        queue_offset: Some(77),
                        ..Default::default()
                    }),
                    body: Bytes::from(vec![7u8; 3000]),
                },
            )),
        }
    }

    #[test]
    fn the_rewrite_wraps_the_handle_and_keeps_every_other_field() {
        let raw = RawReceived::encode(&delivered(Some("F1.abc.3.77.1")));
        assert!(raw.is_message());
        let got = decode(raw.wrapped("g1")).expect("decodes");
        let mut want = delivered(Some("F1.abc.3.77.1"));
        if let Some(v2::receive_message_response::Content::Message(m)) = want.content.as_mut() {
            if let Some(sp) = m.system_properties.as_mut() {
                sp.receipt_handle = Some("fm:g1:F1.abc.3.77.1".into());
            }
        }
        assert_eq!(got, want);
        assert_eq!(RawReceived::encode(&got), RawReceived::encode(&want));
    }

    #[test]
    fn items_without_a_handle_pass_unchanged() {
        for item in [
            delivered(None),
            v2::ReceiveMessageResponse {
                content: Some(v2::receive_message_response::Content::Status(v2::Status {
                    code: v2::Code::MessageNotFound as i32,
                    message: "no new message".into(),
                })),
            },
            v2::ReceiveMessageResponse {
                content: Some(v2::receive_message_response::Content::DeliveryTimestamp(
                    prost_types::Timestamp {
                        seconds: 5,
                        nanos: 6,
                    },
                )),
            },
        ] {
            let raw = RawReceived::encode(&item);
            assert_eq!(raw.clone().wrapped("g1"), raw);
        }
    }

    #[test]
    fn the_status_code_is_read_from_the_bytes() {
        let ok = RawReceived::encode(&v2::ReceiveMessageResponse {
            content: Some(v2::receive_message_response::Content::Status(v2::Status {
                code: v2::Code::Ok as i32,
                message: "OK".into(),
            })),
        });
        assert_eq!(ok.status_code(), Some(v2::Code::Ok as i32));
        assert!(!ok.is_message());
        let refused = RawReceived::refusal(v2::Status {
            code: v2::Code::Forbidden as i32,
            message: "no".into(),
        });
        assert_eq!(refused.status_code(), Some(v2::Code::Forbidden as i32));
        assert_eq!(
            RawReceived::encode(&delivered(Some("h"))).status_code(),
            None
        );
    }

    #[test]
    fn malformed_bytes_are_passed_on_not_guessed_at() {
        // A message field whose length runs past the end.
        let mut b = BytesMut::new();
        put_len_field(&mut b, RESPONSE_MESSAGE, b"\x1a\x05\x62\x01");
        let cut = Bytes::from(b[..b.len() - 1].to_vec());
        let raw = RawReceived(cut.clone());
        assert_eq!(raw.wrapped("g1").0, cut);
        // An unknown wire type.
        let odd = Bytes::from_static(&[0x17, 0x01]);
        assert_eq!(RawReceived(odd.clone()).wrapped("g1").0, odd);
    }

    #[test]
    fn a_handle_that_is_not_utf8_is_left_for_the_client_to_refuse() {
        let mut sp = BytesMut::new();
        put_len_field(&mut sp, SYSTEM_PROPERTIES_RECEIPT_HANDLE, &[0xff, 0xfe]);
        let mut m = BytesMut::new();
        put_len_field(&mut m, MESSAGE_SYSTEM_PROPERTIES, &sp);
        let mut r = BytesMut::new();
        put_len_field(&mut r, RESPONSE_MESSAGE, &m);
        let raw = RawReceived(r.freeze());
        assert_eq!(raw.clone().wrapped("g1"), raw);
    }
}
