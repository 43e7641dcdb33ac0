//! SendMessage: validate each message, check it against its topic, append it to the store.
//!
//! Each message gets its own result entry, in order (clients index the first one). A refused
//! message is not stored; the others of the batch still are. DELAY messages due later are
//! parked with the timers (the entry carries a recall handle), TRANSACTION messages are parked
//! as half messages (the entry carries the transaction id), PRIORITY messages keep their
//! priority for the delivery engine.

use std::collections::BTreeMap;
use std::sync::Arc;

use ferromq_proto::v2::{self, Code};
use ferromq_store::{MessageType, NewMessage, KEY_SEPARATOR, PROP_KEYS, PROP_MSG_ID, PROP_TAGS};
use tracing::{instrument, warn};

use super::RequestMeta;
use crate::broker::Broker;
use crate::convert::{ms_from_timestamp, now_ms};
use crate::props;
use crate::status::{self, RpcError};
use crate::validate;

/// Longest a send waits for its messages to become readable by consumers.
const DISPATCH_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// Words in the FORBIDDEN answer of a draining group; proxies recognise them and pass the send
/// to another group (the v2 status has no field for the reason).
pub const DRAINING: &str = "is read-only (being drained)";

fn type_matches(topic: MessageType, msg: v2::MessageType) -> bool {
    matches!(
        (topic, msg),
        (MessageType::Normal, v2::MessageType::Normal)
            | (MessageType::Fifo, v2::MessageType::Fifo)
            | (MessageType::Delay, v2::MessageType::Delay)
            | (MessageType::Transaction, v2::MessageType::Transaction)
            | (MessageType::Priority, v2::MessageType::Priority)
    )
}

/// Validates one message and turns it into what the store appends, and whether it is parked.
fn prepare(broker: &Broker, m: &v2::Message) -> Result<(NewMessage, Park), RpcError> {
    let topic_name = validate::topic_name(m.topic.as_ref())?;
    if validate::is_system_topic(topic_name) {
        return Err(RpcError::new(
            Code::IllegalTopic,
            format!("topic {topic_name} is a system topic; clients cannot publish to it"),
        ));
    }
    let checked = validate::message(m, broker.cfg.max_body_size)?;
    if broker.membership.is_read_only() {
        return Err(RpcError::new(
            Code::Forbidden,
            format!(
                "broker group {} {DRAINING}; send through a proxy so the message goes to a writable group",
                broker.membership.group()
            ),
        ));
    }
    let topic = broker.topic(topic_name)?;
    if !topic.permission.writable() {
        return Err(RpcError::new(
            Code::Forbidden,
            format!("topic {topic_name} is not writable"),
        ));
    }
    if !type_matches(topic.message_type, checked.message_type) {
        return Err(RpcError::new(
            Code::MessagePropertyConflictWithType,
            format!(
                "topic {topic_name} accepts {} messages, not {:?}",
                topic.message_type, checked.message_type
            ),
        ));
    }
    let sp = m
        .system_properties
        .as_ref()
        .ok_or_else(|| RpcError::bad_request("message has no system_properties"))?;
    let mut park = Park::No;
    match checked.message_type {
        v2::MessageType::Normal | v2::MessageType::Fifo => {}
        v2::MessageType::Delay => {
            let due = sp.delivery_timestamp.as_ref().ok_or_else(|| {
                RpcError::new(
                    Code::IllegalDeliveryTime,
                    "a DELAY message needs a delivery_timestamp",
                )
            })?;
            // Rounded up: a message is never delivered before the time it asked for.
            let due_ms = due
                .seconds
                .saturating_mul(1000)
                .saturating_add((i64::from(due.nanos.max(0)) + 999_999) / 1_000_000);
            let now = now_ms();
            let max = broker.cfg.max_delay.as_millis() as i64;
            if due_ms - now > max {
                return Err(RpcError::new(
                    Code::IllegalDeliveryTime,
                    format!(
                        "delivery time is {} s ahead, over the maximum delay of {} s",
                        (due_ms - now) / 1000,
                        max / 1000
                    ),
                ));
            }
            if due_ms > now {
                park = Park::Timer(due_ms as u64);
            }
        }
        v2::MessageType::Transaction => {
            park = Park::Half(
                sp.orphaned_transaction_recovery_duration
                    .as_ref()
                    .and_then(crate::convert::duration_from_proto),
            );
        }
        v2::MessageType::Priority => {}
        other => {
            return Err(RpcError::new(
                Code::NotImplemented,
                format!("{other:?} messages are not implemented by this FerroMQ version"),
            ))
        }
    }
    if let Some(p) = sp.priority {
        if checked.message_type != v2::MessageType::Priority {
            return Err(RpcError::new(
                Code::MessagePropertyConflictWithType,
                "only PRIORITY messages may carry a priority",
            ));
        }
        if p < 0 {
            return Err(RpcError::bad_request(format!(
                "priority {p} is negative; use 0 or more (higher is delivered first)"
            )));
        }
    }
    let mut properties: BTreeMap<String, String> = m.user_properties.clone().into_iter().collect();
    properties.insert(PROP_MSG_ID.into(), checked.message_id.to_string());
    if let Some(t) = checked.tag {
        properties.insert(PROP_TAGS.into(), t.to_string());
    }
    if !checked.keys.is_empty() {
        properties.insert(
            PROP_KEYS.into(),
            checked.keys.join(&KEY_SEPARATOR.to_string()),
        );
    }
    if let Some(g) = checked.message_group {
        properties.insert(props::MESSAGE_GROUP.into(), g.to_string());
    }
    properties.insert(
        props::MESSAGE_TYPE.into(),
        (checked.message_type as i32).to_string(),
    );
    if !sp.born_host.is_empty() {
        properties.insert(props::BORN_HOST.into(), sp.born_host.clone());
    }
    if let Some(tc) = sp.trace_context.as_ref().filter(|t| !t.is_empty()) {
        properties.insert(props::TRACE_CONTEXT.into(), tc.clone());
    }
    if checked.message_type == v2::MessageType::Delay {
        if let Some(t) = &sp.delivery_timestamp {
            properties.insert(
                crate::timers::DELIVER_AT.into(),
                ms_from_timestamp(t).to_string(),
            );
        }
    }
    if checked.message_type == v2::MessageType::Priority {
        properties.insert(props::PRIORITY.into(), sp.priority.unwrap_or(0).to_string());
    }
    // The client picked the queue (FIFO: by message group); keep it when valid.
    let queue_id = if sp.queue_id >= 0 {
        sp.queue_id as u32 % topic.queues
    } else {
        0
    };
    Ok((
        NewMessage {
            topic: topic.name,
            queue_id,
            born_timestamp_ms: sp.born_timestamp.as_ref().map_or(0, ms_from_timestamp),
            born_host: sp.born_host.parse().ok(),
            properties,
            body: m.body.clone(),
            ..Default::default()
        },
        park,
    ))
}

