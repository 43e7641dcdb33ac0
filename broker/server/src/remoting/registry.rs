//! The remoting clients a node knows, learnt from their heartbeats: which connection each
//! client id uses, the producer and consumer groups it serves, what its consumers subscribe to.
//!
//! A consumer group's members are the clients whose live connection heartbeated for it within
//! [`EXPIRY`]; every member must see the same list (`GET_CONSUMER_LIST_BY_GROUP`), or two of
//! them take the same queue. When membership or a subscription changes, the members are told
//! (`NOTIFY_CONSUMER_IDS_CHANGED`) and rebalance at once. Nothing here is durable: clients
//! heartbeat every 30 s, so a restarted broker knows them again within one interval.
//!
//! Orderly consumers' queue locks ([`Locks`]) live here too: they are per broker, in memory,
//! and expire when not renewed, as RocketMQ's.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferromq_remoting::body::{
    Connection, ConsumerConnection, ConsumerData, HeartbeatData, MessageQueue, SubscriptionData,
};
use parking_lot::Mutex;

use super::connection::Peer;

/// A client not heard from for this long is no longer a member of its groups (RocketMQ's
/// channel expiry).
pub const EXPIRY: Duration = Duration::from_secs(120);

/// Heartbeats name this producer group for the client's internal producer (send-back); it is
/// not a user's group.
const INNER_PRODUCER: &str = "CLIENT_INNER_PRODUCER";

#[derive(Debug, Clone)]
struct Entry {
    peer: Arc<Peer>,
    client_id: String,
    language: String,
    version: i32,
    producers: BTreeSet<String>,
    consumers: BTreeMap<String, ConsumerData>,
    last_seen: Instant,
}

impl Entry {
    fn live(&self) -> bool {
        !self.peer.is_closed() && self.last_seen.elapsed() < EXPIRY
    }

    fn connection(&self) -> Connection {
        Connection {
            client_id: self.client_id.clone(),
            client_addr: self.peer.addr.clone(),
            language: self.language.clone(),
            version: self.version,
        }
    }
}

/// The clients of one node, by connection.
#[derive(Debug, Default)]
pub struct Registry {
    entries: Mutex<HashMap<u64, Entry>>,
}

/// Members (client ids) and subscriptions of a group: what a change is measured against.
type GroupState = (BTreeSet<String>, Vec<(String, String, String)>);

/// Registered entries count whether live or not: a connection that just closed is still in
/// the state before its removal, so the removal reads as a change.
fn group_state(entries: &HashMap<u64, Entry>, group: &str) -> GroupState {
    let mut ids = BTreeSet::new();
    let mut subs = Vec::new();
    for e in entries.values() {
        if let Some(c) = e.consumers.get(group) {
            ids.insert(e.client_id.clone());
            for s in &c.subscription_data_set {
                subs.push((
                    s.topic.clone(),
                    s.sub_string.clone(),
                    s.expression_type.clone(),
                ));
            }
        }
    }
    subs.sort();
    subs.dedup();
    (ids, subs)
}

impl Registry {
    /// Runs `mutate` and answers which of the groups `affected` names (looked at before the
    /// change) changed members or subscriptions.
    fn changing(
        &self,
        affected: impl FnOnce(&HashMap<u64, Entry>) -> BTreeSet<String>,
        mutate: impl FnOnce(&mut HashMap<u64, Entry>),
    ) -> Vec<String> {
        let mut entries = self.entries.lock();
        let groups = affected(&entries);
        let before: Vec<GroupState> = groups.iter().map(|g| group_state(&entries, g)).collect();
        mutate(&mut entries);
        groups
            .into_iter()
            .zip(before)
            .filter(|(g, b)| group_state(&entries, g) != *b)
            .map(|(g, _)| g)
            .collect()
    }

