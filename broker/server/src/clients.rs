//! The clients a storage node knows: their settings (from Telemetry), the group they consume
//! for, when they were last heard from, and the channel of their Telemetry stream so the server
//! can send commands to them (transaction checks).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use ferromq_proto::v2::{self, ClientType, TelemetryCommand};
use parking_lot::{Mutex, MutexGuard};
use tokio::sync::mpsc;

/// Sender half of a client's Telemetry response stream.
pub type CommandSender = mpsc::Sender<Result<TelemetryCommand, tonic::Status>>;

/// Clients not heard from for this long are no longer counted as online.
const ONLINE_WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct ClientSession {
    pub client_type: ClientType,
    pub group: Option<String>,
    pub language: String,
    pub settings: Option<v2::Settings>,
    pub last_seen: Instant,
    /// Telemetry streams currently open, by stream id.
    pub streams: BTreeMap<u64, CommandSender>,
}

#[derive(Debug, Default)]
pub struct Clients {
    map: Mutex<HashMap<String, ClientSession>>,
}

impl Clients {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, ClientSession>> {
        self.map.lock()
    }

    fn entry<'a>(
        map: &'a mut HashMap<String, ClientSession>,
        id: &str,
        language: &str,
    ) -> &'a mut ClientSession {
        map.entry(id.to_string()).or_insert_with(|| ClientSession {
            client_type: ClientType::Unspecified,
            group: None,
            language: language.to_string(),
            settings: None,
            last_seen: Instant::now(),
            streams: BTreeMap::new(),
        })
    }

    /// Records the settings a client announced on its Telemetry stream.
    pub fn on_settings(&self, id: &str, language: &str, s: &v2::Settings) {
        let mut map = self.lock();
        let c = Self::entry(&mut map, id, language);
        if let Some(t) = s.client_type.and_then(|t| ClientType::try_from(t).ok()) {
            c.client_type = t;
        }
        if let Some(v2::settings::PubSub::Subscription(sub)) = &s.pub_sub {
            if let Some(g) = &sub.group {
                c.group = Some(g.name.clone());
            }
        }
        c.settings = Some(s.clone());
        c.last_seen = Instant::now();
    }

    pub fn attach_stream(&self, id: &str, language: &str, stream: u64, tx: CommandSender) {
        let mut map = self.lock();
        Self::entry(&mut map, id, language)
            .streams
            .insert(stream, tx);
    }

    pub fn detach_stream(&self, id: &str, stream: u64) {
        if let Some(c) = self.lock().get_mut(id) {
            c.streams.remove(&stream);
        }
    }

    pub fn heartbeat(
        &self,
        id: &str,
        language: &str,
        group: Option<&str>,
        client_type: ClientType,
    ) {
        let mut map = self.lock();
        let c = Self::entry(&mut map, id, language);
        if let Some(g) = group {
            c.group = Some(g.to_string());
        }
        if client_type != ClientType::Unspecified {
            c.client_type = client_type;
        }
        c.last_seen = Instant::now();
    }

    /// Forgets a client that said goodbye.
    pub fn terminate(&self, id: &str) {
        self.lock().remove(id);
    }

    /// A Telemetry stream of a live producer that declared `topic`, for server-to-client
    /// commands such as transaction checks (any one of them may answer).
    pub fn producer_stream_for(&self, topic: &str) -> Option<CommandSender> {
        let map = self.lock();
        map.values()
            .filter(|c| match &c.settings {
                Some(v2::Settings {
                    pub_sub: Some(v2::settings::PubSub::Publishing(p)),
                    ..
                }) => p.topics.iter().any(|t| t.name == topic),
                _ => false,
            })
            .flat_map(|c| c.streams.values())
            .find(|tx| !tx.is_closed())
            .cloned()
    }

    /// An open Telemetry stream of client `id`, if it has one.
    pub fn stream_of(&self, id: &str) -> Option<CommandSender> {
        self.lock()
            .get(id)
            .and_then(|c| c.streams.values().find(|tx| !tx.is_closed()).cloned())
    }

    /// Forgets clients without a Telemetry stream that were not heard from for `idle`
    /// (crashed clients never say goodbye).
    pub fn prune(&self, idle: Duration) {
        self.lock()
            .retain(|_, c| !c.streams.is_empty() || c.last_seen.elapsed() < idle);
    }

    /// Drops every stream sender so Telemetry response streams end (shutdown).
    pub fn close_all_streams(&self) {
        for c in self.lock().values_mut() {
            c.streams.clear();
        }
    }

    /// Whether a client still holds a Telemetry stream or was heard from recently.
    pub fn is_alive(&self, id: &str) -> bool {
        self.lock()
            .get(id)
            .is_some_and(|c| !c.streams.is_empty() || c.last_seen.elapsed() < ONLINE_WINDOW)
    }

    /// Online clients per consumer group.
    pub fn online_by_group(&self) -> BTreeMap<String, usize> {
        let now = Instant::now();
        let mut out = BTreeMap::new();
        for c in self.lock().values() {
            if let Some(g) = &c.group {
                if now.duration_since(c.last_seen) < ONLINE_WINDOW || !c.streams.is_empty() {
                    *out.entry(g.clone()).or_insert(0) += 1;
                }
            }
        }
        out
    }

    /// Topics each known group subscribed to (from settings).
    pub fn subscriptions(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for c in self.lock().values() {
            if let (
                Some(g),
                Some(v2::Settings {
                    pub_sub: Some(v2::settings::PubSub::Subscription(sub)),
                    ..
                }),
            ) = (&c.group, &c.settings)
            {
                let topics = out.entry(g.clone()).or_default();
                for e in &sub.subscriptions {
                    if let Some(t) = &e.topic {
                        if !topics.contains(&t.name) {
                            topics.push(t.name.clone());
                        }
                    }
                }
            }
        }
        out
    }

    /// Clients known right now.
    pub fn count(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn producer_settings(topic: &str) -> v2::Settings {
        v2::Settings {
            client_type: Some(ClientType::Producer as i32),
            pub_sub: Some(v2::settings::PubSub::Publishing(v2::Publishing {
                topics: vec![v2::Resource {
                    resource_namespace: String::new(),
                    name: topic.into(),
                }],
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn commands_reach_a_live_producer_of_the_topic_only() {
        let clients = Clients::default();
        let (tx, mut rx) = mpsc::channel(1);
        clients.on_settings("p1", "JAVA", &producer_settings("orders"));
        clients.attach_stream("p1", "JAVA", 1, tx);
        assert!(clients.producer_stream_for("payments").is_none());
        let stream = clients
            .producer_stream_for("orders")
            .expect("a producer of orders");
        stream
            .try_send(Ok(TelemetryCommand::default()))
            .expect("delivered");
        assert!(rx.try_recv().is_ok());
        clients.detach_stream("p1", 1);
        assert!(
            clients.producer_stream_for("orders").is_none(),
            "no stream, no command"
        );
        assert!(clients.is_alive("p1"), "recently heard from");
        clients.terminate("p1");
        assert!(!clients.is_alive("p1"));
    }

    #[test]
    fn consumer_groups_are_counted_online() {
        let clients = Clients::default();
        clients.heartbeat("c1", "PYTHON", Some("g"), ClientType::SimpleConsumer);
        clients.heartbeat("c2", "PYTHON", Some("g"), ClientType::SimpleConsumer);
        assert_eq!(clients.online_by_group().get("g"), Some(&2));
        clients.prune(Duration::ZERO);
        assert_eq!(
            clients.count(),
            0,
            "idle clients without streams are forgotten"
        );
    }
}
