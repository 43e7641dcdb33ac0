//! AckMessage as raw bytes: the official clients ack every message with a call of its own, so
//! acks are as many as the messages a consumer takes, and decoding each into
//! [`v2::AckMessageRequest`], sorting its entries by group, encoding it again for the broker,
//! then decoding and re-encoding the broker's answer was a quarter of the proxy's work under
//! such consumers.
//!
//! Here the proxy reads the group and topic (for authorization), strips each entry's receipt
//! handle of the `fm:<group>:` prefix while it copies the request once, and wraps the handles of
//! the broker's answer while it copies that once. Only the common case takes this path: every
//! entry's handle names the same live group. Anything else (handles of several groups, a
//! foreign or malformed handle, no entry at all, an answer that does not parse) goes the typed
//! way ([`super::settle`]), which answers each entry on its own.

use bytes::{BufMut, Bytes, BytesMut};
use ferromq_proto::v2;
use prost::Message;
use tonic::metadata::MetadataMap;
use tonic::Status;

use super::handles::{put_wrap_prefix, unwrap_handle, wrap_prefix_len};
use super::raw::{undecodable_as, RawAnswer, ResourcePeek, ACK_PATH};
use super::wire::{fields, one_len_field, put_len_header, status_code, varint_len, One};
use super::ProxyApi;

/// `AckMessageRequest.entries`, `AckMessageEntry.receipt_handle`; `AckMessageResponse.status`,
/// `.entries`, `AckMessageResultEntry.receipt_handle`.
const REQUEST_ENTRIES: u32 = 3;
const ENTRY_RECEIPT_HANDLE: u32 = 2;
const RESPONSE_STATUS: u32 = 1;
const RESPONSE_ENTRIES: u32 = 2;
const RESULT_RECEIPT_HANDLE: u32 = 2;

/// What an AckMessageRequest is authorized by: `group` (1) and `topic` (2); prost skips the
/// entries unread.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AckPeek {
    #[prost(message, optional, tag = "1")]
    pub group: Option<ResourcePeek>,
    #[prost(message, optional, tag = "2")]
    pub topic: Option<ResourcePeek>,
}

/// An ack as the proxy handles it: the client's bytes and the names it read of them.
#[derive(Debug, Clone)]
pub struct PeekedAck {
    pub raw: Bytes,
    pub peek: AckPeek,
}

impl PeekedAck {
    /// Reads the names of an encoded AckMessageRequest; one that does not decode is refused as
    /// the generated server refuses it (tonic's `INTERNAL` with prost's message).
    pub fn read(raw: Bytes) -> Result<PeekedAck, Status> {
        match AckPeek::decode(raw.clone()) {
            Ok(peek) => Ok(PeekedAck { raw, peek }),
            Err(e) => Err(undecodable_as::<v2::AckMessageRequest>(&raw)
                .unwrap_or_else(|| Status::internal(e.to_string()))),
        }
    }

    /// The full request (the typed path, and error paths).
    fn decode(&self) -> Result<v2::AckMessageRequest, Status> {
        v2::AckMessageRequest::decode(self.raw.clone()).map_err(|e| Status::internal(e.to_string()))
    }
}

impl crate::auth::Targeted for PeekedAck {
    /// The same names as the decoded request's.
    fn targets(&self) -> Vec<ferromq_auth::Targets<'_>> {
        vec![ferromq_auth::Targets {
            topic: self.peek.topic.as_ref().map(|t| t.name.as_str()),
            group: self.peek.group.as_ref().map(|g| g.name.as_str()),
        }]
    }
}