    /// Records a heartbeat on `peer`; answers the consumer groups whose members or
    /// subscriptions changed.
    pub fn heartbeat(
        &self,
        peer: &Arc<Peer>,
        hb: &HeartbeatData,
        language: &str,
        version: i32,
    ) -> Vec<String> {
        let id = peer.id();
        self.changing(
            |entries| {
                let mut groups: BTreeSet<String> = hb
                    .consumer_data_set
                    .iter()
                    .map(|c| c.group_name.clone())
                    .collect();
                if let Some(old) = entries.get(&id) {
                    groups.extend(old.consumers.keys().cloned());
                }
                groups
            },
            |entries| {
                let e = entries.entry(id).or_insert_with(|| Entry {
                    peer: peer.clone(),
                    client_id: hb.client_id.clone(),
                    language: language.to_string(),
                    version,
                    producers: BTreeSet::new(),
                    consumers: BTreeMap::new(),
                    last_seen: Instant::now(),
                });
                e.client_id = hb.client_id.clone();
                e.language = language.to_string();
                e.version = version;
                e.last_seen = Instant::now();
                e.producers = hb
                    .producer_data_set
                    .iter()
                    .map(|p| p.group_name.clone())
                    .filter(|g| g != INNER_PRODUCER)
                    .collect();
                // 5.x clients send a heartbeat without subscriptions when they did not change.
                let keep_subs = hb.without_sub;
                let old = std::mem::take(&mut e.consumers);
                for c in &hb.consumer_data_set {
                    let mut c = c.clone();
                    if keep_subs {
                        if let Some(o) = old.get(&c.group_name) {
                            c.subscription_data_set = o.subscription_data_set.clone();
                        }
                    }
                    e.consumers.insert(c.group_name.clone(), c);
                }
            },
        )
    }

    /// A client leaves a producer and/or consumer group (UNREGISTER_CLIENT); answers the
    /// consumer groups that changed.
    pub fn unregister(
        &self,
        peer: &Arc<Peer>,
        producer_group: Option<&str>,
        consumer_group: Option<&str>,
    ) -> Vec<String> {
        let id = peer.id();
        self.changing(
            |_| consumer_group.map(str::to_string).into_iter().collect(),
            |entries| {
                let mut empty = false;
                if let Some(e) = entries.get_mut(&id) {
                    if let Some(p) = producer_group {
                        e.producers.remove(p);
                    }
                    if let Some(c) = consumer_group {
                        e.consumers.remove(c);
                    }
                    empty = e.producers.is_empty() && e.consumers.is_empty();
                }
                if empty {
                    entries.remove(&id);
                }
            },
        )
    }

    /// Forgets a closed connection; answers the consumer groups that changed.
    pub fn remove(&self, peer_id: u64) -> Vec<String> {
        self.changing(
            |entries| {
                entries
                    .get(&peer_id)
                    .map(|e| e.consumers.keys().cloned().collect())
                    .unwrap_or_default()
            },
            |entries| {
                entries.remove(&peer_id);
            },
        )
    }

    /// Forgets clients not heard from within [`EXPIRY`]; answers the groups that changed.
    pub fn expire(&self) -> Vec<String> {
        self.changing(
            |entries| {
                entries
                    .values()
                    .filter(|e| !e.live())
                    .flat_map(|e| e.consumers.keys().cloned())
                    .collect()
            },
            |entries| entries.retain(|_, e| e.live()),
        )
    }

    /// The client ids of a consumer group's live members, sorted (every member must get the
    /// same list).
    pub fn consumer_ids(&self, group: &str) -> Vec<String> {
        let ids: BTreeSet<String> = self
            .entries
            .lock()
            .values()
            .filter(|e| e.live() && e.consumers.contains_key(group))
            .map(|e| e.client_id.clone())
            .collect();
        ids.into_iter().collect()
    }

    /// The connections of a consumer group's live members.
    pub fn consumer_peers(&self, group: &str) -> Vec<Arc<Peer>> {
        self.entries
            .lock()
            .values()
            .filter(|e| e.live() && e.consumers.contains_key(group))
            .map(|e| e.peer.clone())
            .collect()
    }

    /// The subscription of `group` to `topic`: the newest any member sent.
    pub fn subscription(&self, group: &str, topic: &str) -> Option<SubscriptionData> {
        self.entries
            .lock()
            .values()
            .filter(|e| e.live())
            .filter_map(|e| e.consumers.get(group))
            .flat_map(|c| c.subscription_data_set.iter())
            .filter(|s| s.topic == topic)
            .max_by_key(|s| s.sub_version)
            .cloned()
    }

    /// Whether any live client consumes for `group`.
    pub fn has_consumers(&self, group: &str) -> bool {
        self.entries
            .lock()
            .values()
            .any(|e| e.live() && e.consumers.contains_key(group))
    }

