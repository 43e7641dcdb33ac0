//! SendMessage through the proxy: to a writable group holding the topic, chosen by the message
//! group's hash for FIFO messages (same key, same group, on every proxy) and in rotation
//! otherwise. A group refusing because it is being drained (its report may lag the drain by a
//! heartbeat) passes the send on to the next group; an unreachable one too, for non-FIFO sends
//! only (FIFO sends fail instead of breaking order).
//!
//! The request is forwarded as the client's own bytes ([`super::raw`]): only its routing fields
//! are read, and the broker's answer is passed back as it is unless a handle in it needs the
//! group's prefix.

use std::borrow::Cow;

use bytes::Bytes;
use ferromq_proto::v2::{self, Code};
use prost::Message;
use tonic::metadata::MetadataMap;
use tonic::Status;

use super::fanout::{fail, outgoing, unreachable_status};
use super::handles::wrap_handle;
use super::raw::{self, PeekedSend, RawAnswer};
use super::wire;
use super::ProxyApi;
use ferromq_engine::placement::key_hash;

/// The order in which `n` candidate groups are tried: from the key's group (FIFO) or the
/// rotation's, then the ones after it.
pub fn send_order(n: usize, key: Option<&str>, rotation: usize) -> Vec<usize> {
    if n == 0 {
        return Vec::new();
    }
    let start = match key {
        Some(k) => (key_hash(k) % n as u64) as usize,
        None => rotation % n,
    };
    (0..n).map(|i| (start + i) % n).collect()
}

/// A broker's answer to a send while its group is read-only (the engine's drain refusal).
fn is_drain_refusal(s: Option<&v2::Status>) -> bool {
    s.is_some_and(|s| {
        s.code == Code::Forbidden as i32 && s.message.contains(ferromq_engine::DRAINING)
    })
}

/// How long a send waits for a replicated group's new leader before it gives up on the group.
const FAILOVER_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// A member refusing because it does not lead, or leads without its lease or enough in-sync
/// members: nothing was stored.
fn is_not_leader(s: Option<&v2::Status>) -> bool {
    s.is_some_and(|s| s.code == Code::HaNotAvailable as i32)
}

/// A broker's answer to a forwarded send: its status, and its bytes, passed on as they are
/// unless a handle in it needs the group's prefix (then `resp` holds it decoded, to be
/// rewritten).
struct Answered {
    status: Option<v2::Status>,
    raw: Bytes,
    resp: Option<v2::SendMessageResponse>,
}

impl Answered {
    /// Reads a broker's answer: by walking its encoding for the status and for any entry with a
    /// handle (`transaction_id`, field 3, or `recall_handle`, field 5, of `SendResultEntry`), so
    /// that the common answer (no handle) is passed on without decoding an entry per message
    /// (a message id each: 4.5 % of the proxy's samples under batches of 32, 2026-12-07). An
    /// answer with a handle, or one the walk cannot read with certainty (a status given twice, a
    /// wrong wire type, a malformed encoding), is decoded with prost as before.
    fn read(raw: Bytes) -> Result<Answered, Status> {
        if let Some(status) = walk_answer(&raw) {
            return Ok(Answered {
                status,
                raw,
                resp: None,
            });
        }
        let resp = v2::SendMessageResponse::decode(raw.clone())
            .map_err(|e| Status::internal(e.to_string()))?;
        let handles = resp.entries.iter().any(has_handle);
        Ok(Answered {
            status: resp.status.clone(),
            raw,
            resp: handles.then_some(resp),
        })
    }

    /// Gives the handles of an answer that has any the group's prefix.
    fn wrap_handles(&mut self, group: &str) {
        let Some(resp) = self.resp.as_mut() else {
            return;
        };
        for e in resp.entries.iter_mut().filter(|e| has_handle(e)) {
            e.transaction_id = wrap_handle(group, &e.transaction_id);
            e.recall_handle = wrap_handle(group, &e.recall_handle);
        }
    }
}

/// An entry carrying a handle the client will send back through a proxy.
fn has_handle(e: &v2::SendResultEntry) -> bool {
    !e.transaction_id.is_empty() || !e.recall_handle.is_empty()
}

/// The status of an answer that has no handle to rewrite (`Some(None)`: no status), or `None`
/// when it has one or the walk is not certain (see [`Answered::read`]).
fn walk_answer(raw: &[u8]) -> Option<Option<v2::Status>> {
    let mut status = None;
    for f in wire::fields(raw) {
        let f = f?;
        match (f.number, f.wire) {
            (1, 2) if status.is_none() => {
                status = Some(v2::Status::decode(&raw[f.value]).ok()?);
            }
            (2, 2) => entry_without_handle(&raw[f.value])?,
            (1 | 2, _) => return None,
            _ => {}
        }
    }
    Some(status)
}

