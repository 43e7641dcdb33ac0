//! SendMessage requests as raw bytes: a tonic codec that passes `Bytes` through both ways, and
//! the peek at the few fields the proxy routes a send by.
//!
//! The proxy forwards a send without decoding it into [`v2::SendMessageRequest`] and encoding it
//! again: it reads the topic of every message and the first message's group (by walking the
//! encoding, `walk_send`; prost's peek types below, which name only those fields, when the walk
//! steps aside) and hands the request's own bytes to the broker, so what the client sent arrives
//! unchanged, fields this version does not know included, and a retry on another group sends the
//! same buffer again.

use std::marker::PhantomData;
use std::ops::Range;

use bytes::{Buf, BufMut, Bytes};
use ferromq_proto::v2;
use prost::Message;

use super::wire;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
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

/// Takes the message's bytes out of tonic's buffer: a split of it for a large message, a copy of
/// a small one (see [`COPY_BELOW`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct RawDecoder;

/// The decode buffer tonic allocates for each call the raw codec reads. Tonic 0.14 starts at
/// 8 KiB, copies the first frame in (growing the buffer), then, having read the message's
/// length, reserves that length again on top of what it holds (growing it a second time), each
/// growth copying what the buffer held: 2.6 % of the proxy's samples under batches of 32 at
/// 1 KiB (33 KiB requests). A buffer of twice the message takes it as it comes: 128 KiB does
/// for requests up to about 64 KiB.
pub const RAW_BUFFER: usize = 128 * 1024;

/// A decoded message shorter than this is copied out of the call's buffer, so that a request
/// held while it is forwarded keeps no more than its own size alive; a longer one is split off
/// without a copy (it is then at least an eighth of the [`RAW_BUFFER`] it keeps).
pub const COPY_BELOW: usize = 16 * 1024;

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
        if n < COPY_BELOW {
            let mut small = Vec::with_capacity(n);
            small.put(src);
            return Ok(Some(small.into()));
        }
        Ok(Some(src.copy_to_bytes(n)))
    }

    fn buffer_settings(&self) -> BufferSettings {
        // tonic's own yield threshold (it has no getter): only streaming answers use it.
        BufferSettings::new(RAW_BUFFER, 32 * 1024)
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
    names: Names,
}

/// Where a send's routing names are: places in its bytes (the walk, which allocates nothing),
/// or owned strings when prost had to decode the peek.
#[derive(Debug, Clone)]
enum Names {
    Walked(Walked),
    Decoded(SendPeek),
}

/// What [`walk_send`] found: the first message's topic and group, and every other distinct
/// topic (empty, so not allocated, when all messages share one). `Some(empty)` is a topic
/// given without a name, `None` a message without a topic, as prost would leave them.
#[derive(Debug, Clone, Default)]
struct Walked {
    topic: Option<Range<usize>>,
    group: Option<Range<usize>>,
    other_topics: Vec<Option<Range<usize>>>,
}

/// The routing fields of an encoded SendMessageRequest, found by walking its encoding
/// ([`super::wire`]) instead of decoding it: prost's [`SendPeek`] allocated a string per message
/// for the topic and a vector for the messages (4.2 % of the proxy's samples under batches of
/// 32, 2026-12-07). `None` whenever the walk is not certain to read what prost would (a field it
/// reads given twice, which prost merges; a wrong wire type, a name that is not UTF-8, a
/// malformed encoding as [`wire::fields`] tells one): the caller then decodes the peek with
/// prost, which also gives any error its exact wording. What the walk reads is what prost reads; it may pass
/// a request prost's peek refuses only for the system properties of a message after the first.
fn walk_send(raw: &[u8]) -> Option<Walked> {
    let mut w = Walked::default();
    let mut first = true;
    for f in wire::fields(raw) {
        let f = f?;
        if f.number != 1 {
            continue;
        }
        if f.wire != 2 {
            return None;
        }
        let (topic, group) = walk_message(raw, f.value, first)?;
        if first {
            w.topic = topic;
            w.group = group;
            first = false;
            continue;
        }
        let name = |r: &Option<Range<usize>>| r.clone().map(|r| &raw[r]);
        let seen = name(&w.topic) == name(&topic)
            || w.other_topics.iter().any(|o| name(o) == name(&topic));
        if !seen {
            w.other_topics.push(topic);
        }
    }
    Some(w)
}

/// A message's topic name and message group, as places in the request.
type MessageNames = (Option<Range<usize>>, Option<Range<usize>>);