    /// GET_CONSUMER_CONNECTION_LIST's answer; `None` when no member is online.
    pub fn consumer_connection(&self, group: &str) -> Option<ConsumerConnection> {
        let entries = self.entries.lock();
        let mut out = ConsumerConnection::default();
        for e in entries.values().filter(|e| e.live()) {
            let Some(c) = e.consumers.get(group) else {
                continue;
            };
            out.connection_set.push(e.connection());
            out.consume_type = c.consume_type.clone();
            out.message_model = c.message_model.clone();
            out.consume_from_where = c.consume_from_where.clone();
            for s in &c.subscription_data_set {
                let newer = out
                    .subscription_table
                    .get(&s.topic)
                    .is_none_or(|o| o.sub_version <= s.sub_version);
                if newer {
                    out.subscription_table.insert(s.topic.clone(), s.clone());
                }
            }
        }
        if out.connection_set.is_empty() {
            return None;
        }
        out.connection_set
            .sort_by(|a, b| a.client_id.cmp(&b.client_id));
        Some(out)
    }

    /// The live connections of a producer group.
    pub fn producer_connections(&self, group: &str) -> Vec<Connection> {
        let mut out: Vec<Connection> = self
            .entries
            .lock()
            .values()
            .filter(|e| e.live() && e.producers.contains(group))
            .map(Entry::connection)
            .collect();
        out.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        out
    }

    /// The connection a client id heartbeated on most recently.
    pub fn peer_of(&self, client_id: &str) -> Option<Arc<Peer>> {
        self.entries
            .lock()
            .values()
            .filter(|e| e.live() && e.client_id == client_id)
            .max_by_key(|e| e.last_seen)
            .map(|e| e.peer.clone())
    }

    /// A live producer of `group`, `preferred` client first.
    pub fn producer_peer(&self, group: &str, preferred: Option<&str>) -> Option<Arc<Peer>> {
        let entries = self.entries.lock();
        let live = || {
            entries
                .values()
                .filter(|e| e.live() && e.producers.contains(group))
        };
        live()
            .find(|e| Some(e.client_id.as_str()) == preferred)
            .or_else(|| live().max_by_key(|e| e.last_seen))
            .map(|e| e.peer.clone())
    }

    /// The client id that heartbeated on a connection.
    pub fn client_id(&self, peer_id: u64) -> Option<String> {
        self.entries
            .lock()
            .get(&peer_id)
            .map(|e| e.client_id.clone())
    }

    /// Topics each consumer group subscribes to (retry topics included), for progress views.
    pub fn subscriptions(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for e in self.entries.lock().values().filter(|e| e.live()) {
            for (g, c) in &e.consumers {
                let topics = out.entry(g.clone()).or_default();
                for s in &c.subscription_data_set {
                    if !topics.contains(&s.topic) {
                        topics.push(s.topic.clone());
                    }
                }
            }
        }
        out
    }

    /// Consumer groups with a live member.
    pub fn consumer_groups(&self) -> BTreeSet<String> {
        self.entries
            .lock()
            .values()
            .filter(|e| e.live())
            .flat_map(|e| e.consumers.keys().cloned())
            .collect()
    }

    /// Clients known right now.
    pub fn count(&self) -> usize {
        self.entries.lock().len()
    }
}

/// How long a queue lock lasts without renewal (clients renew every 20 s).
pub const LOCK_TTL: Duration = Duration::from_secs(60);

/// (group, topic, queue) of a lock.
type LockKey = (String, String, i32);

/// Orderly consumers' queue locks: one client per (group, topic, queue) at a time.
#[derive(Debug, Default)]
pub struct Locks {
    /// The holder of each locked queue and when it last locked it.
    held: Mutex<HashMap<LockKey, (String, Instant)>>,
}

impl Locks {
    /// Locks (or renews) the queues for `client`; answers those it holds now. A queue held by
    /// another client whose lock has not expired is left out.
    pub fn lock(&self, group: &str, client: &str, mqs: &[MessageQueue]) -> Vec<MessageQueue> {
        let mut held = self.held.lock();
        let now = Instant::now();
        mqs.iter()
            .filter(|mq| {
                let key = (group.to_string(), mq.topic.clone(), mq.queue_id);
                match held.get(&key) {
                    Some((owner, at)) if owner != client && now.duration_since(*at) < LOCK_TTL => {
                        false
                    }
                    _ => {
                        held.insert(key, (client.to_string(), now));
                        true
                    }
                }
            })
            .cloned()
            .collect()
    }