/// `Some` when a `SendResultEntry` has no handle and prost would decode it: the wire types of
/// its fields, its strings' UTF-8 and its status's fields are what prost checks.
fn entry_without_handle(entry: &[u8]) -> Option<()> {
    for f in wire::fields(entry) {
        let f = f?;
        let v = &entry[f.value.clone()];
        match (f.number, f.wire) {
            (1, 2) => status_decodes(v)?,
            (2, 2) => utf8(v)?,
            (3 | 5, 2) if v.is_empty() => {}
            (4, 0) => {}
            (n, _) if n <= 5 => return None,
            _ => {}
        }
    }
    Some(())
}

fn utf8(v: &[u8]) -> Option<()> {
    std::str::from_utf8(v).ok().map(drop)
}

/// `Some` when prost would decode `v` as a `Status` (without building it).
fn status_decodes(v: &[u8]) -> Option<()> {
    for f in wire::fields(v) {
        let f = f?;
        match (f.number, f.wire) {
            (1, 0) => {}
            (2, 2) => utf8(&v[f.value])?,
            (n, _) if n <= 2 => return None,
            _ => {}
        }
    }
    Some(())
}

impl ProxyApi {
    /// Sends the client's bytes to the group's endpoint: in a batch with other clients' sends
    /// when the broker takes batches ([`super::batch`]), alone otherwise. `Err` when the
    /// endpoint is not a usable address.
    async fn forward(
        &self,
        g: &super::routes::GroupRoute,
        md: &MetadataMap,
        raw: &Bytes,
    ) -> Result<Result<Bytes, Status>, String> {
        let batcher = self.routes.batcher(g, &self.metrics)?;
        if batcher.takes(raw.len()) {
            let answered = batcher.send(md, raw.clone()).await;
            // UNIMPLEMENTED for the batch: the broker predates batches and stored nothing.
            let predates = matches!(&answered, Err(e) if e.code() == tonic::Code::Unimplemented)
                && batcher.legacy();
            if !predates {
                return Ok(answered);
            }
        }
        let mut c = self.routes.raw(g)?;
        Ok(raw::send(&mut c, outgoing(md, raw.clone()))
            .await
            .map(tonic::Response::into_inner))
    }

    /// SendMessage through the generated server (in-process callers): the same path as the
    /// raw one the proxy serves ([`super::front`]).
    pub(super) async fn send_message(
        &self,
        md: &MetadataMap,
        r: v2::SendMessageRequest,
    ) -> Result<v2::SendMessageResponse, Status> {
        let peeked = PeekedSend::read(r.encode_to_vec().into())?;
        let answer = self.send_raw(md, peeked).await?;
        v2::SendMessageResponse::decode(answer.bytes).map_err(|e| Status::internal(e.to_string()))
    }