/// Whether a message waits before its topic sees it.
enum Park {
    No,
    /// A delay message due at this time (ms since the epoch).
    Timer(u64),
    /// A half message, with its own wait before the first transaction check.
    Half(Option<std::time::Duration>),
}

/// What one stored message reports back.
struct Sent {
    offset: i64,
    /// End of its record in the commit log when it is visible now.
    visible_end: Option<u64>,
    transaction_id: String,
    recall_handle: String,
}

/// Stores one prepared message: appended, or parked as a timer or half message.
fn store_one(
    b: &Broker,
    nm: NewMessage,
    park: Park,
    client_id: Option<&str>,
) -> Result<Sent, RpcError> {
    let size = nm.body.len();
    let sent = match park {
        Park::No => {
            let a = b.store.append(&nm).map_err(RpcError::from)?;
            Sent {
                offset: a.queue_offset as i64,
                visible_end: Some(a.phys_offset + u64::from(a.size)),
                transaction_id: String::new(),
                recall_handle: String::new(),
            }
        }
        Park::Timer(due) => Sent {
            offset: 0,
            visible_end: None,
            transaction_id: String::new(),
            recall_handle: b.timers.schedule(&nm, due)?,
        },
        Park::Half(recovery) => Sent {
            offset: 0,
            visible_end: None,
            transaction_id: b.transactions.prepare(&nm, recovery, client_id)?,
            recall_handle: String::new(),
        },
    };
    b.metrics.message_in(&nm.topic, size);
    Ok(sent)
}

#[instrument(skip_all, fields(client = meta.client_id.as_deref().unwrap_or(""), messages = req.messages.len()))]
pub async fn send_message(
    broker: &Arc<Broker>,
    meta: &RequestMeta,
    req: v2::SendMessageRequest,
) -> v2::SendMessageResponse {
    if let Err(e) = meta.require_client_id() {
        return v2::SendMessageResponse {
            status: Some(meta.status(&e)),
            entries: vec![],
        };
    }
    if req.messages.is_empty() {
        let e = RpcError::bad_request("SendMessage carries no message");
        return v2::SendMessageResponse {
            status: Some(meta.status(&e)),
            entries: vec![],
        };
    }
    let messages = req.messages;
    let client_id = meta.client_id.clone();
    let results = broker
        .blocking(move |b| {
            let results: Vec<_> = messages
                .iter()
                .map(|m| {
                    let id = m
                        .system_properties
                        .as_ref()
                        .map(|s| s.message_id.clone())
                        .unwrap_or_default();
                    let r = prepare(b, m)
                        .and_then(|(nm, park)| store_one(b, nm, park, client_id.as_deref()));
                    (id, r)
                })
                .collect();
            Ok(results)
        })
        .await;
    let results: Vec<(String, Result<Sent, RpcError>)> = match results {
        Ok(r) => r,
        Err(e) => {
            return v2::SendMessageResponse {
                status: Some(meta.status(&e)),
                entries: vec![],
            }
        }
    };
    // Read-your-writes: once a send is answered, a receive finds the message. The dispatcher
    // normally catches up within a millisecond; never wait long for it.
    if let Some(end) = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .filter_map(|s| s.visible_end)
        .max()
    {
        broker.dispatched.wait(end, DISPATCH_WAIT).await;
    }
    let entries: Vec<v2::SendResultEntry> = results
        .into_iter()
        .map(|(message_id, r)| match r {
            Ok(sent) => v2::SendResultEntry {
                status: Some(status::ok()),
                message_id,
                transaction_id: sent.transaction_id,
                offset: sent.offset,
                recall_handle: sent.recall_handle,
            },
            Err(e) => {
                if e.code == Code::InternalServerError {
                    warn!(message_id, error = %e, "append failed");
                }
                v2::SendResultEntry {
                    status: Some(meta.status(&e)),
                    message_id,
                    ..Default::default()
                }
            }
        })
        .collect();
    let summary = status::summarize(entries.iter().filter_map(|e| e.status.as_ref()));
    v2::SendMessageResponse {
        status: Some(summary),
        entries,
    }
}