    /// Releases the queues `client` holds among `mqs`.
    pub fn unlock(&self, group: &str, client: &str, mqs: &[MessageQueue]) {
        let mut held = self.held.lock();
        for mq in mqs {
            let key = (group.to_string(), mq.topic.clone(), mq.queue_id);
            if held.get(&key).is_some_and(|(owner, _)| owner == client) {
                held.remove(&key);
            }
        }
    }

    /// Drops expired locks (so the map does not grow with clients long gone).
    pub fn expire(&self) {
        self.held
            .lock()
            .retain(|_, (_, at)| at.elapsed() < LOCK_TTL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remoting::connection::Front;
    use ferromq_remoting::body::ProducerData;

    fn peer() -> (
        Arc<Peer>,
        tokio::sync::mpsc::Receiver<ferromq_remoting::Command>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let front = Arc::new(Front {
            addr: "127.0.0.1:9876".into(),
            store_host: "127.0.0.1:9876".parse().unwrap(),
        });
        (Peer::new("127.0.0.1:5000".into(), front, tx), rx)
    }

    fn consumer(client: &str, group: &str, topic: &str) -> HeartbeatData {
        HeartbeatData {
            client_id: client.into(),
            producer_data_set: vec![ProducerData {
                group_name: INNER_PRODUCER.into(),
            }],
            consumer_data_set: vec![ConsumerData {
                group_name: group.into(),
                subscription_data_set: vec![SubscriptionData {
                    topic: topic.into(),
                    sub_string: "*".into(),
                    sub_version: 1,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn members_are_listed_sorted_and_changes_are_reported_once() {
        let r = Registry::default();
        let (a, _ra) = peer();
        let (b, _rb) = peer();
        assert_eq!(
            r.heartbeat(&b, &consumer("c-b", "g", "t"), "JAVA", 409),
            vec!["g"]
        );
        assert_eq!(
            r.heartbeat(&a, &consumer("c-a", "g", "t"), "JAVA", 409),
            vec!["g"]
        );
        assert!(
            r.heartbeat(&a, &consumer("c-a", "g", "t"), "JAVA", 409)
                .is_empty(),
            "an unchanged heartbeat changes nothing"
        );
        assert_eq!(r.consumer_ids("g"), vec!["c-a", "c-b"]);
        assert_eq!(
            r.subscription("g", "t").map(|s| s.sub_string),
            Some("*".into())
        );
        assert!(r.producer_connections(INNER_PRODUCER).is_empty());
        assert_eq!(r.remove(b.id()), vec!["g"]);
        assert_eq!(r.consumer_ids("g"), vec!["c-a"]);
        assert_eq!(r.unregister(&a, None, Some("g")), vec!["g"]);
        assert!(r.consumer_connection("g").is_none());
        assert_eq!(r.count(), 0);
    }

    #[test]
    fn a_queue_is_locked_by_one_client_until_released() {
        let l = Locks::default();
        let mq = MessageQueue {
            topic: "t".into(),
            broker_name: "b".into(),
            queue_id: 1,
        };
        assert_eq!(
            l.lock("g", "c1", std::slice::from_ref(&mq)),
            vec![mq.clone()]
        );
        assert!(l.lock("g", "c2", std::slice::from_ref(&mq)).is_empty());
        assert_eq!(
            l.lock("g", "c1", std::slice::from_ref(&mq)),
            vec![mq.clone()],
            "renewed"
        );
        assert_eq!(
            l.lock("other", "c2", std::slice::from_ref(&mq)).len(),
            1,
            "per group"
        );
        l.unlock("g", "c2", std::slice::from_ref(&mq));
        assert!(
            l.lock("g", "c2", std::slice::from_ref(&mq)).is_empty(),
            "not c2's to release"
        );
        l.unlock("g", "c1", std::slice::from_ref(&mq));
        assert_eq!(l.lock("g", "c2", std::slice::from_ref(&mq)), vec![mq]);
    }
}
