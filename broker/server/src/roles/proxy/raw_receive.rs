//! ReceiveMessage answers as raw bytes: the proxy decodes a receive's small request as usual,
//! but passes the broker's answer stream through without decoding the messages, rewriting only
//! each message's receipt handle (the group prefix of [`super::handles`]).
//!
//! Decoding every delivered message (body, properties, system properties) and encoding it again
//! was most of the proxy's cost per received message. The rewrite finds three levels of the
//! encoding (`ReceiveMessageResponse.message` #2, `Message.system_properties` #3,
//! `SystemProperties.receipt_handle` #12) and remembers where they are; the answer's encoder
//! then writes the broker's bytes around three new length headers and the group prefix, so a
//! delivered message is copied once, into the answer, with no allocation of its own.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use ferromq_proto::v2;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::codegen::GrpcMethod;
use tonic::{Request, Response, Status, Streaming};

use super::handles::{put_wrap_prefix, wrap_handle, wrap_prefix_len};
use super::raw::RawClient;
use super::wire::{
    find_field, one_len_field, put_len_header, rewrite_len_field, status_code, varint_len, One,
    Place,
};

/// The RocketMQ API's receive method, the path the proxy answers with raw bytes.
pub const RECEIVE_PATH: &str = "/apache.rocketmq.v2.MessagingService/ReceiveMessage";
const SERVICE: &str = "apache.rocketmq.v2.MessagingService";

/// `ReceiveMessageResponse.status`, `.message`; `Message.system_properties`;
/// `SystemProperties.receipt_handle`.
const RESPONSE_STATUS: u32 = 1;
const RESPONSE_MESSAGE: u32 = 2;
const MESSAGE_SYSTEM_PROPERTIES: u32 = 3;
const SYSTEM_PROPERTIES_RECEIPT_HANDLE: u32 = 12;

/// One `ReceiveMessageResponse` as the broker encoded it, and the receipt handle wrap its
/// encoder still has to write.
#[derive(Debug, Clone, PartialEq)]
pub struct RawReceived {
    bytes: Bytes,
    wrap: Option<Wrap>,
}

/// A handle wrap to write: the group, and where the message, its system properties and its
/// receipt handle sit in the broker's bytes (outermost first). Each level holds the next.
#[derive(Debug, Clone, PartialEq)]
struct Wrap {
    group: Arc<str>,
    levels: [Place; 3],
}

impl RawReceived {
    /// An answer to pass on as it is.
    pub fn new(bytes: Bytes) -> RawReceived {
        RawReceived { bytes, wrap: None }
    }

    pub fn encode(resp: &v2::ReceiveMessageResponse) -> RawReceived {
        RawReceived::new(resp.encode_to_vec().into())
    }

    /// Whether the item carries a message (rather than a status or the delivery timestamp).
    pub fn is_message(&self) -> bool {
        find_field(&self.bytes, RESPONSE_MESSAGE).is_some()
    }

    /// The item with its message's receipt handle to be wrapped for `group`. An item that does
    /// not parse is passed on as it is: the client's decoder then reports it, as it would have.
    pub fn wrapped(self, group: &Arc<str>) -> RawReceived {
        if self.wrap.is_some() {
            // Wrapped once already: settle the first wrap into bytes, then place the second.
            return RawReceived::new(self.to_bytes()).wrapped(group);
        }
        match place_handle(&self.bytes) {
            Placed::At(levels) => RawReceived {
                bytes: self.bytes,
                wrap: Some(Wrap {
                    group: group.clone(),
                    levels,
                }),
            },
            Placed::Nowhere => self,
            // A field given more than once (which a decoder merges): every copy is rewritten,
            // the slow way.
            Placed::Repeated => match rewrite_every_handle(&self.bytes, group) {
                Some(b) => RawReceived::new(b.into()),
                None => self,
            },
        }
    }

    /// How many bytes the encoder writes.
    pub fn encoded_len(&self) -> usize {
        match &self.wrap {
            None => self.bytes.len(),
            Some(w) => {
                let [m, _, _] = w.levels;
                let lens = w.lengths();
                self.bytes.len() + (lens[0] - m.len) + (varint_len(lens[0]) - varint_len(m.len))
            }
        }
    }

    /// Writes the answer, wrap included, to `out`.
    pub fn put_into(&self, out: &mut impl BufMut) {
        let b = &self.bytes[..];
        let Some(w) = &self.wrap else {
            out.put_slice(b);
            return;
        };
        let [m, sp, h] = w.levels;
        let [m_len, sp_len, h_len] = w.lengths();
        out.put_slice(&b[..m.key]);
        put_len_header(out, RESPONSE_MESSAGE, m_len);
        out.put_slice(&b[m.payload..sp.key]);
        put_len_header(out, MESSAGE_SYSTEM_PROPERTIES, sp_len);
        out.put_slice(&b[sp.payload..h.key]);
        put_len_header(out, SYSTEM_PROPERTIES_RECEIPT_HANDLE, h_len);
        put_wrap_prefix(&w.group, out);
        out.put_slice(&b[h.payload..]);
    }

