//! Offset-based consumption (the pull consumer): PullMessage, UpdateOffset, GetOffset and
//! QueryOffset. The client owns its position; the server only reads from where it is told and
//! stores offsets it is given (in the same consumer offset table as pop consumers).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferromq_proto::v2::{self, Code, QueryOffsetPolicy};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug_span, instrument, Instrument};

use super::{BoxStream, RequestMeta};
use crate::convert::{duration_from_proto, ms_from_timestamp, to_proto};
use crate::node::Node;
use crate::status::{self, RpcError};
use crate::validate;

const MAX_PULL_BATCH: usize = 256;

/// Topic, queue id and namespace of a request's message queue, validated.
fn queue_of(node: &Node, mq: Option<&v2::MessageQueue>) -> Result<(String, u32, String), RpcError> {
    let mq = mq.ok_or_else(|| RpcError::bad_request("message_queue is required"))?;
    let topic = validate::topic_name(mq.topic.as_ref())?.to_string();
    let t = node.engine.topic(&topic)?;
    if mq.id < 0 || mq.id as u32 >= t.queues {
        return Err(RpcError::bad_request(format!(
            "queue {} does not exist in topic {topic} ({} queues)",
            mq.id, t.queues
        )));
    }
    Ok((
        topic,
        mq.id as u32,
        mq.topic
            .as_ref()
            .map(|r| r.resource_namespace.clone())
            .unwrap_or_default(),
    ))
}

pub fn pull_message(
    node: Arc<Node>,
    meta: RequestMeta,
    req: v2::PullMessageRequest,
) -> BoxStream<v2::PullMessageResponse> {
    let (tx, rx) = mpsc::channel(MAX_PULL_BATCH + 2);
    let span = debug_span!(
        "PullMessage",
        group = req.group.as_ref().map(|g| g.name.as_str()).unwrap_or(""),
        offset = req.offset
    );
    tokio::spawn(
        async move {
            use v2::pull_message_response::Content;
            let item = |c| Ok(v2::PullMessageResponse { content: Some(c) });
            let result = async {
                meta.require_client_id()?;
                validate::group_name(req.group.as_ref())?;
                let filter = Arc::new(crate::convert::read_filter(req.filter_expression.as_ref())?);
                if req.offset < 0 {
                    return Err(RpcError::new(Code::IllegalOffset, format!("offset {} is negative", req.offset)));
                }
                let batch = if req.batch_size <= 0 { 32 } else { (req.batch_size as usize).min(MAX_PULL_BATCH) };
                let mq = req.message_queue.clone();
                let (topic, q, ns) = node.blocking(move |b| queue_of(b, mq.as_ref())).await?;
                let poll = req.long_polling_timeout.as_ref().and_then(duration_from_proto).unwrap_or_default().min(Duration::from_secs(30));
                let poll = meta.timeout.map_or(poll, |t| poll.min(t.saturating_sub((t / 10).max(Duration::from_millis(500)))));
                let until = Instant::now() + poll;
                let notify = node.engine.wakeups.for_topic(&topic);
                loop {
                    let notified = notify.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    let (t2, f2, offset) = (topic.clone(), filter.clone(), req.offset as u64);
                    let r = node
                        .blocking(move |b| {
                            let (_, max) = b.engine.store.queue_range(&t2, q);
                            if offset > max {
                                return Err(RpcError::new(Code::IllegalOffset, format!("offset {offset} is beyond the end of the queue ({max})")));
                            }
                            b.engine.store.read(&t2, q, offset, batch, Some(&f2)).map_err(RpcError::from)
                        })
                        .await?;
                    if !r.messages.is_empty() || Instant::now() >= until {
                        return Ok((r, topic, ns));
                    }
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep_until((until.min(Instant::now() + Duration::from_secs(1))).into()) => {}
                    }
                }
            }
            .await;
            match result {
                Ok((r, topic, ns)) => {
                    let st = if r.messages.is_empty() { status::status(Code::MessageNotFound, "no new message") } else { status::ok() };
                    let _ = tx.send(item(Content::Status(st))).await;
                    for m in r.messages {
                        node.metrics.message_out(&topic, "", m.body.len());
                        let _ = tx.send(item(Content::Message(to_proto(m, &ns, &node.settings.advertise_addr, None)))).await;
                    }
                    let _ = tx.send(item(Content::NextOffset(r.next_offset as i64))).await;
                }
                Err(e) => {
                    let _ = tx.send(item(Content::Status(meta.status(&e)))).await;
                }
            }
        }
        .instrument(span),
    );
    Box::pin(ReceiverStream::new(rx))
}

