//! SEND_MESSAGE (v1, long field names: the Go client), SEND_MESSAGE_V2 (one-letter names: the
//! Java client) and SEND_BATCH_MESSAGE: each message becomes a [`ferromq_engine::Publication`]
//! (see [`super::message`]) and is published by the engine, exactly as a RocketMQ 5 send is.
//!
//! The answer carries the offset message id (this broker's remoting address and the record's
//! commit log offset; a batch's ids joined with commas), the queue and its offset, and the
//! transaction id, which for a half message is the engine's and comes back in END_TRANSACTION.
//! A batch is checked whole before anything is stored; the engine then publishes its messages
//! in order, and a failure part-way (a full disk) answers the error with the messages before it
//! stored, as a RocketMQ 5 batch send does. One-way sends are published the same way and get no
//! answer. Sends to a retry topic are the 4.x consumer's own fallback for a failed send-back and
//! go through [`super::consume`].

use std::sync::Arc;
use std::time::Duration;

use ferromq_engine::{topics, Published};
use ferromq_remoting::code::{request, response};
use ferromq_remoting::custom::{self, SendMessageRequestHeader, SendMessageResponseHeader};
use ferromq_remoting::message::{decode_batch, decode_properties, encode_offset_msg_id};
use ferromq_remoting::Command;

use super::connection::Peer;
use super::message::{publication, SendParams};
use super::status::RemotingError;
use super::{consume, record, Handled, Remoting};

/// Longest a send waits for its messages to become readable by consumers.
const DISPATCH_WAIT: Duration = Duration::from_millis(500);

/// The messages of a send request, one per message of a batch.
pub fn send_params(
    req: &Command,
    h: &SendMessageRequestHeader,
) -> Result<Vec<SendParams>, RemotingError> {
    let batch = req.code == request::SEND_BATCH_MESSAGE || h.batch == Some(true);
    if !batch {
        return Ok(vec![SendParams {
            topic: h.topic.clone(),
            queue_id: h.queue_id,
            sys_flag: h.sys_flag,
            born_timestamp: h.born_timestamp,
            flag: h.flag,
            properties: decode_properties(h.properties.as_deref().unwrap_or("")),
            body: req.body.clone(),
        }]);
    }
    let entries = decode_batch(&req.body)?;
    if entries.is_empty() {
        return Err(RemotingError::new(
            response::MESSAGE_ILLEGAL,
            "batch send carries no message",
        ));
    }
    Ok(entries
        .into_iter()
        .map(|e| SendParams {
            topic: h.topic.clone(),
            queue_id: h.queue_id,
            // 4.x clients never compress a batch's messages.
            sys_flag: 0,
            born_timestamp: h.born_timestamp,
            flag: e.flag,
            properties: e.properties,
            body: e.body,
        })
        .collect())
}

pub(super) async fn send(r: &Arc<Remoting>, peer: &Arc<Peer>, req: &Command) -> Handled {
    let h = custom::send_header(req.code, &req.ext_fields)?;
    record(Some(&h.topic), Some(&h.producer_group));
    if topics::retry_group(&h.topic).is_some() {
        return consume::send_to_retry(r, req, &h).await;
    }
    if topics::is_system_topic(&h.topic) {
        return Err(RemotingError::new(
            response::NO_PERMISSION,
            format!(
                "topic {} is a system topic; clients cannot send to it",
                h.topic
            ),
        ));
    }
    let params = send_params(req, &h)?;
    let producer = r.clients.client_id(peer.id());
    let max_body = r.node.settings.max_body_size;
    let born_host = peer.addr.clone();
    let mut publications = Vec::with_capacity(params.len());
    for p in params {
        publications.push(publication(p, &born_host, producer.clone(), max_body)?);
    }
    let topic = h.topic.clone();
    let queue_id = h.queue_id;
    let published = r
        .blocking(move |r| {
            let t = r.node.engine.topic(&topic)?;
            if queue_id >= 0 && queue_id as u32 >= t.queues {
                return Err(RemotingError::system(format!(
                    "request queueId[{queue_id}] is illegal: topic {topic} has {} queues",
                    t.queues
                )));
            }
            let mut out = Vec::with_capacity(publications.len());
            for p in publications {
                let (id, size) = (p.message_id.clone(), p.body.len());
                let kind = crate::metrics::message_type_label(p.message_type);
                let sent = r.node.engine.publish(p)?;
                r.node.metrics.message_in(&topic, kind, size);
                out.push((id, sent));
            }
            Ok(out)
        })
        .await?;
    if let Some(end) = published.iter().filter_map(|(_, p)| p.visible_end).max() {
        r.node.engine.dispatched.wait(end, DISPATCH_WAIT).await;
    }
    Ok(answer(r, peer, req, h.queue_id, &published))
}

/// The answer to a send whose messages were all published.
fn answer(
    r: &Remoting,
    peer: &Peer,
    req: &Command,
    queue_id: i32,
    published: &[(String, Published)],
) -> Command {
    let ids: Vec<String> = published
        .iter()
        .map(|(_, p)| encode_offset_msg_id(peer.front.store_host, r.offsets.show(p.log_offset)))
        .collect();
    let first = published.first().map(|(id, p)| (id.clone(), p.clone()));
    let (uniq, first) = first.unwrap_or_default();
    let header = SendMessageResponseHeader {
        msg_id: ids.join(","),
        queue_id: queue_id.max(0),
        queue_offset: first.queue_offset.map_or(0, |o| o as i64),
        // What RocketMQ 5 answers: the engine's id for a half message, else the message id.
        transaction_id: Some(first.transaction_id.clone().unwrap_or(uniq)),
        batch_uniq_id: None,
        recall_handle: first.recall_handle.clone(),
    };
    let mut out = req
        .response_to(response::SUCCESS, None)
        .with_header(&header);
    out.ext_fields
        .insert("MSG_REGION".into(), "DefaultRegion".into());
    out.ext_fields.insert("TRACE_ON".into(), "true".into());
    out
}
