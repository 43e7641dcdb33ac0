//! What `mqadmin` and `DefaultMQAdminExt` (rocketmq-dashboard, rocketmq-exporter) ask a
//! broker: topics (create, update, delete, stats, config), consumer progress, connections,
//! subscription groups, message lookups, runtime figures, configuration and offset resets.
//!
//! Each answer is built from the engine and the store, so the tools see what the FerroMQ admin
//! API sees:
//! - Topics have one queue count (the larger of `readQueueNums` and `writeQueueNums`), which
//!   can only grow, and one message type, from the 5.x tools' `+message.type=...` attribute
//!   (NORMAL when none is given; RocketMQ's MIXED is refused, since a FerroMQ topic has one
//!   type). Permission bits map to FerroMQ's permissions.
//! - A subscription group's `retryMaxTimes` is the engine group's `max delivery attempts - 1`
//!   and `consumeMessageOrderly` its FIFO setting; the rest of RocketMQ's group settings are
//!   answered with RocketMQ's defaults and not kept.
//! - Consumer progress is the engine's (committed offset per queue, both styles of consumer).
//! - A reset moves the group's offsets for every consumer (see
//!   `ferromq_engine::delivery`'s offsets) and tells live 4.x consumers
//!   (`RESET_CONSUMER_CLIENT_OFFSET`), which adopt the new offsets.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use ferromq_engine::groups::GroupConfig;
use ferromq_engine::topics;
use ferromq_engine::{EngineError, ParkedQueue};
use ferromq_remoting::body::{
    self, perm, ConsumeStats, DataVersion, KvTable, MessageQueue, OffsetWrapper,
    ProducerConnection, ResetOffsetBody, SubscriptionGroupConfig, SubscriptionGroupWrapper,
    TopicConfig as WireTopic, TopicConfigSerializeWrapper, TopicOffset, TopicStatsTable,
};
use ferromq_remoting::code::{request, response};
use ferromq_remoting::custom::{
    ConsumerGroupRequestHeader, CreateTopicRequestHeader, DeleteSubscriptionGroupRequestHeader,
    GetBrokerConfigResponseHeader, GetConsumeStatsRequestHeader,
    GetProducerConnectionListRequestHeader, GetSubscriptionGroupConfigRequestHeader,
    QueryMessageRequestHeader, QueryMessageResponseHeader, ResetOffsetRequestHeader,
    TopicRequestHeader, ViewMessageRequestHeader,
};
use ferromq_remoting::Command;
use ferromq_store::{MessageType, Permission, StoreError, TopicConfig};
use serde::Serialize;

use super::client::server_request;
use super::connection::Peer;
use super::message::{delay_of_level, encode_all, DELAY_LEVELS};
use super::namesrv::is_visible;
use super::offset::search_offset;
use super::status::RemotingError;
use super::{record, Handled, Remoting};
use crate::validate;

/// Most messages one QUERY_MESSAGE answers (RocketMQ's `maxMsgsNumBatch`).
const MAX_QUERY: usize = 64;

/// The attribute name of a topic's message type (5.x tools).
const MESSAGE_TYPE_ATTRIBUTE: &str = "message.type";

fn type_name(t: MessageType) -> &'static str {
    match t {
        MessageType::Normal => "NORMAL",
        MessageType::Fifo => "FIFO",
        MessageType::Delay => "DELAY",
        MessageType::Transaction => "TRANSACTION",
        MessageType::Priority => "PRIORITY",
    }
}

/// The message type in a 5.x tool's attributes (`+message.type=FIFO,+other=x`).
fn type_from_attributes(attributes: Option<&str>) -> Result<Option<MessageType>, RemotingError> {
    let Some(a) = attributes else { return Ok(None) };
    for part in a.split(',') {
        let Some((k, v)) = part.trim().trim_start_matches('+').split_once('=') else {
            continue;
        };
        if k.trim() != MESSAGE_TYPE_ATTRIBUTE {
            continue;
        }
        return match v.trim().to_ascii_uppercase().as_str() {
            "NORMAL" => Ok(Some(MessageType::Normal)),
            "FIFO" => Ok(Some(MessageType::Fifo)),
            "DELAY" => Ok(Some(MessageType::Delay)),
            "TRANSACTION" => Ok(Some(MessageType::Transaction)),
            "PRIORITY" => Ok(Some(MessageType::Priority)),
            other => Err(RemotingError::invalid(format!(
                "message.type {other} is not one FerroMQ topics have: a topic has one type, NORMAL, FIFO, DELAY, TRANSACTION or PRIORITY"
            ))),
        };
    }
    Ok(None)
}

