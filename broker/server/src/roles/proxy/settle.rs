//! Settling through the proxy: AckMessage, ChangeInvisibleDuration, dead-lettering,
//! EndTransaction and RecallMessage each go to the group named inside their handle.
//!
//! The official clients settle one message per call (a consumer acks each message it
//! received), so these calls are as many as the messages. Each goes on the group's call stream
//! with the sends and other clients' calls to the same broker ([`super::batch`]), costing the
//! hop a few DATA frames instead of an HTTP/2 request; alone to a broker without the stream.

use std::collections::BTreeMap;

use bytes::Bytes;
use ferromq_proto::v2::{self, Code};
use prost::Message;
use tonic::metadata::MetadataMap;
use tonic::Status;

use super::fanout::{fail, outgoing, unreachable_status};
use super::handles::wrap_handle;
use super::raw::{self, ACK_PATH, CHANGE_INVISIBLE_PATH, DEAD_LETTER_PATH};
use super::raw::{END_TRANSACTION_PATH, RECALL_PATH};
use super::routes::GroupRoute;
use super::ProxyApi;
use crate::status;

/// Ack entries sorted by the group their handle names (with the group's own handle), and the
/// results of entries whose handle names no live group.
type AcksByGroup = (
    BTreeMap<String, (GroupRoute, Vec<v2::AckMessageEntry>)>,
    Vec<v2::AckMessageResultEntry>,
);

/// Sorts ack entries by group with `resolve` (a wrapped handle to its group and own handle, or
/// the refusal for it).
pub fn acks_by_group(
    entries: Vec<v2::AckMessageEntry>,
    resolve: impl Fn(&str) -> Result<(GroupRoute, String), v2::Status>,
) -> AcksByGroup {
    let mut by_group: BTreeMap<String, (GroupRoute, Vec<v2::AckMessageEntry>)> = BTreeMap::new();
    let mut refused = Vec::new();
    for mut e in entries {
        match resolve(&e.receipt_handle) {
            Ok((g, h)) => {
                e.receipt_handle = h;
                by_group
                    .entry(g.name.clone())
                    .or_insert_with(|| (g, Vec::new()))
                    .1
                    .push(e);
            }
            Err(status) => refused.push(v2::AckMessageResultEntry {
                message_id: e.message_id,
                receipt_handle: e.receipt_handle,
                status: Some(status),
            }),
        }
    }
    (by_group, refused)
}

/// The results of the entries sent to one group (each carrying the group's own handle), with
/// the handles wrapped again: the group's answer for each, or its failure for all when it did
/// not answer or refused the call as a whole (an answer with a status and no entries).
pub fn group_ack_results(
    md: &MetadataMap,
    group: &str,
    sent: Vec<v2::AckMessageEntry>,
    answered: Result<v2::AckMessageResponse, Status>,
) -> Vec<v2::AckMessageResultEntry> {
    let refusal = match answered {
        Ok(a)
            if !a.entries.is_empty()
                || a.status.as_ref().is_none_or(|s| s.code == Code::Ok as i32) =>
        {
            return a
                .entries
                .into_iter()
                .map(|mut x| {
                    x.receipt_handle = wrap_handle(group, &x.receipt_handle);
                    x
                })
                .collect();
        }
        Ok(a) => a.status.unwrap_or_else(status::ok),
        Err(e) => unreachable_status(md, group, &e),
    };
    sent.into_iter()
        .map(|e| v2::AckMessageResultEntry {
            message_id: e.message_id,
            receipt_handle: wrap_handle(group, &e.receipt_handle),
            status: Some(refusal.clone()),
        })
        .collect()
}

/// An ack's answer: its entries' results and their summary.
pub fn ack_answer(results: Vec<v2::AckMessageResultEntry>) -> v2::AckMessageResponse {
    v2::AckMessageResponse {
        status: Some(status::summarize(
            results.iter().filter_map(|e| e.status.as_ref()),
        )),
        entries: results,
    }
}

