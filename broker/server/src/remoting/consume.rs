//! CONSUMER_SEND_MSG_BACK: a 4.x push consumer hands back a message it failed to process, named
//! by the commit log offset it was pulled with; the engine retries it through the group's
//! retry topic after the delay level's wait, or dead-letters it once its retries are used up
//! (`ferromq_engine::retry`: the same group limits and dead-letter format as pop delivery).
//!
//! Delay levels: 0 lets the broker choose, `3 + retries so far` (10 s, then 30 s, 1 min, ...),
//! as RocketMQ does; a negative level dead-letters at once. When send-back fails the 4.x client
//! sends the message to `%RETRY%<group>` itself ([`send_to_retry`]), which lands in the same
//! place.

use std::sync::Arc;
use std::time::Duration;

use ferromq_engine::publish::stored_form;
use ferromq_engine::topics::retry_group;
use ferromq_engine::{props, Retry};
use ferromq_remoting::code::response;
use ferromq_remoting::custom::{ConsumerSendMsgBackRequestHeader, SendMessageRequestHeader};
use ferromq_remoting::message::{decode_properties, property};
use ferromq_remoting::Command;

use super::message::{delay_of_level, publication, SendParams, RMQ_PREFIX};
use super::status::RemotingError;
use super::{record, Handled, Remoting};
use crate::validate;

/// The wait before a retry at `level`, where 0 means the broker's choice for a message that had
/// `retries` retries.
fn retry_delay(level: i32, retries: u32) -> Duration {
    let level = if level == 0 {
        3 + retries.min(15) as i32
    } else {
        level
    };
    delay_of_level(level).unwrap_or(Duration::ZERO)
}

pub(super) async fn send_back(r: &Arc<Remoting>, req: &Command) -> Handled {
    let h: ConsumerSendMsgBackRequestHeader = req.header()?;
    record(h.origin_topic.as_deref(), Some(&h.group));
    let group = validate::group(&h.group)?.to_string();
    let phys = r.offsets.read(h.offset).ok_or_else(|| {
        RemotingError::system(format!(
            "offset {} is not a commit log offset of this broker",
            h.offset
        ))
    })?;
    let level = h.delay_level;
    let limit = h.max_reconsume_times.and_then(|m| u32::try_from(m).ok());
    let done = r
        .blocking(move |r| {
            Ok(r.node.engine.retry_at_offset(
                &group,
                phys,
                &|retries| retry_delay(level, retries),
                limit,
                level < 0,
            )?)
        })
        .await?;
    tracing::debug!(outcome = ?done, "message handed back");
    Ok(req.response_to(response::SUCCESS, None))
}

/// A 4.x consumer's own send to its retry topic (its fallback when send-back failed): the
/// message, its origin in `RETRY_TOPIC`, its retries in the header's `reconsumeTimes`.
pub(super) async fn send_to_retry(
    r: &Arc<Remoting>,
    req: &Command,
    h: &SendMessageRequestHeader,
) -> Handled {
    let group = retry_group(&h.topic)
        .ok_or_else(|| RemotingError::invalid(format!("{} is not a retry topic", h.topic)))?
        .to_string();
    validate::group(&group)?;
    let properties = decode_properties(h.properties.as_deref().unwrap_or(""));
    let origin = properties
        .get(property::RETRY_TOPIC)
        .cloned()
        .unwrap_or_else(|| h.topic.clone());
    // The header counts this retry already.
    let retries = h.reconsume_times.unwrap_or(0).max(1) as u32 - 1;
    let level = properties
        .get(property::DELAY_TIME_LEVEL)
        .and_then(|l| l.trim().parse::<i32>().ok())
        .unwrap_or(0);
    let p = publication(
        SendParams {
            topic: h.topic.clone(),
            queue_id: 0,
            sys_flag: h.sys_flag,
            born_timestamp: h.born_timestamp,
            flag: h.flag,
            properties,
            body: req.body.clone(),
        },
        "",
        None,
        r.node.settings.max_body_size,
    )?;
    let mut message = stored_form(p, origin.clone(), 0);
    message
        .properties
        .remove(&format!("{RMQ_PREFIX}{}", property::RETRY_TOPIC));
    message
        .properties
        .insert(props::RETRY_ORIGIN_TOPIC.into(), origin);
    message.flags = h.flag as u32;
    let retry = Retry {
        group,
        message,
        retries,
        delay: retry_delay(level, retries),
        client_limit: h.max_reconsume_times.and_then(|m| u32::try_from(m).ok()),
        dead_letter: false,
    };
    let done = r.blocking(move |r| Ok(r.node.engine.retry(retry)?)).await?;
    tracing::debug!(outcome = ?done, "message sent to the retry topic");
    // The answer of a send; the copy has no offset id a client could use, so it gets none.
    let mut out = req.response_to(response::SUCCESS, None);
    out.ext_fields.insert("msgId".into(), "0".repeat(32));
    out.ext_fields.insert("queueId".into(), "0".into());
    out.ext_fields.insert("queueOffset".into(), "0".into());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_zero_waits_longer_the_more_retries_a_message_had() {
        assert_eq!(retry_delay(0, 0), Duration::from_secs(10));
        assert_eq!(retry_delay(0, 1), Duration::from_secs(30));
        assert_eq!(retry_delay(1, 7), Duration::from_secs(1));
        assert_eq!(retry_delay(0, 100), Duration::from_secs(7200));
        assert_eq!(retry_delay(-1, 0), Duration::ZERO);
    }
}