fn permission_of(bits: i32) -> Permission {
    match (bits & perm::READ != 0, bits & perm::WRITE != 0) {
        (true, true) => Permission::ReadWrite,
        (true, false) => Permission::Read,
        (false, true) => Permission::Write,
        (false, false) => Permission::None,
    }
}

fn wire_topic(t: &TopicConfig) -> WireTopic {
    let mut attributes = BTreeMap::new();
    attributes.insert(
        MESSAGE_TYPE_ATTRIBUTE.to_string(),
        type_name(t.message_type).to_string(),
    );
    WireTopic {
        topic_name: t.name.clone(),
        read_queue_nums: t.queues as i32,
        write_queue_nums: t.queues as i32,
        perm: super::namesrv::perm_bits(t.permission, true),
        topic_filter_type: "SINGLE_TAG".into(),
        topic_sys_flag: 0,
        order: t.message_type == MessageType::Fifo,
        attributes,
    }
}

fn ok_body(req: &Command, body: Vec<u8>) -> Command {
    req.response_to(response::SUCCESS, None).with_body(body)
}

fn no_topic(topic: &str) -> RemotingError {
    RemotingError::new(
        response::TOPIC_NOT_EXIST,
        format!("topic[{topic}] not exist"),
    )
}

pub(super) async fn create_topic(r: &Arc<Remoting>, req: &Command) -> Handled {
    let h: CreateTopicRequestHeader = req.header()?;
    record(Some(&h.topic), None);
    let name = validate::topic(&h.topic)?.to_string();
    if topics::is_system_topic(&name) {
        return Err(RemotingError::new(
            response::NO_PERMISSION,
            format!("topic {name} uses a reserved system prefix"),
        ));
    }
    let queues = h.read_queue_nums.max(h.write_queue_nums);
    if queues <= 0 || queues as u32 > ferromq_store::metadata::MAX_QUEUES {
        return Err(RemotingError::invalid(format!(
            "queue count {queues} is not within 1..={}",
            ferromq_store::metadata::MAX_QUEUES
        )));
    }
    let message_type = type_from_attributes(h.attributes.as_deref())?;
    let permission = permission_of(h.perm);
    let created = r
        .blocking(move |r| {
            let topics = r.node.engine.store.topics();
            let fresh = TopicConfig {
                name: name.clone(),
                queues: queues as u32,
                message_type: message_type.unwrap_or(MessageType::Normal),
                permission,
                retention_ms: None,
            };
            match r.node.engine.create_topic(fresh) {
                Ok(t) => Ok(t),
                Err(EngineError::Store(e)) if matches!(*e, StoreError::TopicExists(_)) => {
                    let mut cur = topics.get(&name).ok_or_else(|| no_topic(&name))?;
                    if (queues as u32) < cur.queues {
                        return Err(RemotingError::invalid(format!(
                            "topic {name} has {} queues; queues can only grow (messages in removed queues would be stranded)",
                            cur.queues
                        )));
                    }
                    cur.queues = queues as u32;
                    cur.permission = permission;
                    if let Some(t) = message_type {
                        cur.message_type = t;
                    }
                    Ok(r.node.engine.update_topic(cur)?)
                }
                Err(e) => Err(e.into()),
            }
        })
        .await?;
    tracing::info!(topic = %created.name, queues = created.queues, r#type = %created.message_type, "topic created or updated through remoting");
    Ok(req.response_to(response::SUCCESS, None))
}

pub(super) async fn delete_topic(r: &Arc<Remoting>, req: &Command) -> Handled {
    let h: TopicRequestHeader = req.header()?;
    record(Some(&h.topic), None);
    if topics::is_system_topic(&h.topic) && topics::retry_group(&h.topic).is_none() {
        return Err(RemotingError::new(
            response::NO_PERMISSION,
            format!("topic {} is a system topic", h.topic),
        ));
    }
    r.blocking(move |r| {
        match r.node.engine.delete_topic(&h.topic) {
            Ok(_) => {}
            Err(EngineError::Store(e)) if matches!(*e, StoreError::UnknownTopic(_)) => {}
            Err(e) => return Err(e.into()),
        }
        tracing::info!(topic = %h.topic, "topic deleted through remoting");
        Ok(())
    })
    .await?;
    Ok(req.response_to(response::SUCCESS, None))
}

pub(super) async fn topic_stats(r: &Arc<Remoting>, req: &Command) -> Handled {
    let h: TopicRequestHeader = req.header()?;
    record(Some(&h.topic), None);
    let broker = r.broker_name();
    let table = r
        .blocking(move |r| {
            let store = &r.node.engine.store;
            let t = store
                .topics()
                .get(&h.topic)
                .ok_or_else(|| no_topic(&h.topic))?;
            let mut table = TopicStatsTable::default();
            for q in 0..t.queues {
                let (min, max) = store.queue_range(&h.topic, q);
                let last = if max > min {
                    store
                        .read(&h.topic, q, max - 1, 1, None)?
                        .messages
                        .first()
                        .map_or(0, |m| m.store_timestamp_ms)
                } else {
                    0
                };
                table.offset_table.0.insert(
                    MessageQueue {
                        topic: h.topic.clone(),
                        broker_name: broker.clone(),
                        queue_id: q as i32,
                    },
                    TopicOffset {
                        min_offset: min as i64,
                        max_offset: max as i64,
                        last_update_timestamp: last,
                    },
                );
            }
            Ok(table)
        })
        .await?;
    Ok(ok_body(req, body::encode(&table)))
}

pub(super) async fn topic_config(r: &Arc<Remoting>, req: &Command) -> Handled {
    let h: TopicRequestHeader = req.header()?;
    record(Some(&h.topic), None);
    let t = r
        .node
        .engine
        .store
        .topics()
        .get(&h.topic)
        .filter(|t| is_visible(&t.name))
        .ok_or_else(|| no_topic(&h.topic))?;
    Ok(ok_body(req, body::encode(&wire_topic(&t))))
}

pub(super) async fn all_topic_config(r: &Arc<Remoting>, req: &Command) -> Handled {
    let mut w = TopicConfigSerializeWrapper {
        data_version: data_version(r),
        ..Default::default()
    };
    for t in r.node.engine.store.topics().list() {
        if is_visible(&t.name) {
            w.topic_config_table.insert(t.name.clone(), wire_topic(&t));
        }
    }
    Ok(ok_body(req, body::encode(&w)))
}

fn data_version(r: &Remoting) -> DataVersion {
    DataVersion {
        state_version: 0,
        timestamp: r.started_ms,
        counter: 0,
    }
}

pub(super) async fn consume_stats(r: &Arc<Remoting>, req: &Command) -> Handled {
    let h: GetConsumeStatsRequestHeader = req.header()?;
    record(h.topic.as_deref(), Some(&h.consumer_group));
    let only: Option<BTreeSet<String>> = match (&h.topic, &h.topic_list) {
        (Some(t), _) if !t.is_empty() => Some([t.clone()].into()),
        (_, Some(list)) if !list.is_empty() => {
            Some(list.split(';').map(|s| s.trim().to_string()).collect())
        }
        _ => None,
    };
    let broker = r.broker_name();
    let stats = r
        .blocking(move |r| {
            let mut subs = r.node.clients.subscriptions();
            for (g, ts) in r.clients.subscriptions() {
                subs.entry(g).or_default().extend(ts);
            }
            let store = &r.node.engine.store;
            let mut stats = ConsumeStats::default();
            for l in r.node.engine.lag(&subs) {
                if l.group != h.consumer_group
                    || only.as_ref().is_some_and(|o| !o.contains(&l.topic))
                {
                    continue;
                }
                let last = if l.committed > 0 {
                    store
                        .read(&l.topic, l.queue_id, l.committed - 1, 1, None)?
                        .messages
                        .first()
                        .map_or(0, |m| m.store_timestamp_ms)
                } else {
                    0
                };
                stats.offset_table.0.insert(
                    MessageQueue {
                        topic: l.topic.clone(),
                        broker_name: broker.clone(),
                        queue_id: l.queue_id as i32,
                    },
                    OffsetWrapper {
                        broker_offset: l.max_offset as i64,
                        consumer_offset: l.committed as i64,
                        pull_offset: l.committed as i64,
                        last_timestamp: last,
                    },
                );
            }
            Ok(stats)
        })
        .await?;
    Ok(ok_body(req, body::encode(&stats)))
}

pub(super) fn consumer_connections(r: &Remoting, req: &Command) -> Handled {
    let h: ConsumerGroupRequestHeader = req.header()?;
    record(None, Some(&h.consumer_group));
    let c = r
        .clients
        .consumer_connection(&h.consumer_group)
        .ok_or_else(|| {
            RemotingError::new(
                response::CONSUMER_NOT_ONLINE,
                format!("the consumer group[{}] not online", h.consumer_group),
            )
        })?;
    Ok(ok_body(req, body::encode(&c)))
}

pub(super) fn producer_connections(r: &Remoting, req: &Command) -> Handled {
    let h: GetProducerConnectionListRequestHeader = req.header()?;
    record(None, Some(&h.producer_group));
    let connection_set = r.clients.producer_connections(&h.producer_group);
    if connection_set.is_empty() {
        return Err(RemotingError::system(format!(
            "the producer group[{}] not exist",
            h.producer_group
        )));
    }
    Ok(ok_body(
        req,
        body::encode(&ProducerConnection { connection_set }),
    ))
}

/// A group as the tools see it: the engine's settings in RocketMQ's terms, defaults otherwise.
fn effective_group(r: &Remoting, group: &str) -> SubscriptionGroupConfig {
    let cfg = r.node.engine.groups.get(group);
    SubscriptionGroupConfig {
        group_name: group.to_string(),
        retry_max_times: r.node.engine.groups.max_attempts(group).saturating_sub(1) as i32,
        consume_message_orderly: cfg.fifo.unwrap_or(false),
        ..SubscriptionGroupConfig::default()
    }
}

/// Groups the broker knows: configured, consuming now, or with offsets.
fn known_groups(r: &Remoting) -> BTreeSet<String> {
    let mut groups: BTreeSet<String> = r.node.engine.groups.list().into_keys().collect();
    groups.extend(r.clients.consumer_groups());
    groups.extend(
        r.node
            .engine
            .store
            .offsets()
            .all()
            .into_iter()
            .map(|(k, _)| k.group),
    );
    groups.extend(
        r.node
            .engine
            .deliveries
            .progress()
            .into_iter()
            .map(|p| p.group),
    );
    groups
}

pub(super) async fn update_group(r: &Arc<Remoting>, req: &Command) -> Handled {
    let g: SubscriptionGroupConfig = body::decode(&req.body)?;
    record(None, Some(&g.group_name));
    let name = validate::group(&g.group_name)?.to_string();
    let attempts = (g.retry_max_times.max(0) as u32 + 1).min(1000);
    r.blocking(move |r| {
        let mut cfg: GroupConfig = r.node.engine.groups.get(&name);
        cfg.max_delivery_attempts = Some(attempts);
        cfg.fifo = g.consume_message_orderly.then_some(true);
        r.node.engine.set_group(&name, cfg)?;
        topics::ensure_dlq_topic(
            &r.node.engine.store,
            r.node.engine.journal.as_ref(),
            &topics::dlq_topic(&name),
        )?;
        tracing::info!(group = %name, max_delivery_attempts = attempts, "group updated through remoting");
        Ok(())
    })
    .await?;
    Ok(req.response_to(response::SUCCESS, None))
}

pub(super) async fn group_config(r: &Arc<Remoting>, req: &Command) -> Handled {
    let h: GetSubscriptionGroupConfigRequestHeader = req.header()?;
    record(None, Some(&h.group));
    let cfg = r
        .blocking(move |r| {
            if !known_groups(r).contains(&h.group) {
                return Err(RemotingError::new(
                    response::SUBSCRIPTION_GROUP_NOT_EXIST,
                    format!("No group {} in this broker", h.group),
                ));
            }
            Ok(effective_group(r, &h.group))
        })
        .await?;
    Ok(ok_body(req, body::encode(&cfg)))
}

pub(super) async fn all_group_config(r: &Arc<Remoting>, req: &Command) -> Handled {
    let w = r
        .blocking(|r| {
            let mut w = SubscriptionGroupWrapper {
                data_version: data_version(r),
                ..Default::default()
            };
            for g in known_groups(r) {
                let cfg = effective_group(r, &g);
                w.subscription_group_table.insert(g, cfg);
            }
            Ok(w)
        })
        .await?;
    Ok(ok_body(req, body::encode(&w)))
}

pub(super) async fn delete_group(r: &Arc<Remoting>, req: &Command) -> Handled {
    let h: DeleteSubscriptionGroupRequestHeader = req.header()?;
    record(None, Some(&h.group_name));
    // Both paths go through the engine's journaled calls, so the members of a replicated group
    // forget the group too. mqadmin deletes without checking for online consumers, and so do we.
    r.blocking(move |r| {
        let engine = &r.node.engine;
        if h.clean_offset == Some(true) {
            match engine.delete_group(&h.group_name) {
                Ok(()) | Err(EngineError::GroupNotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        } else {
            engine.set_group(&h.group_name, GroupConfig::default())?;
        }
        Ok(())
    })
    .await?;
    Ok(req.response_to(response::SUCCESS, None))
}

pub(super) async fn query_message(r: &Arc<Remoting>, peer: &Arc<Peer>, req: &Command) -> Handled {
    let h: QueryMessageRequestHeader = req.header()?;
    record(Some(&h.topic), None);
    let store_host = peer.front.store_host;
    let (found, index_offset) = r
        .blocking(move |r| {
            let store = &r.node.engine.store;
            let found: Vec<_> = if h.unique_key_query == Some(true) {
                store.lookup_id(&h.topic, &h.key).into_iter().collect()
            } else {
                let end = if h.end_timestamp <= 0 {
                    i64::MAX
                } else {
                    h.end_timestamp
                };
                store.lookup_key(
                    &h.topic,
                    &h.key,
                    h.begin_timestamp,
                    end,
                    (h.max_num.max(1) as usize).min(MAX_QUERY),
                )
            };
            Ok((found, store.stats().dispatched_offset))
        })
        .await?;
    if found.is_empty() {
        return Err(RemotingError::new(
            response::QUERY_NOT_FOUND,
            "can not find message, maybe time range not correct",
        ));
    }
    Ok(req
        .response_to(response::SUCCESS, None)
        .with_header(&QueryMessageResponseHeader {
            index_last_update_timestamp: ferromq_engine::time::now_ms(),
            index_last_update_phyoffset: index_offset as i64,
        })
        .with_body(encode_all(&found, store_host, r.offsets)))
}

pub(super) async fn view_message(r: &Arc<Remoting>, peer: &Arc<Peer>, req: &Command) -> Handled {
    let h: ViewMessageRequestHeader = req.header()?;
    record(h.topic.as_deref(), None);
    let phys = r.offsets.read(h.offset).ok_or_else(|| {
        RemotingError::system(format!(
            "offset {} is not a commit log offset of this broker",
            h.offset
        ))
    })?;
    let m = r
        .blocking(move |r| {
            let m = r.node.engine.store.message_at(phys).map_err(|e| {
                RemotingError::system(format!("can not find message by the offset {phys}: {e}"))
            })?;
            // A parked message (delay or half) shows as what its producer sent.
            Ok(if is_visible(&m.topic) {
                m
            } else {
                ferromq_engine::parked::transaction::as_sent(&m)
            })
        })
        .await?;
    Ok(ok_body(
        req,
        encode_all([&m], peer.front.store_host, r.offsets),
    ))
}

pub(super) async fn runtime_info(r: &Arc<Remoting>, req: &Command) -> Handled {
    let table = r
        .blocking(|r| {
            let e = &r.node.engine;
            let s = e.store.stats();
            let earliest = e
                .store
                .message_at(s.log_min_offset)
                .map_or(0, |m| m.store_timestamp_ms);
            let up = r.started.elapsed().as_secs();
            let put = r.put_tps.load(Ordering::Relaxed) as f64;
            let get = r.get_tps.load(Ordering::Relaxed) as f64;
            let pending: u64 = e.timers.pending_by_topic().values().sum();
            let mut t = BTreeMap::new();
            let mut put_kv = |k: &str, v: String| {
                t.insert(k.to_string(), v);
            };
            put_kv(
                "brokerVersionDesc",
                format!("FerroMQ {}", env!("CARGO_PKG_VERSION")),
            );
            put_kv("brokerVersion", super::VERSION.to_string());
            put_kv("brokerActive", "true".into());
            put_kv("bootTimestamp", r.started_ms.to_string());
            put_kv(
                "runtime",
                format!(
                    "[ {} days, {} hours, {} minutes, {} seconds ]",
                    up / 86_400,
                    up / 3600 % 24,
                    up / 60 % 60,
                    up % 60
                ),
            );
            put_kv("msgPutTotalTodayNow", s.appends_total.to_string());
            put_kv("msgPutTotalTodayMorning", "0".into());
            put_kv("msgPutTotalYesterdayMorning", "0".into());
            put_kv(
                "msgGetTotalTodayNow",
                r.pulled.load(Ordering::Relaxed).to_string(),
            );
            put_kv("msgGetTotalTodayMorning", "0".into());
            put_kv("msgGetTotalYesterdayMorning", "0".into());
            put_kv("putTps", format!("{put:.1} {put:.1} {put:.1}"));
            put_kv("getTransferredTps", format!("{get:.1} {get:.1} {get:.1}"));
            put_kv("getTransferedTps", format!("{get:.1} {get:.1} {get:.1}"));
            for k in [
                "sendThreadPoolQueueSize",
                "pullThreadPoolQueueSize",
                "sendThreadPoolQueueHeadWaitTimeMills",
                "pullThreadPoolQueueHeadWaitTimeMills",
                "pageCacheLockTimeMills",
                "timerReadBehind",
                "timerOffsetBehind",
            ] {
                put_kv(k, "0".into());
            }
            put_kv("timerCongestNum", pending.to_string());
            put_kv("timerEnqueueTps", "0.0".into());
            put_kv("timerDequeueTps", "0.0".into());
            put_kv("earliestMessageTimeStamp", earliest.to_string());
            put_kv("commitLogMinOffset", s.log_min_offset.to_string());
            put_kv("commitLogMaxOffset", s.log_write_offset.to_string());
            put_kv(
                "dispatchBehindBytes",
                s.log_write_offset
                    .saturating_sub(s.dispatched_offset)
                    .to_string(),
            );
            put_kv(
                "commitLogDiskRatio",
                if s.disk_full { "1.0" } else { "0.0" }.into(),
            );
            Ok(t)
        })
        .await?;
    Ok(ok_body(req, body::encode(&KvTable { table })))
}

/// GET_BROKER_CONFIG: the settings a RocketMQ broker would show, in FerroMQ's values.
pub(super) fn broker_config(r: &Remoting, peer: &Peer, req: &Command) -> Command {
    let e = &r.node.engine;
    let levels: Vec<String> = DELAY_LEVELS
        .iter()
        .map(|d| match d.as_secs() {
            s if s % 3600 == 0 => format!("{}h", s / 3600),
            s if s % 60 == 0 => format!("{}m", s / 60),
            s => format!("{s}s"),
        })
        .collect();
    debug_assert_eq!(delay_of_level(1), DELAY_LEVELS.first().copied());
    let store = e.store.config();
    let mut p = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        p.insert(k.to_string(), v);
    };
    set("brokerName", r.broker_name());
    set("brokerClusterName", super::CLUSTER.into());
    set("brokerId", "0".into());
    set("brokerRole", "ASYNC_MASTER".into());
    set("listenPort", peer.front.store_host.port().to_string());
    set("namesrvAddr", peer.front.addr.clone());
    set("storePathRootDir", e.config.data_dir.display().to_string());
    set(
        "flushDiskType",
        match store.flush {
            ferromq_store::FlushMode::Sync => "SYNC_FLUSH",
            ferromq_store::FlushMode::Async => "ASYNC_FLUSH",
        }
        .into(),
    );
    set("maxMessageSize", r.node.settings.max_body_size.to_string());
    set(
        "autoCreateTopicEnable",
        e.config.auto_create_topics.to_string(),
    );
    set("defaultTopicQueueNums", e.config.default_queues.to_string());
    set("enablePropertyFilter", "true".into());
    set(
        "transactionCheckInterval",
        e.config.transaction_check_interval.as_millis().to_string(),
    );
    set(
        "transactionCheckMax",
        e.config.transaction_check_max.to_string(),
    );
    set("messageDelayLevel", levels.join(" "));
    set("mappedFileSizeCommitLog", store.segment_size.to_string());
    let text = body::encode_properties_text(&p);
    req.response_to(response::SUCCESS, None)
        .with_header(&GetBrokerConfigResponseHeader {
            version: serde_json::to_string(&serde_json::json!({
                "stateVersion": 0, "timestamp": r.started_ms, "counter": 0
            }))
            .unwrap_or_default(),
        })
        .with_body(text.into_bytes())
}

pub(super) async fn reset_offset(r: &Arc<Remoting>, peer: &Arc<Peer>, req: &Command) -> Handled {
    let h: ResetOffsetRequestHeader = req.header()?;
    record(Some(&h.topic), Some(&h.group));
    validate::group(&h.group)?;
    let broker = r.broker_name();
    let hh = h.clone();
    let table = r
        .blocking(move |r| {
            let h = hh;
            let store = &r.node.engine.store;
            let t = store
                .topics()
                .get(&h.topic)
                .ok_or_else(|| no_topic(&h.topic))?;
            let queues: Vec<u32> = match h.queue_id {
                Some(q) if q >= 0 => vec![q as u32],
                _ => (0..t.queues).collect(),
            };
            let mut table = ResetOffsetBody::default();
            for q in queues.into_iter().filter(|q| *q < t.queues) {
                let (min, max) = store.queue_range(&h.topic, q);
                let target = match h.offset {
                    Some(o) if o >= 0 => (o as u64).clamp(min, max),
                    _ => search_offset(r, &h.topic, q, h.timestamp, false)?,
                };
                let current = store.offsets().get(&h.group, &h.topic, q);
                let offset = match current {
                    Some(c) if !h.is_force && c < target => c,
                    _ => target,
                };
                r.node
                    .engine
                    .deliveries
                    .reset_offset(&h.group, &h.topic, q, offset)?;
                table.offset_table.0.insert(
                    MessageQueue {
                        topic: h.topic.clone(),
                        broker_name: broker.clone(),
                        queue_id: q as i32,
                    },
                    offset as i64,
                );
            }
            Ok(table)
        })
        .await?;
    let encoded = body::encode(&table);
    let notice = server_request(
        request::RESET_CONSUMER_CLIENT_OFFSET,
        &ResetOffsetRequestHeader {
            queue_id: None,
            offset: None,
            ..h.clone()
        },
    )
    .with_body(encoded.clone());
    for p in r.clients.consumer_peers(&h.group) {
        p.oneway(notice.clone());
    }
    tracing::info!(group = %h.group, topic = %h.topic, queues = table.offset_table.0.len(), by = %peer.addr, "offsets reset through remoting");
    Ok(ok_body(req, encoded))
}

/// QUERY_TOPIC_CONSUME_BY_WHO's answer.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct GroupList {
    group_list: Vec<String>,
}

pub(super) async fn consumed_by(r: &Arc<Remoting>, req: &Command) -> Handled {
    let h: TopicRequestHeader = req.header()?;
    record(Some(&h.topic), None);
    let list = r
        .blocking(move |r| {
            let mut groups: BTreeSet<String> = r
                .node
                .engine
                .store
                .offsets()
                .all()
                .into_iter()
                .filter(|(k, _)| k.topic == h.topic)
                .map(|(k, _)| k.group)
                .collect();
            for (g, ts) in r.clients.subscriptions() {
                if ts.contains(&h.topic) {
                    groups.insert(g);
                }
            }
            Ok(GroupList {
                group_list: groups.into_iter().collect(),
            })
        })
        .await?;
    Ok(ok_body(req, body::encode(&list)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_types_come_from_the_message_type_attribute() {
        assert_eq!(
            type_from_attributes(Some("+message.type=DELAY")).unwrap(),
            Some(MessageType::Delay)
        );
        assert_eq!(
            type_from_attributes(Some("+x=1,+message.type=fifo")).unwrap(),
            Some(MessageType::Fifo)
        );
        assert_eq!(type_from_attributes(None).unwrap(), None);
        assert_eq!(type_from_attributes(Some("")).unwrap(), None);
        assert_eq!(
            type_from_attributes(Some("+message.type=MIXED"))
                .unwrap_err()
                .code,
            response::INVALID_PARAMETER
        );
        assert_eq!(permission_of(6), Permission::ReadWrite);
        assert_eq!(permission_of(4), Permission::Read);
    }
}
