//! Name-server requests: topic routes, the cluster, topic lists and key/value settings.
//!
//! A storage node is its own name server: its routes name one broker (the node's broker group,
//! `standalone` alone) at the remoting address the client reached, so every later request
//! comes back to this port. The route's JSON depends on the caller's version: clients of 4.9.4
//! (ordinal 401) and later, and those that ask `acceptStandardJsonOnly`, get standard JSON;
//! older ones (the Go client announces 317) get fastjson's bare numeric keys, which is all they
//! parse. The proxy builds the same answers from its picture of the cluster ([`route_data`],
//! [`cluster_body`]).

use std::sync::Arc;

use ferromq_engine::topics;
use ferromq_remoting::body::{
    perm, BrokerData, ClusterInfo, LongKeyMap, QueueData, TopicList, TopicRouteData,
};
use ferromq_remoting::code::{request, response};
use ferromq_remoting::custom::{
    GetKvConfigResponseHeader, GetRouteInfoRequestHeader, KvConfigRequestHeader,
    PutKvConfigRequestHeader,
};
use ferromq_remoting::fastjson::{self, Style};
use ferromq_remoting::Command;
use ferromq_store::{Permission, TopicConfig};

use super::connection::Peer;
use super::status::RemotingError;
use super::{record, Handled, Remoting, CLUSTER};
use crate::validate;

/// The auto-creation template topic 4.x producers ask for when their topic has no route; it
/// never exists in FerroMQ (auto-creation, when on, creates the topic itself).
pub const TEMPLATE_TOPIC: &str = "TBW102";

/// One broker's share of a topic, as a route shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerQueues {
    pub broker_name: String,
    pub addr: String,
    pub queues: u32,
    /// [`perm`] bits.
    pub perm: i32,
}

/// The remoting permission bits of a topic on a broker group that takes new messages or not.
pub fn perm_bits(p: Permission, group_writable: bool) -> i32 {
    let bits = match p {
        Permission::ReadWrite => perm::READ | perm::WRITE,
        Permission::Read => perm::READ,
        Permission::Write => perm::WRITE,
        Permission::None => 0,
    };
    if group_writable {
        bits
    } else {
        bits & !perm::WRITE
    }
}

/// A topic's route over the brokers holding it.
pub fn route_data(brokers: &[BrokerQueues]) -> TopicRouteData {
    let mut data = TopicRouteData::default();
    for b in brokers {
        data.queue_datas.push(QueueData {
            broker_name: b.broker_name.clone(),
            read_queue_nums: b.queues as i32,
            write_queue_nums: if b.perm & perm::WRITE != 0 {
                b.queues as i32
            } else {
                0
            },
            perm: b.perm,
            topic_sys_flag: 0,
        });
        let mut addrs = LongKeyMap::default();
        addrs.0.insert(0, b.addr.clone());
        data.broker_datas.push(BrokerData {
            cluster: CLUSTER.to_string(),
            broker_name: b.broker_name.clone(),
            broker_addrs: addrs,
            ..BrokerData::default()
        });
    }
    data
}

/// A route answer in the JSON style the caller parses (see the module docs).
pub fn route_answer(req: &Command, standard_only: Option<bool>, data: &TopicRouteData) -> Command {
    let style = if req.version >= 401 || standard_only == Some(true) {
        Style::Standard
    } else {
        Style::Fastjson
    };
    req.response_to(response::SUCCESS, None)
        .with_body(fastjson::to_vec(data, style))
}

/// The answer for a topic without a route.
pub fn no_route(topic: &str) -> RemotingError {
    RemotingError::new(
        response::TOPIC_NOT_EXIST,
        format!("No topic route info in name server for the topic: {topic}"),
    )
}

/// The cluster as GET_BROKER_CLUSTER_INFO shows it: brokers by name with their addresses.
pub fn cluster_body(brokers: &[(String, String)]) -> ClusterInfo {
    let mut info = ClusterInfo::default();
    for (name, addr) in brokers {
        let mut addrs = LongKeyMap::default();
        addrs.0.insert(0, addr.clone());
        info.broker_addr_table.insert(
            name.clone(),
            BrokerData {
                cluster: CLUSTER.to_string(),
                broker_name: name.clone(),
                broker_addrs: addrs,
                ..BrokerData::default()
            },
        );
    }
    info.cluster_addr_table.insert(
        CLUSTER.to_string(),
        brokers.iter().map(|(n, _)| n.clone()).collect(),
    );
    info
}

/// Topics a route or topic list shows: FerroMQ's own parked-message topics stay hidden.
pub fn is_visible(topic: &str) -> bool {
    !topic.starts_with("%SYS%")
}