    /// The answer as the client receives it.
    pub fn to_bytes(&self) -> Bytes {
        if self.wrap.is_none() {
            return self.bytes.clone();
        }
        let mut out = BytesMut::with_capacity(self.encoded_len());
        self.put_into(&mut out);
        out.freeze()
    }
}

impl Wrap {
    /// The new payload lengths of the message, its system properties and the handle.
    fn lengths(&self) -> [usize; 3] {
        let [m, sp, h] = self.levels;
        let h_len = h.len + wrap_prefix_len(&self.group);
        let sp_len = sp.len + (h_len - h.len) + (varint_len(h_len) - varint_len(h.len));
        let m_len = m.len + (sp_len - sp.len) + (varint_len(sp_len) - varint_len(sp.len));
        [m_len, sp_len, h_len]
    }
}

/// Where a response's receipt handle is.
enum Placed {
    /// One message, holding one system properties field, holding one non-empty UTF-8 handle.
    At([Place; 3]),
    /// No handle to wrap (a status, a timestamp, a message without one), or bytes that do not
    /// parse, or a handle that is empty or not UTF-8 (passed on for the client to judge).
    Nowhere,
    /// A level given more than once.
    Repeated,
}

fn place_handle(buf: &[u8]) -> Placed {
    let mut levels = [Place {
        key: 0,
        payload: 0,
        len: 0,
    }; 3];
    let mut within = 0..buf.len();
    for (i, number) in [
        RESPONSE_MESSAGE,
        MESSAGE_SYSTEM_PROPERTIES,
        SYSTEM_PROPERTIES_RECEIPT_HANDLE,
    ]
    .into_iter()
    .enumerate()
    {
        let place = match one_len_field(&buf[within.clone()], number) {
            One::Found(p) => p.shifted(within.start),
            One::Repeated => return Placed::Repeated,
            One::Absent | One::Malformed => return Placed::Nowhere,
        };
        levels[i] = place;
        within = place.payload_range();
    }
    let handle = &buf[within];
    if handle.is_empty() || std::str::from_utf8(handle).is_err() {
        return Placed::Nowhere;
    }
    Placed::At(levels)
}

/// Every receipt handle of a response whose fields repeat, wrapped; `None` when there is none
/// to wrap or the bytes do not parse.
fn rewrite_every_handle(buf: &[u8], group: &str) -> Option<Vec<u8>> {
    rewrite_len_field(buf, RESPONSE_MESSAGE, &mut |m| {
        rewrite_len_field(m, MESSAGE_SYSTEM_PROPERTIES, &mut |sp| {
            rewrite_len_field(sp, SYSTEM_PROPERTIES_RECEIPT_HANDLE, &mut |h| {
                let h = std::str::from_utf8(h).ok()?;
                Some(wrap_handle(group, h).into_bytes())
            })
        })
    })
}

impl crate::rpc::StreamItem for RawReceived {
    fn status_code(&self) -> Option<i32> {
        status_code(&self.bytes, RESPONSE_STATUS)
    }

    fn refusal(status: v2::Status) -> Self {
        RawReceived::encode(&v2::ReceiveMessageResponse {
            content: Some(v2::receive_message_response::Content::Status(status)),
        })
    }
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
        dst.reserve(item.encoded_len());
        item.put_into(dst);
        Ok(())
    }
}

