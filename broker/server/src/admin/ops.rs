//! The day-two operations of `ferromq admin` (what `mqadmin` and `kafka-consumer-groups` users
//! reach for): resetting a group's offsets, dead letters, and following a drain to its end.

use std::time::{Duration, Instant};

use anyhow::bail;
use ferromq_proto::admin::{self, reset_group_offset_request::To};
use serde_json::{json, Value};

use super::cli::{cluster_json, message_json, status, Client, DlqCmd, Printable, ResetOffsetArgs};

/// `group reset-offset`: the plan per queue, applied with `--execute`.
pub(super) async fn reset_offset(c: &mut Client, a: ResetOffsetArgs) -> anyhow::Result<Printable> {
    let to = match (a.to_earliest, a.to_latest, a.to_datetime, a.to_offset) {
        (true, ..) => To::Earliest(true),
        (_, true, ..) => To::Latest(true),
        (_, _, Some(ms), _) => To::TimestampMs(ms),
        (_, _, _, Some(o)) => To::Offset(o),
        // clap requires one of the four.
        _ => bail!("give --to-earliest, --to-latest, --to-datetime or --to-offset"),
    };
    let r = c
        .reset_group_offset(admin::ResetGroupOffsetRequest {
            group: a.group.clone(),
            topic: a.topic.unwrap_or_default(),
            to: Some(to),
            execute: a.execute,
        })
        .await
        .map_err(status)?
        .into_inner();
    let rows: Vec<Value> = r
        .queues
        .iter()
        .map(|q| {
            json!({
                "broker_group": q.broker_group,
                "topic": q.topic,
                "queue": q.queue_id,
                "current": q.current_offset,
                "new": q.new_offset,
                "moves": q.new_offset - q.current_offset,
                "min": q.min_offset,
                "max": q.max_offset,
                "inflight": q.inflight,
            })
        })
        .collect();
    if !r.executed {
        eprintln!(
            "dry run: nothing changed; add --execute to move group {} to these offsets",
            a.group
        );
    }
    Ok(Printable {
        value: json!({ "group": a.group, "executed": r.executed, "queues": rows }),
        columns: vec![
            "broker_group",
            "topic",
            "queue",
            "current",
            "new",
            "moves",
            "min",
            "max",
            "inflight",
        ],
        rows,
    })
}

/// `dlq list` and `dlq resend`.
pub(super) async fn dlq(c: &mut Client, cmd: DlqCmd) -> anyhow::Result<Printable> {
    match cmd {
        DlqCmd::List { group, max, from } => {
            let r = c
                .list_dead_letters(admin::ListDeadLettersRequest {
                    group: group.clone(),
                    from_offset: from,
                    max,
                })
                .await
                .map_err(status)?
                .into_inner();
            let rows: Vec<Value> = r
                .letters
                .iter()
                .map(|l| {
                    let mut v = l.message.as_ref().map(message_json).unwrap_or(Value::Null);
                    v["broker_group"] = json!(l.broker_group);
                    v["origin_topic"] = json!(l.origin_topic);
                    v["attempts"] = json!(l.attempts);
                    v["resent"] = json!(l.resent);
                    v
                })
                .collect();
            Ok(Printable {
                value: json!({
                    "group": group,
                    "total": r.total,
                    "pending": r.pending,
                    "letters": rows,
                }),
                columns: vec![
                    "broker_group",
                    "queue_offset",
                    "message_id",
                    "origin_topic",
                    "attempts",
                    "tag",
                    "keys",
                    "body_size",
                    "resent",
                ],
                rows,
            })
        }
        DlqCmd::Resend { group, ids } => {
            let r = c
                .resend_dead_letters(admin::ResendDeadLettersRequest {
                    group: group.clone(),
                    message_ids: ids,
                })
                .await
                .map_err(status)?
                .into_inner();
            let rows: Vec<Value> = r
                .resent
                .iter()
                .map(|x| {
                    json!({
                        "broker_group": x.broker_group,
                        "message_id": x.message_id,
                        "topic": x.topic,
                        "queue": x.queue_id,
                        "queue_offset": x.queue_offset,
                    })
                })
                .collect();
            eprintln!(
                "{} dead letter(s) of {group} sent back to their topic",
                rows.len()
            );
            Ok(Printable::list(
                rows,
                vec![
                    "broker_group",
                    "message_id",
                    "topic",
                    "queue",
                    "queue_offset",
                ],
            ))
        }
    }
}

/// `cluster drain --wait`: follows the drained group until it holds nothing unsettled, with a
/// progress bar on a terminal and a line per change otherwise.
pub(super) async fn wait_drained(
    c: &mut Client,
    group: &str,
    timeout: Option<Duration>,
) -> anyhow::Result<Printable> {
    let start = Instant::now();
    let mut bar: Option<indicatif::ProgressBar> = None;
    let mut first: Option<i64> = None;
    let mut last: Option<i64> = None;
    loop {
        let list = c
            .list_cluster(admin::ListClusterRequest {})
            .await
            .map_err(status)?
            .into_inner();
        let Some(g) = list.groups.into_iter().find(|g| g.name == group) else {
            bail!("broker group {group} is no longer listed (stopped or expired) while draining");
        };
        let remaining = g.total_lag;
        let total = *first.get_or_insert(remaining);
        if bar.is_none() && last.is_none() {
            bar = crate::progress::counter(total.max(0) as u64, &format!("drain {group}"));
        }
        if let Some(b) = &bar {
            if remaining > total {
                b.set_length(remaining as u64);
            }
            b.set_position(
                b.length()
                    .unwrap_or(0)
                    .saturating_sub(remaining.max(0) as u64),
            );
            b.set_message(format!(
                "{} queue(s) still hold messages",
                g.queues_with_lag
            ));
        } else if last != Some(remaining) {
            eprintln!(
                "drain {group}: {remaining} message(s) in {} queue(s) left",
                g.queues_with_lag
            );
        }
        last = Some(remaining);
        if g.state == "read-only" && remaining == 0 {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
            let mut v = cluster_json(&g);
            v["remaining_queues"] = json!(g.queues_with_lag);
            v["remaining_messages"] = json!(remaining);
            v["drained"] = json!(true);
            v["waited_seconds"] = json!(start.elapsed().as_secs());
            return Ok(Printable::one(
                v,
                vec![
                    "name",
                    "state",
                    "remaining_queues",
                    "remaining_messages",
                    "drained",
                    "waited_seconds",
                ],
            ));
        }
        if g.state != "read-only" {
            bail!(
                "broker group {group} is {} again: somebody undrained it",
                g.state
            );
        }
        if timeout.is_some_and(|t| start.elapsed() >= t) {
            if let Some(b) = bar.take() {
                b.abandon();
            }
            bail!(
                "broker group {group} is not drained after {}: {remaining} message(s) in {} queue(s) left",
                humantime::format_duration(Duration::from_secs(start.elapsed().as_secs())),
                g.queues_with_lag
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