/// One `Message` (at `at` in `raw`): its topic's name (`Resource` field 2) and, when `group` is
/// asked (the first message: sends are routed by it), its message group (`SystemProperties`
/// field 17), as places in `raw`. The other messages' system properties are not walked (most of
/// a message's fields are there): they route nothing, and what prost would refuse in them the
/// broker refuses with the same status, which the proxy passes on ([`undecodable`]).
fn walk_message(raw: &[u8], at: Range<usize>, want_group: bool) -> Option<MessageNames> {
    let mut topic = None;
    let mut group = None;
    let mut props_seen = false;
    for f in wire::fields(&raw[at.clone()]) {
        let f = f?;
        let value = at.start + f.value.start..at.start + f.value.end;
        match f.number {
            1 | 3 if f.wire != 2 => return None,
            1 if topic.is_some() => return None,
            3 if props_seen => return None,
            1 => {
                // A topic without a name is the empty name, as prost leaves it.
                topic = Some(string_field(raw, value, 2)?.unwrap_or(at.start..at.start));
            }
            3 => {
                props_seen = true;
                if want_group {
                    group = string_field(raw, value, 17)?;
                }
            }
            _ => {}
        }
    }
    Some((topic, group))
}

/// The UTF-8 string field `number` of the message at `at` in `raw`: `Some(None)` when absent,
/// `None` when the walk cannot be sure (see [`walk_send`]).
fn string_field(raw: &[u8], at: Range<usize>, number: u32) -> Option<Option<Range<usize>>> {
    let mut found = None;
    for f in wire::fields(&raw[at.clone()]) {
        let f = f?;
        if f.number != number {
            continue;
        }
        if f.wire != 2 || found.is_some() {
            return None;
        }
        let r = at.start + f.value.start..at.start + f.value.end;
        std::str::from_utf8(&raw[r.clone()]).ok()?;
        found = Some(r);
    }
    Some(found)
}

impl PeekedSend {
    /// Reads the routing fields of an encoded SendMessageRequest. A request that does not decode
    /// is refused with the status a full decode gives (tonic's `INTERNAL` with prost's message
    /// naming the field), the same a broker or the generated server would answer.
    pub fn read(raw: Bytes) -> Result<PeekedSend, Status> {
        if let Some(w) = walk_send(&raw) {
            return Ok(PeekedSend {
                raw,
                names: Names::Walked(w),
            });
        }
        match SendPeek::decode(raw.clone()) {
            Ok(peek) => Ok(PeekedSend {
                raw,
                names: Names::Decoded(peek),
            }),
            Err(e) => Err(undecodable(&raw).unwrap_or_else(|| Status::internal(e.to_string()))),
        }
    }

    /// A name the walk found (validated as UTF-8 then).
    fn name(&self, r: &Option<Range<usize>>) -> Option<&str> {
        r.clone()
            .map(|r| std::str::from_utf8(&self.raw[r]).unwrap_or_default())
    }

    /// The topic of the first message, which the send is routed by.
    pub fn topic(&self) -> &str {
        match &self.names {
            Names::Walked(w) => self.name(&w.topic).unwrap_or(""),
            Names::Decoded(p) => p
                .messages
                .first()
                .and_then(|m| m.topic.as_ref())
                .map_or("", |t| t.name.as_str()),
        }
    }

    /// The first message's message group: FIFO sends go to the group its hash picks.
    pub fn message_group(&self) -> Option<&str> {
        match &self.names {
            Names::Walked(w) => self.name(&w.group),
            Names::Decoded(p) => p
                .messages
                .first()
                .and_then(|m| m.system_properties.as_ref())
                .and_then(|sp| sp.message_group.as_deref()),
        }
    }