impl Decoder for AnswerDecoder {
    type Item = RawReceived;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<RawReceived>, Status> {
        let n = src.remaining();
        Ok(Some(RawReceived::new(src.copy_to_bytes(n))))
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
    v2::ReceiveMessageResponse::decode(item.to_bytes()).map_err(|e| Status::internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::super::wire::put_len_field;
    use super::*;
    use crate::rpc::StreamItem;
    use proptest::prelude::*;

    fn g1() -> Arc<str> {
        Arc::from("g1")
    }

    /// `resp` with its message's receipt handle wrapped for `group`, as the proxy must hand
    /// it out.
    fn with_wrapped_handle(
        mut resp: v2::ReceiveMessageResponse,
        group: &str,
    ) -> v2::ReceiveMessageResponse {
        if let Some(v2::receive_message_response::Content::Message(m)) = resp.content.as_mut() {
            if let Some(sp) = m.system_properties.as_mut() {
                if let Some(h) = sp.receipt_handle.as_mut() {
                    *h = wrap_handle(group, h);
                }
            }
        }
        resp
    }

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
        let wrapped = raw.wrapped(&g1());
        assert!(wrapped.is_message());
        let got = decode(wrapped.clone()).expect("decodes");
        let want = with_wrapped_handle(delivered(Some("F1.abc.3.77.1")), "g1");
        assert_eq!(
            want.content,
            delivered(Some("fm:g1:F1.abc.3.77.1")).content,
            "the test's own wrap"
        );
        assert_eq!(got, want);
        assert_eq!(wrapped.to_bytes(), RawReceived::encode(&want).to_bytes());
        assert_eq!(wrapped.encoded_len(), wrapped.to_bytes().len());
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
            assert_eq!(raw.clone().wrapped(&g1()), raw);
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
        let raw = RawReceived::new(cut.clone());
        assert_eq!(raw.wrapped(&g1()).to_bytes(), cut);
        // An unknown wire type.
        let odd = Bytes::from_static(&[0x17, 0x01]);
        assert_eq!(RawReceived::new(odd.clone()).wrapped(&g1()).to_bytes(), odd);
    }

    #[test]
    fn a_handle_that_is_not_utf8_is_left_for_the_client_to_refuse() {
        let mut sp = BytesMut::new();
        put_len_field(&mut sp, SYSTEM_PROPERTIES_RECEIPT_HANDLE, &[0xff, 0xfe]);
        let mut m = BytesMut::new();
        put_len_field(&mut m, MESSAGE_SYSTEM_PROPERTIES, &sp);
        let mut r = BytesMut::new();
        put_len_field(&mut r, RESPONSE_MESSAGE, &m);
        let raw = RawReceived::new(r.freeze());
        assert_eq!(raw.clone().wrapped(&g1()), raw);
    }

    #[test]
    fn repeated_fields_have_every_handle_wrapped() {
        // Two system properties fields in one message, each with a handle: a decoder merges
        // them (the last handle wins), so both must come out wrapped.
        let mut first = BytesMut::new();
        put_len_field(&mut first, SYSTEM_PROPERTIES_RECEIPT_HANDLE, b"h-one");
        let mut second = BytesMut::new();
        put_len_field(&mut second, SYSTEM_PROPERTIES_RECEIPT_HANDLE, b"h-two");
        let mut m = BytesMut::new();
        put_len_field(&mut m, MESSAGE_SYSTEM_PROPERTIES, &first);
        put_len_field(&mut m, 4, b"body");
        put_len_field(&mut m, MESSAGE_SYSTEM_PROPERTIES, &second);
        let mut r = BytesMut::new();
        put_len_field(&mut r, RESPONSE_MESSAGE, &m);
        let wrapped = RawReceived::new(r.freeze()).wrapped(&g1()).to_bytes();
        let text = String::from_utf8_lossy(&wrapped);
        assert!(
            text.contains("fm:g1:h-one") && text.contains("fm:g1:h-two"),
            "{text}"
        );
        let got = decode(RawReceived::new(wrapped)).expect("decodes");
        let Some(v2::receive_message_response::Content::Message(m)) = got.content else {
            panic!("no message in {got:?}");
        };
        let sp = m.system_properties.expect("system properties");
        assert_eq!(sp.receipt_handle.as_deref(), Some("fm:g1:h-two"));
        assert_eq!(&m.body[..], b"body");
    }

    proptest! {
        /// Whatever the sizes (lengths whose varints grow by a byte when the prefix is added
        /// included), the one-pass wrap writes exactly what encoding the wrapped message does.
        #[test]
        fn the_one_pass_wrap_matches_encoding_the_wrapped_message(
            handle_len in prop_oneof![1usize..8, 110usize..130, 16_360usize..16_400],
            body_len in prop_oneof![0usize..64, 16_300usize..16_400, 2_097_100usize..2_097_200],
            group in "[a-z0-9-]{1,40}",
            props in proptest::collection::btree_map("[a-z]{1,8}", "[a-z]{0,200}", 0..6),
            attempt in proptest::option::of(1i32..20),
        ) {
            let handle: String = "h".repeat(handle_len);
            let resp = v2::ReceiveMessageResponse {
                content: Some(v2::receive_message_response::Content::Message(v2::Message {
                    topic: Some(v2::Resource { resource_namespace: String::new(), name: "t".into() }),
                    user_properties: props.into_iter().collect(),
                    system_properties: Some(v2::SystemProperties {
                        message_id: "01XYZ".into(),
                        receipt_handle: Some(handle),
                        delivery_attempt: attempt,
                        ..Default::default()
                    }),
                    body: Bytes::from(vec![9u8; body_len]),
                })),
            };
            let group: Arc<str> = Arc::from(group.as_str());
            let wrapped = RawReceived::encode(&resp).wrapped(&group);
            let want = RawReceived::encode(&with_wrapped_handle(resp, &group)).to_bytes();
            prop_assert_eq!(wrapped.encoded_len(), want.len());
            prop_assert!(wrapped.to_bytes() == want);
        }
    }
}
