//! SendMessage through the proxy: to a writable group holding the topic, chosen by the message
//! group's hash for FIFO messages (same key, same group, on every proxy) and in rotation
//! otherwise. A group refusing because it is being drained (its report may lag the drain by a
//! heartbeat) passes the send on to the next group; an unreachable one too, for non-FIFO sends
//! only (FIFO sends fail instead of breaking order).

use ferromq_proto::v2::{self, Code};
use tonic::metadata::MetadataMap;
use tracing::warn;

use super::fanout::{fail, outgoing, topic_of, unreachable_status};
use super::handles::wrap_handle;
use super::ProxyApi;

/// A stable hash for message groups (FNV-1a), so every proxy sends one key to the same group.
pub fn key_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

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

impl ProxyApi {
    pub(super) async fn send_message(
        &self,
        md: &MetadataMap,
        r: v2::SendMessageRequest,
    ) -> v2::SendMessageResponse {
        let first = r.messages.first();
        let topic = first
            .map(|m| topic_of(m.topic.as_ref()))
            .unwrap_or_default();
        let key = first
            .and_then(|m| m.system_properties.as_ref())
            .and_then(|sp| sp.message_group.clone());
        tracing::Span::current().record("topic", topic.as_str());
        let view = self.routes.view();
        let candidates = view.writable_for(&topic);
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
            return v2::SendMessageResponse {
                status: Some(fail(md, code, msg)),
                entries: vec![],
            };
        }
        let mut answer = None;
        for i in send_order(candidates.len(), key.as_deref(), self.routes.next()) {
            let g = candidates[i];
            tracing::Span::current().record("group", g.name.as_str());
            let mut c = match self.client(g) {
                Ok(c) => c,
                Err(e) => {
                    answer = Some(Err((g.name.clone(), e)));
                    continue;
                }
            };
            match c.send_message(outgoing(md, r.clone())).await {
                Ok(resp) => {
                    let mut resp = resp.into_inner();
                    if is_drain_refusal(resp.status.as_ref()) {
                        answer = Some(Ok(resp));
                        continue;
                    }
                    for e in &mut resp.entries {
                        e.transaction_id = wrap_handle(&g.name, &e.transaction_id);
                        e.recall_handle = wrap_handle(&g.name, &e.recall_handle);
                    }
                    answer = Some(Ok(resp));
                    break;
                }
                Err(e) => {
                    warn!(group = %g.name, error = %e.message(), "send to broker group failed");
                    // Only a refused connection is certain not to have stored anything.
                    let retry = e.code() == tonic::Code::Unavailable && key.is_none();
                    answer = Some(Err((g.name.clone(), e)));
                    if !retry {
                        break;
                    }
                }
            }
        }
        match answer {
            Some(Ok(resp)) => resp,
            Some(Err((g, e))) => v2::SendMessageResponse {
                status: Some(unreachable_status(md, &g, &e)),
                entries: vec![],
            },
            None => v2::SendMessageResponse {
                status: Some(fail(md, Code::InternalServerError, "no broker group tried")),
                entries: vec![],
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_groups_hash_the_same_everywhere() {
        assert_eq!(key_hash("order-42"), key_hash("order-42"));
        assert_ne!(key_hash("order-42"), key_hash("order-43"));
    }

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
}