    /// Every distinct topic of the batch in the order first seen (`None`: a message without
    /// one, or no message at all).
    fn topics(&self) -> Vec<Option<&str>> {
        let mut topics: Vec<Option<&str>> = Vec::with_capacity(1);
        match &self.names {
            Names::Walked(w) => {
                topics.push(self.name(&w.topic));
                topics.extend(w.other_topics.iter().map(|t| self.name(t)));
            }
            Names::Decoded(p) => {
                for m in &p.messages {
                    let t = m.topic.as_ref().map(|t| t.name.as_str());
                    if !topics.contains(&t) {
                        topics.push(t);
                    }
                }
                if topics.is_empty() {
                    topics.push(None);
                }
            }
        }
        topics
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
        self.topics()
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

    /// What prost's peek reads of `raw`, as the accessors answer it.
    fn decoded(raw: &Bytes) -> Option<(String, Option<String>, Vec<Option<String>>)> {
        let p = PeekedSend {
            raw: raw.clone(),
            names: Names::Decoded(SendPeek::decode(raw.clone()).ok()?),
        };
        Some(names_of(&p))
    }

    /// `raw` with the system properties of every message after the first left out.
    fn later_properties_dropped(raw: &[u8]) -> Option<Bytes> {
        let mut out = Vec::new();
        let mut first = true;
        for f in wire::fields(raw) {
            let f = f?;
            if f.number == 1 && f.wire == 2 && !first {
                let mut m = Vec::new();
                for g in wire::fields(&raw[f.value.clone()]) {
                    let g = g?;
                    if g.number != 3 {
                        m.extend_from_slice(
                            &raw[f.value.start + g.start..f.value.start + g.value.end],
                        );
                    }
                }
                wire::put_len_field(&mut out, 1, &m);
            } else {
                out.extend_from_slice(&raw[f.start..f.value.end]);
            }
            first &= !(f.number == 1 && f.wire == 2);
        }
        Some(out.into())
    }

    fn names_of(p: &PeekedSend) -> (String, Option<String>, Vec<Option<String>>) {
        (
            p.topic().to_string(),
            p.message_group().map(str::to_string),
            p.topics()
                .into_iter()
                .map(|t| t.map(str::to_string))
                .collect(),
        )
    }

    #[test]
    fn the_walk_steps_aside_where_prost_would_merge_or_refuse() {
        // A message whose topic is given twice (prost merges the two resources).
        let mut m = Vec::new();
        wire::put_len_field(&mut m, 1, &[0x12, 0x01, b'a']);
        wire::put_len_field(&mut m, 1, &[0x12, 0x01, b'b']);
        let mut twice = Vec::new();
        wire::put_len_field(&mut twice, 1, &m);
        // Field 1 as a varint at the top level (prost: invalid wire type).
        let varint = vec![0x08, 0x01];
        // Field number 0.
        let zero = vec![0x02, 0x00];
        // A topic name that is not UTF-8.
        let bad = vec![0x0a, 0x05, 0x0a, 0x03, 0x12, 0x01, 0xff];
        for raw in [twice, varint, zero, bad] {
            assert!(walk_send(&raw).is_none(), "{raw:?}");
        }
        // A topic without a name and a message without a topic.
        let mut two = Vec::new();
        wire::put_len_field(&mut two, 1, &[0x0a, 0x00]);
        wire::put_len_field(&mut two, 1, &[]);
        let two = Bytes::from(two);
        let p = PeekedSend::read(two.clone()).expect("decodes");
        assert!(matches!(p.names, Names::Walked(_)));
        assert_eq!(names_of(&p), decoded(&two).expect("prost decodes it too"));
        assert_eq!(names_of(&p).2, vec![Some(String::new()), None]);
    }

    proptest::proptest! {
        /// On any request, and on any request with bytes cut or changed, the walk either steps
        /// aside or reads exactly what prost's peek reads; and the peek refuses exactly what
        /// prost refuses.
        #[test]
        fn the_walk_reads_what_prost_reads(
            msgs in proptest::collection::vec(
                (proptest::option::of("[a-c]{0,3}"), proptest::option::of("[a-z]{0,3}"),
                 proptest::collection::vec(proptest::num::u8::ANY, 0..40)),
                0..6),
            cut in proptest::option::of(0usize..400),
            flips in proptest::collection::vec((0usize..400, proptest::num::u8::ANY), 0..3),
        ) {
            let req = v2::SendMessageRequest {
                messages: msgs.iter().map(|(topic, group, body)| v2::Message {
                    topic: topic.as_ref().map(|t| v2::Resource { resource_namespace: "ns".into(), name: t.clone() }),
                    user_properties: Default::default(),
                    system_properties: group.as_ref().map(|g| v2::SystemProperties {
                        message_group: Some(g.clone()),
                        ..Default::default()
                    }),
                    body: Bytes::copy_from_slice(body),
                }).collect(),
            };
            let raw = Bytes::from(wire::damaged(req.encode_to_vec(), cut, &flips));
            let want = decoded(&raw);
            if let Some(w) = walk_send(&raw) {
                let p = PeekedSend { raw: raw.clone(), names: Names::Walked(w) };
                match &want {
                    Some(want) => proptest::prop_assert_eq!(&names_of(&p), want),
                    // Only a later message's system properties are not walked: with them
                    // emptied, prost reads what the walk read.
                    None => proptest::prop_assert_eq!(
                        Some(names_of(&p)),
                        decoded(&later_properties_dropped(&raw).expect("the walk parsed it"))
                    ),
                }
            }
            if PeekedSend::read(raw.clone()).is_err() {
                proptest::prop_assert!(want.is_none(), "refused only what prost refuses");
            }
        }
    }
}
