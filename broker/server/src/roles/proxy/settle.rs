//! Settling through the proxy: AckMessage, ChangeInvisibleDuration, dead-lettering,
//! EndTransaction and RecallMessage each go to the group named inside their handle.

use std::collections::BTreeMap;

use ferromq_proto::v2::{self, Code};
use tonic::metadata::MetadataMap;
use tonic::Status;

use super::fanout::{outgoing, unreachable_status};
use super::handles::wrap_handle;
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

impl ProxyApi {
    pub(super) async fn ack_message(
        &self,
        md: &MetadataMap,
        r: v2::AckMessageRequest,
    ) -> Result<v2::AckMessageResponse, Status> {
        let (by_group, mut results) = acks_by_group(r.entries.clone(), |h| {
            self.resolve_handle(md, h, "receipt handle", Code::InvalidReceiptHandle)
        });
        for (group, (g, entries)) in by_group {
            let sub = v2::AckMessageRequest {
                entries: entries.clone(),
                ..r.clone()
            };
            match self.client(&g)?.ack_message(outgoing(md, sub)).await {
                Ok(a) => {
                    for mut x in a.into_inner().entries {
                        x.receipt_handle = wrap_handle(&group, &x.receipt_handle);
                        results.push(x);
                    }
                }
                Err(e) => {
                    let s = unreachable_status(md, &group, &e);
                    for e in entries {
                        results.push(v2::AckMessageResultEntry {
                            message_id: e.message_id,
                            receipt_handle: wrap_handle(&group, &e.receipt_handle),
                            status: Some(s.clone()),
                        });
                    }
                }
            }
        }
        Ok(v2::AckMessageResponse {
            status: Some(status::summarize(
                results.iter().filter_map(|e| e.status.as_ref()),
            )),
            entries: results,
        })
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
                match self
                    .client(&g)?
                    .forward_message_to_dead_letter_queue(outgoing(md, r))
                    .await
                {
                    Ok(a) => a.into_inner().status.unwrap_or_else(status::ok),
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
                    match self
                        .client(&g)?
                        .change_invisible_duration(outgoing(md, r))
                        .await
                    {
                        Ok(a) => {
                            let mut a = a.into_inner();
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
                match self.client(&g)?.end_transaction(outgoing(md, r)).await {
                    Ok(a) => a.into_inner().status.unwrap_or_else(status::ok),
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
        Ok(self
            .client(&g)?
            .recall_message(outgoing(md, r))
            .await?
            .into_inner())
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