impl ProxyApi {
    /// Calls the settling method at `path` on group `g` with the client's headers: on the
    /// group's call stream, or alone when its broker does not take one. `Err` when the group's
    /// endpoint is not a usable address; otherwise the call's outcome, as the generated
    /// client would give it.
    async fn settle_call<Req, Resp>(
        &self,
        g: &GroupRoute,
        md: &MetadataMap,
        path: &'static str,
        req: &Req,
    ) -> Result<Result<Resp, Status>, Status>
    where
        Req: Message,
        Resp: Message + Default,
    {
        let answered = self
            .settle_call_raw(g, md, path, Bytes::from(req.encode_to_vec()))
            .await?;
        Ok(answered.and_then(|b| {
            Resp::decode(b).map_err(|e| {
                Status::internal(format!("the broker group's answer does not decode: {e}"))
            })
        }))
    }

    /// [`Self::settle_call`] with the request and the answer as their encoded bytes.
    pub(super) async fn settle_call_raw(
        &self,
        g: &GroupRoute,
        md: &MetadataMap,
        path: &'static str,
        bytes: Bytes,
    ) -> Result<Result<Bytes, Status>, Status> {
        let batcher = self
            .routes
            .batcher(g, &self.metrics)
            .map_err(Status::internal)?;
        let answered = if batcher.takes_call(bytes.len()) {
            match batcher.call(path, md, bytes.clone()).await {
                // The broker took only sends in the batch: the call was not made.
                Err(e) if e.code() == tonic::Code::Unimplemented && !batcher.streamed() => None,
                answered => Some(answered),
            }
        } else {
            None
        };
        Ok(match answered {
            Some(a) => a,
            None => {
                let mut c = self.routes.raw(g).map_err(Status::internal)?;
                raw::call(&mut c, path, outgoing(md, bytes))
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
    }

    pub(super) async fn ack_message(
        &self,
        md: &MetadataMap,
        mut r: v2::AckMessageRequest,
    ) -> Result<v2::AckMessageResponse, Status> {
        if r.entries.is_empty() {
            // As a broker answers it: there is no group to ask.
            return Ok(v2::AckMessageResponse {
                status: Some(fail(md, Code::BadRequest, "AckMessage carries no entry")),
                entries: vec![],
            });
        }
        // The entries move into their group's request; each group's request copies only the
        // rest (group and topic names). Acks are as many as the messages consumed.
        let entries = std::mem::take(&mut r.entries);
        let (by_group, mut results) = acks_by_group(entries, |h| {
            self.resolve_handle(md, h, "receipt handle", Code::InvalidReceiptHandle)
        });
        for (group, (g, entries)) in by_group {
            let sub = v2::AckMessageRequest {
                entries,
                ..r.clone()
            };
            let answered: Result<v2::AckMessageResponse, Status> =
                self.settle_call(&g, md, ACK_PATH, &sub).await?;
            results.extend(group_ack_results(md, &group, sub.entries, answered));
        }
        Ok(ack_answer(results))
    }

    pub(super) async fn forward_to_dlq(
        &self,
        md: &MetadataMap,
        mut r: v2::ForwardMessageToDeadLetterQueueRequest,
    ) -> Result<v2::ForwardMessageToDeadLetterQueueResponse, Status> {
        let status = match self.resolve_handle(
            md,
            &r.receipt_handle,
            "receipt handle",
            Code::InvalidReceiptHandle,
        ) {
            Err(s) => s,
            Ok((g, h)) => {
                r.receipt_handle = h;
                let answered: Result<v2::ForwardMessageToDeadLetterQueueResponse, Status> =
                    self.settle_call(&g, md, DEAD_LETTER_PATH, &r).await?;
                match answered {
                    Ok(a) => a.status.unwrap_or_else(status::ok),
                    Err(e) => unreachable_status(md, &g.name, &e),
                }
            }
        };
        Ok(v2::ForwardMessageToDeadLetterQueueResponse {
            status: Some(status),
        })
    }

    pub(super) async fn change_invisible_duration(
        &self,
        md: &MetadataMap,
        mut r: v2::ChangeInvisibleDurationRequest,
    ) -> Result<v2::ChangeInvisibleDurationResponse, Status> {
        let failed = |s: v2::Status| v2::ChangeInvisibleDurationResponse {
            status: Some(s),
            receipt_handle: String::new(),
        };
        Ok(
            match self.resolve_handle(
                md,
                &r.receipt_handle,
                "receipt handle",
                Code::InvalidReceiptHandle,
            ) {
                Err(s) => failed(s),
                Ok((g, h)) => {
                    r.receipt_handle = h;
                    let answered: Result<v2::ChangeInvisibleDurationResponse, Status> =
                        self.settle_call(&g, md, CHANGE_INVISIBLE_PATH, &r).await?;
                    match answered {
                        Ok(mut a) => {
                            a.receipt_handle = wrap_handle(&g.name, &a.receipt_handle);
                            a
                        }
                        Err(e) => failed(unreachable_status(md, &g.name, &e)),
                    }
                }
            },
        )
    }

    pub(super) async fn end_transaction(
        &self,
        md: &MetadataMap,
        mut r: v2::EndTransactionRequest,
    ) -> Result<v2::EndTransactionResponse, Status> {
        let status = match self.resolve_handle(
            md,
            &r.transaction_id,
            "transaction id",
            Code::InvalidTransactionId,
        ) {
            Err(s) => s,
            Ok((g, id)) => {
                r.transaction_id = id;
                let answered: Result<v2::EndTransactionResponse, Status> =
                    self.settle_call(&g, md, END_TRANSACTION_PATH, &r).await?;
                match answered {
                    Ok(a) => a.status.unwrap_or_else(status::ok),
                    Err(e) => unreachable_status(md, &g.name, &e),
                }
            }
        };
        Ok(v2::EndTransactionResponse {
            status: Some(status),
        })
    }

    pub(super) async fn recall_message(
        &self,
        md: &MetadataMap,
        mut r: v2::RecallMessageRequest,
    ) -> Result<v2::RecallMessageResponse, Status> {
        let (g, h) =
            match self.resolve_handle(md, &r.recall_handle, "recall handle", Code::BadRequest) {
                Ok(x) => x,
                Err(s) => {
                    return Ok(v2::RecallMessageResponse {
                        status: Some(s),
                        message_id: String::new(),
                    })
                }
            };
        r.recall_handle = h;
        self.settle_call(&g, md, RECALL_PATH, &r).await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roles::proxy::handles::unwrap_handle;

    #[test]
    fn acks_are_sorted_by_the_group_inside_their_handle() {
        let g = |name: &str| GroupRoute {
            name: name.into(),
            endpoint: "x:1".into(),
            read_only: false,
            topics: Default::default(),
            total_lag: 0,
            queues_with_lag: 0,
            age_ms: 0,
            epoch: 0,
        };
        let entry = |h: &str| v2::AckMessageEntry {
            message_id: h.into(),
            receipt_handle: h.into(),
            lite_topic: None,
        };
        let (by_group, refused) = acks_by_group(
            vec![
                entry("fm:a:1"),
                entry("fm:b:2"),
                entry("fm:a:3"),
                entry("junk"),
            ],
            |h| match unwrap_handle(h) {
                Some((group, own)) => Ok((g(group), own.to_string())),
                None => Err(status::status(Code::InvalidReceiptHandle, "foreign")),
            },
        );
        let a: Vec<_> = by_group["a"]
            .1
            .iter()
            .map(|e| e.receipt_handle.as_str())
            .collect();
        assert_eq!(a, ["1", "3"]);
        assert_eq!(by_group["b"].1.len(), 1);
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].receipt_handle, "junk");
    }
}
