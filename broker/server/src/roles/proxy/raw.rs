//! SendMessage requests as raw bytes: a tonic codec that passes `Bytes` through both ways, and
//! the peek at the few fields the proxy routes a send by.
//!
//! The proxy forwards a send without decoding it into [`v2::SendMessageRequest`] and encoding it
//! again: it reads the topic of every message and the first message's group (the peek types
//! below name only those fields; prost skips all others unread, bodies included) and hands the
//! request's own bytes to the broker, so what the client sent arrives unchanged, fields this
//! version does not know included, and a retry on another group sends the same buffer again.

use std::marker::PhantomData;

use bytes::{Buf, BufMut, Bytes};
use ferromq_proto::v2;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::codegen::GrpcMethod;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// The RocketMQ API's send method, the path the proxy serves from raw bytes.
pub const SEND_PATH: &str = "/apache.rocketmq.v2.MessagingService/SendMessage";
/// The settling methods, which the proxy forwards as bytes to the group a handle names.
pub const ACK_PATH: &str = "/apache.rocketmq.v2.MessagingService/AckMessage";
pub const CHANGE_INVISIBLE_PATH: &str =
    "/apache.rocketmq.v2.MessagingService/ChangeInvisibleDuration";
pub const DEAD_LETTER_PATH: &str =
    "/apache.rocketmq.v2.MessagingService/ForwardMessageToDeadLetterQueue";
pub const END_TRANSACTION_PATH: &str = "/apache.rocketmq.v2.MessagingService/EndTransaction";
pub const RECALL_PATH: &str = "/apache.rocketmq.v2.MessagingService/RecallMessage";
const SERVICE: &str = "apache.rocketmq.v2.MessagingService";

/// A codec whose messages are their encoded bytes: nothing is decoded or encoded.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

/// Writes the bytes as they are.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawEncoder;

/// Takes the message's bytes out of tonic's buffer (a split of it, not a copy).
#[derive(Debug, Clone, Copy, Default)]
pub struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n)))
    }
}

/// A gRPC client that sends and receives raw bytes on a pooled connection to a broker.
pub type RawClient = tonic::client::Grpc<Channel>;

/// Sends an encoded SendMessageRequest and answers the broker's encoded SendMessageResponse.
/// Errors are the ones the generated client gives for the same call.
pub async fn send(c: &mut RawClient, req: Request<Bytes>) -> Result<Response<Bytes>, Status> {
    call(c, SEND_PATH, req).await
}

/// Calls the unary MessagingService method at `path` (one of this module's paths) with an
/// encoded request and answers the encoded response, with the generated client's errors.
pub async fn call(
    c: &mut RawClient,
    path: &'static str,
    mut req: Request<Bytes>,
) -> Result<Response<Bytes>, Status> {
    c.ready()
        .await
        .map_err(|e| Status::unknown(format!("Service was not ready: {e}")))?;
    let method = path.rsplit('/').next().unwrap_or(path);
    req.extensions_mut()
        .insert(GrpcMethod::new(SERVICE, method));
    c.unary(req, PathAndQuery::from_static(path), RawCodec)
        .await
}