/// The topic a route asks for: stored, or auto-created when that is on (never the template).
fn routed_topic(r: &Remoting, name: &str) -> Result<Option<TopicConfig>, RemotingError> {
    if name == TEMPLATE_TOPIC || !is_visible(name) {
        return Ok(None);
    }
    match r.node.engine.topic(name) {
        Ok(t) => Ok(Some(t)),
        Err(ferromq_engine::EngineError::TopicNotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub(super) async fn route(r: &Arc<Remoting>, peer: &Arc<Peer>, req: &Command) -> Handled {
    let h: GetRouteInfoRequestHeader = req.header()?;
    record(Some(&h.topic), None);
    let name = validate::topic(&h.topic)?.to_string();
    let n = name.clone();
    let Some(t) = r.blocking(move |r| routed_topic(r, &n)).await? else {
        return Err(no_route(&name));
    };
    let writable = !r.node.engine.membership.is_read_only();
    let data = route_data(&[BrokerQueues {
        broker_name: r.broker_name(),
        addr: peer.front.addr.clone(),
        queues: t.queues,
        perm: perm_bits(t.permission, writable),
    }]);
    Ok(route_answer(req, h.accept_standard_json_only, &data))
}

pub(super) fn cluster_info(r: &Remoting, peer: &Peer, req: &Command) -> Command {
    let info = cluster_body(&[(r.broker_name(), peer.front.addr.clone())]);
    req.response_to(response::SUCCESS, None)
        .with_body(ferromq_remoting::body::encode(&info))
}

/// Every visible topic (system topic lists: the retry and dead-letter topics).
pub(super) async fn topic_list(r: &Arc<Remoting>, peer: &Arc<Peer>, req: &Command) -> Handled {
    let system_only = matches!(
        req.code,
        request::GET_SYSTEM_TOPIC_LIST_FROM_NS | request::GET_SYSTEM_TOPIC_LIST_FROM_BROKER
    );
    let names = r
        .blocking(move |r| {
            Ok(r.node
                .engine
                .store
                .topics()
                .list()
                .into_iter()
                .map(|t| t.name)
                .filter(|n| is_visible(n))
                .filter(|n| !system_only || topics::is_system_topic(n))
                .collect::<Vec<_>>())
        })
        .await?;
    let list = TopicList {
        topic_list: names,
        broker_addr: (req.code == request::GET_SYSTEM_TOPIC_LIST_FROM_NS)
            .then(|| peer.front.addr.clone()),
    };
    Ok(req
        .response_to(response::SUCCESS, None)
        .with_body(ferromq_remoting::body::encode(&list)))
}

/// PUT_KV_CONFIG, GET_KV_CONFIG, DELETE_KV_CONFIG: kept in memory (what tools store here, the
/// order-topic config of `updateTopic -o`, is informational in FerroMQ).
pub(super) fn kv(r: &Remoting, req: &Command) -> Handled {
    match req.code {
        request::PUT_KV_CONFIG => {
            let h: PutKvConfigRequestHeader = req.header()?;
            r.kv_put(&h.namespace, &h.key, Some(h.value));
            Ok(req.response_to(response::SUCCESS, None))
        }
        request::GET_KV_CONFIG => {
            let h: KvConfigRequestHeader = req.header()?;
            match r.kv_get(&h.namespace, &h.key) {
                Some(value) => Ok(req
                    .response_to(response::SUCCESS, None)
                    .with_header(&GetKvConfigResponseHeader { value: Some(value) })),
                None => Err(RemotingError::new(
                    response::QUERY_NOT_FOUND,
                    format!("No config item, Namespace: {} Key: {}", h.namespace, h.key),
                )),
            }
        }
        _ => {
            let h: KvConfigRequestHeader = req.header()?;
            r.kv_put(&h.namespace, &h.key, None);
            Ok(req.response_to(response::SUCCESS, None))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_name_one_broker_per_group_and_hide_write_queues_of_read_only_groups() {
        let data = route_data(&[
            BrokerQueues {
                broker_name: "g1".into(),
                addr: "127.0.0.1:8080".into(),
                queues: 4,
                perm: perm_bits(Permission::ReadWrite, true),
            },
            BrokerQueues {
                broker_name: "g2".into(),
                addr: "127.0.0.1:8080".into(),
                queues: 4,
                perm: perm_bits(Permission::ReadWrite, false),
            },
        ]);
        assert_eq!(data.queue_datas[0].perm, 6);
        assert_eq!(data.queue_datas[0].write_queue_nums, 4);
        assert_eq!(data.queue_datas[1].perm, 4);
        assert_eq!(data.queue_datas[1].write_queue_nums, 0);
        assert_eq!(data.broker_datas[1].broker_addrs.0[&0], "127.0.0.1:8080");
        let old = Command {
            version: 317,
            ..Command::default()
        };
        let body = route_answer(&old, None, &data).body;
        assert!(String::from_utf8_lossy(&body).contains("{0:\"127.0.0.1:8080\"}"));
        let new = Command {
            version: 409,
            ..Command::default()
        };
        let body = route_answer(&new, None, &data).body;
        assert!(String::from_utf8_lossy(&body).contains("{\"0\":\"127.0.0.1:8080\"}"));
    }

    #[test]
    fn the_cluster_lists_every_broker_under_the_default_cluster() {
        let info = cluster_body(&[("g1".into(), "a:1".into()), ("g2".into(), "a:1".into())]);
        assert_eq!(info.cluster_addr_table[CLUSTER], vec!["g1", "g2"]);
        assert_eq!(info.broker_addr_table["g2"].broker_addrs.0[&0], "a:1");
    }
}