#[instrument(skip_all, fields(group = req.group.as_ref().map(|g| g.name.as_str()).unwrap_or(""), offset = req.offset))]
pub async fn update_offset(
    node: &Arc<Node>,
    meta: &RequestMeta,
    req: v2::UpdateOffsetRequest,
) -> v2::UpdateOffsetResponse {
    let result = async {
        meta.require_client_id()?;
        let group = validate::group_name(req.group.as_ref())?.to_string();
        let mq = req.message_queue.clone();
        let offset = req.offset;
        node.blocking(move |b| {
            let (topic, q, _) = queue_of(b, mq.as_ref())?;
            let (_, max) = b.engine.store.queue_range(&topic, q);
            if offset < 0 || offset as u64 > max {
                return Err(RpcError::new(
                    Code::IllegalOffset,
                    format!("offset {offset} is outside 0..={max}"),
                ));
            }
            // The same commit a remoting consumer makes: pop delivery of the group skips what
            // lies below it.
            b.engine
                .deliveries
                .commit_offset(&group, &topic, q, offset as u64, true)
                .map_err(RpcError::from)
        })
        .await
    }
    .await;
    v2::UpdateOffsetResponse {
        status: Some(result.map_or_else(|e| meta.status(&e), |_| status::ok())),
    }
}

#[instrument(skip_all, fields(group = req.group.as_ref().map(|g| g.name.as_str()).unwrap_or("")))]
pub async fn get_offset(
    node: &Arc<Node>,
    meta: &RequestMeta,
    req: v2::GetOffsetRequest,
) -> v2::GetOffsetResponse {
    let result = async {
        meta.require_client_id()?;
        let group = validate::group_name(req.group.as_ref())?.to_string();
        let mq = req.message_queue.clone();
        node.blocking(move |b| {
            let (topic, q, _) = queue_of(b, mq.as_ref())?;
            b.engine
                .store
                .offsets()
                .get(&group, &topic, q)
                .ok_or_else(|| {
                    RpcError::new(
                        Code::OffsetNotFound,
                        format!("group {group} has no offset for {topic} queue {q}"),
                    )
                })
        })
        .await
    }
    .await;
    match result {
        Ok(o) => v2::GetOffsetResponse {
            status: Some(status::ok()),
            offset: o as i64,
        },
        Err(e) => v2::GetOffsetResponse {
            status: Some(meta.status(&e)),
            offset: 0,
        },
    }
}

#[instrument(skip_all)]
pub async fn query_offset(
    node: &Arc<Node>,
    meta: &RequestMeta,
    req: v2::QueryOffsetRequest,
) -> v2::QueryOffsetResponse {
    let result = async {
        meta.require_client_id()?;
        let mq = req.message_queue.clone();
        let policy = QueryOffsetPolicy::try_from(req.query_offset_policy)
            .map_err(|_| RpcError::bad_request("unknown query_offset_policy"))?;
        let ts = req.timestamp.as_ref().map(ms_from_timestamp);
        node.blocking(move |b| {
            let (topic, q, _) = queue_of(b, mq.as_ref())?;
            let (min, max) = b.engine.store.queue_range(&topic, q);
            match policy {
                QueryOffsetPolicy::Beginning => Ok(min),
                QueryOffsetPolicy::End => Ok(max),
                QueryOffsetPolicy::Timestamp => {
                    let ts = ts.ok_or_else(|| {
                        RpcError::bad_request("timestamp is required with the TIMESTAMP policy")
                    })?;
                    b.engine
                        .offset_for_time(&topic, q, ts)
                        .map_err(RpcError::from)
                }
            }
        })
        .await
    }
    .await;
    match result {
        Ok(o) => v2::QueryOffsetResponse {
            status: Some(status::ok()),
            offset: o as i64,
        },
        Err(e) => v2::QueryOffsetResponse {
            status: Some(meta.status(&e)),
            offset: 0,
        },
    }
}