/// The group every entry's handle names and the request for that group (each handle without
/// its prefix, every other byte as the client sent it); `None` when the entries do not all
/// carry one UTF-8 handle of one group, or there is none.
pub fn for_one_group(raw: &[u8]) -> Option<(&str, Bytes)> {
    let mut group: Option<&str> = None;
    let mut out = BytesMut::with_capacity(raw.len());
    for f in fields(raw) {
        let f = f?;
        if !f.is_len(REQUEST_ENTRIES) {
            out.put_slice(&raw[f.start..f.value.end]);
            continue;
        }
        let entry = &raw[f.value.clone()];
        let One::Found(h) = one_len_field(entry, ENTRY_RECEIPT_HANDLE) else {
            return None;
        };
        let handle = std::str::from_utf8(&entry[h.payload_range()]).ok()?;
        let (named, own) = unwrap_handle(handle)?;
        match group {
            None => group = Some(named),
            Some(g) if g == named => {}
            Some(_) => return None,
        }
        // The group's own handle is the wrapped one's tail.
        let cut = h.len - own.len();
        let entry_len = entry.len() - cut - (varint_len(h.len) - varint_len(own.len()));
        put_len_header(&mut out, REQUEST_ENTRIES, entry_len);
        out.put_slice(&entry[..h.key]);
        put_len_header(&mut out, ENTRY_RECEIPT_HANDLE, own.len());
        out.put_slice(&entry[h.payload + cut..]);
    }
    Some((group?, out.freeze()))
}

/// The broker's answer with every entry's receipt handle wrapped for `group`, copied once;
/// `None` when it does not parse or an entry's handle is given twice or is not UTF-8.
pub fn wrap_answer(answer: &[u8], group: &str) -> Option<Bytes> {
    let mut out = BytesMut::with_capacity(answer.len() + 8 * (wrap_prefix_len(group) + 2));
    for f in fields(answer) {
        let f = f?;
        if !f.is_len(RESPONSE_ENTRIES) {
            out.put_slice(&answer[f.start..f.value.end]);
            continue;
        }
        let entry = &answer[f.value.clone()];
        let h = match one_len_field(entry, RESULT_RECEIPT_HANDLE) {
            One::Found(h) if h.len > 0 => h,
            // No handle (or an empty one) stays as it is, as `wrap_handle` leaves it.
            One::Found(_) | One::Absent => {
                out.put_slice(&answer[f.start..f.value.end]);
                continue;
            }
            One::Repeated | One::Malformed => return None,
        };
        std::str::from_utf8(&entry[h.payload_range()]).ok()?;
        let add = wrap_prefix_len(group);
        let h_len = h.len + add;
        let entry_len = entry.len() + add + (varint_len(h_len) - varint_len(h.len));
        put_len_header(&mut out, RESPONSE_ENTRIES, entry_len);
        out.put_slice(&entry[..h.key]);
        put_len_header(&mut out, RESULT_RECEIPT_HANDLE, h_len);
        put_wrap_prefix(group, &mut out);
        out.put_slice(&entry[h.payload..]);
    }
    Some(out.freeze())
}

/// The status code of an encoded answer (OK when it has none).
fn answer_code(answer: &[u8]) -> i32 {
    status_code(answer, RESPONSE_STATUS).unwrap_or(v2::Code::Ok as i32)
}