/// What a SendMessageRequest is routed by: field numbers of `apache.rocketmq.v2`'s
/// `SendMessageRequest` (1: messages), `Message` (1: topic, 3: system_properties), `Resource`
/// (2: name) and `SystemProperties` (17: message_group).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SendPeek {
    #[prost(message, repeated, tag = "1")]
    pub messages: Vec<MessagePeek>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MessagePeek {
    #[prost(message, optional, tag = "1")]
    pub topic: Option<ResourcePeek>,
    #[prost(message, optional, tag = "3")]
    pub system_properties: Option<SystemPropertiesPeek>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ResourcePeek {
    #[prost(string, tag = "2")]
    pub name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SystemPropertiesPeek {
    #[prost(string, optional, tag = "17")]
    pub message_group: Option<String>,
}

/// A send as the proxy handles it: the client's bytes and what it read of them.
#[derive(Debug, Clone)]
pub struct PeekedSend {
    pub raw: Bytes,
    pub peek: SendPeek,
}

impl PeekedSend {
    /// Reads the routing fields of an encoded SendMessageRequest. A request that does not decode
    /// is refused with the status a full decode gives (tonic's `INTERNAL` with prost's message
    /// naming the field), the same a broker or the generated server would answer.
    pub fn read(raw: Bytes) -> Result<PeekedSend, Status> {
        match SendPeek::decode(raw.clone()) {
            Ok(peek) => Ok(PeekedSend { raw, peek }),
            Err(e) => Err(undecodable(&raw).unwrap_or_else(|| Status::internal(e.to_string()))),
        }
    }

    /// The topic of the first message, which the send is routed by.
    pub fn topic(&self) -> &str {
        self.peek
            .messages
            .first()
            .and_then(|m| m.topic.as_ref())
            .map_or("", |t| t.name.as_str())
    }

    /// The first message's message group: FIFO sends go to the group its hash picks.
    pub fn message_group(&self) -> Option<&str> {
        self.peek
            .messages
            .first()
            .and_then(|m| m.system_properties.as_ref())
            .and_then(|sp| sp.message_group.as_deref())
    }
}

/// The status of a request that does not decode as an `M` (`None` when it does), the one the
/// generated server gives. Only on error paths: it decodes the whole request.
pub fn undecodable_as<M: Message + Default>(raw: &Bytes) -> Option<Status> {
    M::decode(raw.clone())
        .err()
        .map(|e| Status::internal(e.to_string()))
}

/// [`undecodable_as`] a SendMessageRequest.
pub fn undecodable(raw: &Bytes) -> Option<Status> {
    undecodable_as::<v2::SendMessageRequest>(raw)
}

impl crate::auth::Targeted for PeekedSend {
    /// Every distinct topic of the batch, as for the decoded request.
    fn targets(&self) -> Vec<ferromq_auth::Targets<'_>> {
        let mut topics: Vec<Option<&str>> = Vec::with_capacity(1);
        for m in &self.peek.messages {
            let t = m.topic.as_ref().map(|t| t.name.as_str());
            if !topics.contains(&t) {
                topics.push(t);
            }
        }
        if topics.is_empty() {
            topics.push(None);
        }
        topics
            .into_iter()
            .map(|topic| ferromq_auth::Targets { topic, group: None })
            .collect()
    }
}

/// A broker's answer (to a send, by default), as the proxy returns it: its status code (for the
/// metrics) and its encoded bytes (the broker's own when nothing was rewritten). `R` is the
/// answer's type, which the proxy builds when it answers itself.
#[derive(Debug, Clone)]
pub struct RawAnswer<R = v2::SendMessageResponse> {
    pub code: i32,
    pub bytes: Bytes,
    answers: PhantomData<fn() -> R>,
}

impl<R> RawAnswer<R> {
    pub fn new(code: i32, bytes: Bytes) -> RawAnswer<R> {
        RawAnswer {
            code,
            bytes,
            answers: PhantomData,
        }
    }
}

impl<R: Message + crate::rpc::Answer> RawAnswer<R> {
    /// An answer the proxy built itself.
    pub fn encode(resp: &R) -> RawAnswer<R> {
        RawAnswer::new(resp.code(), resp.encode_to_vec().into())
    }
}

impl<R: Message + crate::rpc::Answer> crate::rpc::Answer for RawAnswer<R> {
    fn code(&self) -> i32 {
        self.code
    }

    fn refusal(status: v2::Status) -> Self {
        RawAnswer::encode(&R::refusal(status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(topic: &str, group: Option<&str>, body: &[u8]) -> v2::Message {
        v2::Message {
            topic: Some(v2::Resource {
                resource_namespace: "ns".into(),
                name: topic.into(),
            }),
            user_properties: [("k".to_string(), "v".to_string())].into_iter().collect(),
            system_properties: Some(v2::SystemProperties {
                message_id: "id".into(),
                message_group: group.map(str::to_string),
                ..Default::default()
            }),
            body: Bytes::copy_from_slice(body),
        }
    }

    #[test]
    fn the_peek_reads_the_routing_fields_and_keeps_the_bytes() {
        let req = v2::SendMessageRequest {
            messages: vec![
                message("orders", Some("customer-7"), b"first"),
                message("audit", None, b"second"),
                message("orders", None, b"third"),
            ],
        };
        let raw = Bytes::from(req.encode_to_vec());
        let p = PeekedSend::read(raw.clone()).expect("decodes");
        assert_eq!(p.topic(), "orders");
        assert_eq!(p.message_group(), Some("customer-7"));
        assert_eq!(p.raw, raw, "the bytes are kept as sent");
        let topics: Vec<_> = crate::auth::Targeted::targets(&p)
            .into_iter()
            .map(|t| t.topic)
            .collect();
        assert_eq!(topics, vec![Some("orders"), Some("audit")]);
    }

    #[test]
    fn an_empty_request_routes_by_nothing() {
        let p = PeekedSend::read(Bytes::new()).expect("an empty message decodes");
        assert_eq!(p.topic(), "");
        assert_eq!(p.message_group(), None);
    }

    #[test]
    fn a_malformed_request_gets_the_full_decoders_status() {
        // messages[0].topic.name is not UTF-8: the peek reads that field and fails.
        let bad_topic = Bytes::from_static(&[0x0a, 0x05, 0x0a, 0x03, 0x12, 0x01, 0xff]);
        // A truncated length prefix.
        let truncated = Bytes::from_static(&[0x0a, 0x10, 0x0a]);
        for raw in [bad_topic, truncated] {
            let want = match v2::SendMessageRequest::decode(raw.clone()) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("the case must not decode"),
            };
            let got = PeekedSend::read(raw).expect_err("refused");
            assert_eq!(got.code(), tonic::Code::Internal);
            assert_eq!(got.message(), want);
        }
    }

    #[test]
    fn what_the_peek_skips_is_still_checked_on_error_paths() {
        // A user property value that is not UTF-8: the peek never reads it.
        let m = message("t", None, b"x");
        let mut msg = m.encode_to_vec();
        let at = msg
            .windows(1)
            .position(|w| w == b"v")
            .expect("the property value is in the encoding");
        msg[at] = 0xff;
        let mut raw = vec![0x0a, msg.len() as u8];
        raw.extend_from_slice(&msg);
        let raw = Bytes::from(raw);
        assert!(PeekedSend::read(raw.clone()).is_ok());
        let s = undecodable(&raw).expect("the full decode refuses it");
        assert_eq!(s.code(), tonic::Code::Internal);
        assert!(s.message().contains("user_properties"), "{}", s.message());
    }
}