    /// Forwards the client's bytes to a group chosen by the peeked topic and message group;
    /// every attempt (another group, a group's new leader) sends the same buffer.
    pub(super) async fn send_raw(
        &self,
        md: &MetadataMap,
        r: PeekedSend,
    ) -> Result<RawAnswer, Status> {
        let topic = r.topic();
        let key = r.message_group();
        tracing::Span::current().record("topic", topic);
        let view = self.routes.view();
        let candidates = view.writable_for(topic);
        if candidates.is_empty() {
            let (code, msg) = if view.groups.is_empty() {
                (
                    Code::InternalServerError,
                    "no broker group is alive (the name servers know none)".to_string(),
                )
            } else {
                (
                    Code::Forbidden,
                    format!("topic {topic} has no writable broker group (all holding it are read-only or draining)"),
                )
            };
            return Ok(RawAnswer::encode(&v2::SendMessageResponse {
                status: Some(fail(md, code, msg)),
                entries: vec![],
            }));
        }
        let mut answer: Option<Result<Answered, (String, Status)>> = None;
        let deadline = std::time::Instant::now() + FAILOVER_WAIT;
        let order = send_order(candidates.len(), key, self.routes.next());
        'groups: for (pos, i) in order.iter().enumerate() {
            let last = pos + 1 == order.len();
            // Borrowed from the view (a route holds every topic of its group: cloning it per
            // send cost a dozen allocations); owned only once a new leader is followed.
            let mut g: Cow<'_, super::routes::GroupRoute> = Cow::Borrowed(candidates[*i]);
            tracing::Span::current().record("group", g.name.as_str());
            loop {
                let answered = match self.forward(&g, md, &r.raw).await {
                    Ok(a) => a,
                    Err(e) => {
                        answer = Some(Err((g.name.clone(), Status::internal(e))));
                        continue 'groups;
                    }
                };
                let answered = answered.and_then(Answered::read);
                let failover = match answered {
                    Ok(mut a) => {
                        self.routes.broker_ok(&g);
                        if is_drain_refusal(a.status.as_ref()) {
                            answer = Some(Ok(a));
                            continue 'groups;
                        }
                        let refused = is_not_leader(a.status.as_ref());
                        a.wrap_handles(&g.name);
                        answer = Some(Ok(a));
                        if !refused {
                            break 'groups;
                        }
                        true
                    }
                    Err(e) => {
                        // The group could not decode what the client sent: the client gets the
                        // status the proxy's own decoding gave before it forwarded raw bytes.
                        if e.code() == tonic::Code::Internal {
                            if let Some(s) = raw::undecodable(&r.raw) {
                                return Err(s);
                            }
                        }
                        self.routes
                            .broker_failed(&g, &e, "send to broker group failed");
                        // Only a refused connection (or a member that does not lead) is
                        // certain not to have stored anything.
                        let unavailable = e.code() == tonic::Code::Unavailable;
                        answer = Some(Err((g.name.clone(), e)));
                        if !unavailable {
                            break 'groups;
                        }
                        if g.epoch == 0 {
                            if key.is_some() {
                                break 'groups;
                            }
                            continue 'groups;
                        }
                        true
                    }
                };
                // A replicated group whose member does not (or no longer) lead: nothing was
                // stored. Other sends try the next group at once; FIFO sends (and the last
                // group) wait for the group's next leader.
                if failover && key.is_none() && !last {
                    continue 'groups;
                }
                if failover {
                    if let Some(next) = self.routes.newer_leader(&g, deadline).await {
                        tracing::info!(group = %g.name, from = %g.endpoint, to = %next.endpoint, epoch = next.epoch, "send follows the group's new leader");
                        g = Cow::Owned(next);
                        continue;
                    }
                    if key.is_some() {
                        break 'groups;
                    }
                    continue 'groups;
                }
            }
        }
        let resp = match answer {
            Some(Ok(Answered {
                resp: Some(resp), ..
            })) => resp,
            Some(Ok(a)) => {
                let code = a.status.as_ref().map_or(Code::Ok as i32, |s| s.code);
                return Ok(RawAnswer::new(code, a.raw));
            }
            Some(Err((g, e))) => v2::SendMessageResponse {
                status: Some(unreachable_status(md, &g, &e)),
                entries: vec![],
            },
            None => v2::SendMessageResponse {
                status: Some(fail(md, Code::InternalServerError, "no broker group tried")),
                entries: vec![],
            },
        };
        Ok(RawAnswer::encode(&resp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_keys_stick_to_one_group_and_other_sends_rotate() {
        let a = send_order(3, Some("order-42"), 0);
        assert_eq!(
            a,
            send_order(3, Some("order-42"), 7),
            "the key decides, not the rotation"
        );
        assert_eq!(a.len(), 3);
        assert_eq!(send_order(3, None, 4), vec![1, 2, 0]);
        assert_eq!(send_order(3, None, 5), vec![2, 0, 1]);
        assert!(send_order(0, None, 1).is_empty());
    }

    #[test]
    fn only_the_drain_refusal_passes_a_send_on() {
        let drain = crate::status::RpcError::from(ferromq_engine::EngineError::Draining {
            group: "g".into(),
        });
        let st = crate::status::status(drain.code, drain.message);
        assert!(is_drain_refusal(Some(&st)));
        let other = crate::status::status(Code::Forbidden, "topic t is not writable");
        assert!(!is_drain_refusal(Some(&other)));
    }

    proptest::proptest! {
        /// On any answer, and on any answer with bytes cut or changed, the walk either steps
        /// aside or reads the status prost reads, and only from an answer prost decodes and
        /// whose entries carry no handle.
        #[test]
        fn the_answer_walk_reads_what_prost_reads(
            status in proptest::option::of((0i32..100_000, "[a-z ]{0,12}")),
            entries in proptest::collection::vec(
                (proptest::option::of(0i32..100_000), "[A-F0-9]{0,8}", "[a-z]{0,2}", "[a-z]{0,2}", proptest::num::i64::ANY),
                0..5),
            cut in proptest::option::of(0usize..300),
            flips in proptest::collection::vec((0usize..300, proptest::num::u8::ANY), 0..3),
        ) {
            let answer = v2::SendMessageResponse {
                status: status.map(|(code, message)| v2::Status { code, message }),
                entries: entries.into_iter().map(|(code, id, tx, recall, offset)| v2::SendResultEntry {
                    status: code.map(|code| v2::Status { code, message: "ok".into() }),
                    message_id: id,
                    transaction_id: tx,
                    offset,
                    recall_handle: recall,
                }).collect(),
            };
            let raw = wire::damaged(answer.encode_to_vec(), cut, &flips);
            let decoded = v2::SendMessageResponse::decode(&raw[..]);
            if let Some(st) = walk_answer(&raw) {
                let d = decoded.expect("what the walk reads, prost decodes");
                proptest::prop_assert_eq!(st, d.status);
                proptest::prop_assert!(!d.entries.iter().any(has_handle));
            } else if let Ok(d) = decoded {
                // Stepping aside is right only for a handle or a field the walk does not take on
                // trust; an answer with neither should have been walked.
                let plain = !d.entries.iter().any(has_handle);
                if plain && cut.is_none() && flips.is_empty() {
                    proptest::prop_assert!(false, "a plain answer was not walked");
                }
            }
        }
    }
}