impl ProxyApi {
    /// AckMessage from the client's bytes: forwarded as bytes when every entry names one live
    /// group, else the typed way.
    pub(super) async fn ack_raw(
        &self,
        md: &MetadataMap,
        r: PeekedAck,
    ) -> Result<RawAnswer<v2::AckMessageResponse>, Status> {
        let view = self.routes.view();
        let plan = for_one_group(&r.raw).and_then(|(name, fwd)| Some((view.group(name)?, fwd)));
        let Some((g, fwd)) = plan else {
            let typed = self.ack_message(md, r.decode()?).await?;
            return Ok(RawAnswer::encode(&typed));
        };
        tracing::Span::current().record("group", g.name.as_str());
        match self.settle_call_raw(g, md, ACK_PATH, fwd.clone()).await? {
            Ok(answer) => match wrap_answer(&answer, &g.name) {
                Some(bytes) => Ok(RawAnswer::new(answer_code(&answer), bytes)),
                None => {
                    let typed = v2::AckMessageResponse::decode(answer).map_err(|e| {
                        Status::internal(format!("the broker group's answer does not decode: {e}"))
                    })?;
                    let entries = v2::AckMessageRequest::decode(fwd)
                        .map_err(|e| Status::internal(e.to_string()))?
                        .entries;
                    let results = super::settle::group_ack_results(md, &g.name, entries, Ok(typed));
                    Ok(RawAnswer::encode(&super::settle::ack_answer(results)))
                }
            },
            Err(e) => {
                // The broker refused the call itself: a request the typed path would have
                // refused at the door gets that refusal; otherwise every entry is answered with
                // the group's failure, as the typed path answers it.
                if let Some(s) = undecodable_as::<v2::AckMessageRequest>(&r.raw) {
                    return Err(s);
                }
                let entries = v2::AckMessageRequest::decode(fwd)
                    .map_err(|e| Status::internal(e.to_string()))?
                    .entries;
                let results = super::settle::group_ack_results(md, &g.name, entries, Err(e));
                Ok(RawAnswer::encode(&super::settle::ack_answer(results)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roles::proxy::handles::wrap_handle;
    use proptest::prelude::*;

    fn entry(id: &str, handle: &str) -> v2::AckMessageEntry {
        v2::AckMessageEntry {
            message_id: id.into(),
            receipt_handle: handle.into(),
            lite_topic: None,
        }
    }

    fn request(entries: Vec<v2::AckMessageEntry>) -> v2::AckMessageRequest {
        v2::AckMessageRequest {
            group: Some(v2::Resource {
                resource_namespace: "ns".into(),
                name: "consumers".into(),
            }),
            topic: Some(v2::Resource {
                resource_namespace: "ns".into(),
                name: "orders".into(),
            }),
            entries,
        }
    }

    #[test]
    fn one_groups_handles_lose_their_prefix_and_nothing_else_changes() {
        let sent = request(vec![
            entry("id-1", &wrap_handle("g1", "F1.a.3.77.1")),
            v2::AckMessageEntry {
                lite_topic: Some("lite".into()),
                ..entry("id-2", &wrap_handle("g1", "F1.a.3.78.1"))
            },
        ]);
        let raw = Bytes::from(sent.encode_to_vec());
        let (group, fwd) = for_one_group(&raw).expect("one group");
        assert_eq!(group, "g1");
        let got = v2::AckMessageRequest::decode(fwd.clone()).expect("decodes");
        let mut want = sent.clone();
        want.entries[0].receipt_handle = "F1.a.3.77.1".into();
        want.entries[1].receipt_handle = "F1.a.3.78.1".into();
        assert_eq!(got, want);
        assert_eq!(fwd, Bytes::from(want.encode_to_vec()), "byte for byte");
    }

    #[test]
    fn anything_but_one_groups_handles_goes_the_typed_way() {
        let two_groups = request(vec![
            entry("a", &wrap_handle("g1", "h1")),
            entry("b", &wrap_handle("g2", "h2")),
        ]);
        let foreign = request(vec![entry("a", "not-from-a-proxy")]);
        let no_handle = request(vec![entry("a", "")]);
        let none = request(vec![]);
        for r in [two_groups, foreign, no_handle, none] {
            assert!(for_one_group(&r.encode_to_vec()).is_none(), "{r:?}");
        }
        // A handle given twice in one entry.
        let mut e = Vec::new();
        crate::roles::proxy::wire::put_len_field(&mut e, ENTRY_RECEIPT_HANDLE, b"fm:g1:x");
        crate::roles::proxy::wire::put_len_field(&mut e, ENTRY_RECEIPT_HANDLE, b"fm:g1:y");
        let mut twice = Vec::new();
        crate::roles::proxy::wire::put_len_field(&mut twice, REQUEST_ENTRIES, &e);
        assert!(for_one_group(&twice).is_none());
        // Cut short.
        let ok = request(vec![entry("a", &wrap_handle("g1", "h1"))]).encode_to_vec();
        assert!(for_one_group(&ok[..ok.len() - 1]).is_none());
    }

    #[test]
    fn the_answers_handles_are_wrapped_and_its_status_kept() {
        let answer = v2::AckMessageResponse {
            status: Some(crate::status::status(
                v2::Code::InvalidReceiptHandle,
                "expired",
            )),
            entries: vec![
                v2::AckMessageResultEntry {
                    message_id: "id-1".into(),
                    receipt_handle: "F1.a.3.77.1".into(),
                    status: Some(crate::status::status(
                        v2::Code::InvalidReceiptHandle,
                        "expired",
                    )),
                },
                v2::AckMessageResultEntry {
                    message_id: "id-2".into(),
                    receipt_handle: String::new(),
                    status: Some(crate::status::ok()),
                },
            ],
        };
        let raw = answer.encode_to_vec();
        assert_eq!(answer_code(&raw), v2::Code::InvalidReceiptHandle as i32);
        let wrapped = wrap_answer(&raw, "g1").expect("parses");
        let mut want = answer.clone();
        want.entries[0].receipt_handle = wrap_handle("g1", "F1.a.3.77.1");
        assert_eq!(wrapped, Bytes::from(want.encode_to_vec()));
        assert_eq!(answer_code(&[]), v2::Code::Ok as i32);
        assert!(wrap_answer(&raw[..raw.len() - 1], "g1").is_none());
    }

    #[test]
    fn a_request_that_does_not_decode_gets_the_full_decoders_status() {
        // group.name is not UTF-8.
        let bad = Bytes::from_static(&[0x0a, 0x03, 0x12, 0x01, 0xff]);
        let want = match v2::AckMessageRequest::decode(bad.clone()) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("must not decode"),
        };
        let got = PeekedAck::read(bad).expect_err("refused");
        assert_eq!(got.code(), tonic::Code::Internal);
        assert_eq!(got.message(), want);
        let fine = request(vec![entry("a", "fm:g:h")]);
        let p = PeekedAck::read(fine.encode_to_vec().into()).expect("reads");
        let targets = crate::auth::Targeted::targets(&p);
        let from_typed = crate::auth::Targeted::targets(&fine);
        assert_eq!(targets.len(), 1);
        assert_eq!(targets[0].topic, from_typed[0].topic);
        assert_eq!(targets[0].group, from_typed[0].group);
    }

    proptest! {
        /// Whatever the lengths (varints that shrink or grow by a byte with the prefix), the
        /// raw rewrites write what encoding the rewritten messages does.
        #[test]
        fn the_raw_rewrites_match_the_typed_ones(
            handles in proptest::collection::vec(
                prop_oneof!["[A-Za-z0-9.]{1,8}", "[A-Za-z0-9.]{100,140}", "[a-z]{16370,16400}"],
                1..4),
            group in "[a-z0-9-]{1,40}",
        ) {
            let sent = request(handles.iter().enumerate()
                .map(|(i, h)| entry(&format!("id-{i}"), &wrap_handle(&group, h))).collect());
            let raw = sent.encode_to_vec();
            let (g, fwd) = for_one_group(&raw).expect("one group");
            prop_assert_eq!(g, group.as_str());
            let mut own = sent.clone();
            for (e, h) in own.entries.iter_mut().zip(&handles) {
                e.receipt_handle = h.clone();
            }
            prop_assert!(fwd == own.encode_to_vec());
            let answer = v2::AckMessageResponse {
                status: Some(crate::status::ok()),
                entries: own.entries.iter().map(|e| v2::AckMessageResultEntry {
                    message_id: e.message_id.clone(),
                    receipt_handle: e.receipt_handle.clone(),
                    status: Some(crate::status::ok()),
                }).collect(),
            };
            let wrapped = wrap_answer(&answer.encode_to_vec(), &group).expect("parses");
            let mut want = answer.clone();
            for e in want.entries.iter_mut() {
                e.receipt_handle = wrap_handle(&group, &e.receipt_handle);
            }
            prop_assert!(wrapped == want.encode_to_vec());
        }
    }
}
