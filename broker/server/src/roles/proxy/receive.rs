//! ReceiveMessage through the proxy, and the routing of queue-addressed requests (pull,
//! offsets): a receive long-polls one group, after a quick look at the others.

use std::sync::Arc;

use ferromq_proto::v2;
use tokio_stream::StreamExt;
use tonic::metadata::MetadataMap;
use tonic::Status;

use super::fanout::{fail, outgoing, topic_of, unreachable_status};
use super::raw_receive::{self, RawReceived};
use super::routes::{ClusterView, GroupRoute};
use super::ProxyApi;
use crate::rpc::BoxStream;

/// The group a message queue names, or (when that group is gone or the queue names none)
/// another one holding the topic, chosen by `rotation`.
pub fn group_for_queue(
    view: &ClusterView,
    mq: Option<&v2::MessageQueue>,
    rotation: usize,
) -> Option<GroupRoute> {
    let topic = mq.map(|m| topic_of(m.topic.as_ref())).unwrap_or_default();
    if let Some(name) = mq.and_then(|m| m.broker.as_ref()).map(|b| b.name.as_str()) {
        if let Some(g) = view.group(name) {
            return Some(g.clone());
        }
    }
    let holding: Vec<&GroupRoute> = view.holding(&topic).collect();
    if holding.is_empty() {
        return view.groups.first().cloned();
    }
    Some(holding[rotation % holding.len()].clone())
}

/// Where a receive goes: the group it long-polls, and the groups it first checks without
/// waiting (that one first). FIFO topics stay on the group the queue names (order lives in its
/// queues) and probe nothing; other topics rotate over every group holding them and probe them
/// all, so a backlog on one group is served at once, before the consumer's next route refresh
/// even shows it a new group's queues.
pub fn receive_plan(
    view: &ClusterView,
    mq: Option<&v2::MessageQueue>,
    rotation: usize,
) -> Option<(GroupRoute, Vec<GroupRoute>)> {
    let topic = mq.map(|m| topic_of(m.topic.as_ref())).unwrap_or_default();
    let holding: Vec<&GroupRoute> = view.holding(&topic).collect();
    let fifo = holding.iter().any(|g| {
        g.topics
            .get(&topic)
            .is_some_and(|t| t.message_type == ferromq_proto::admin::TopicType::Fifo as i32)
    });
    if fifo || holding.len() < 2 {
        return group_for_queue(view, mq, rotation).map(|g| (g, Vec::new()));
    }
    let start = rotation % holding.len();
    let order: Vec<GroupRoute> = (0..holding.len())
        .map(|i| holding[(start + i) % holding.len()].clone())
        .collect();
    Some((order[0].clone(), order))
}

/// A receive's answer that is only a status.
fn status_only(s: v2::Status) -> BoxStream<RawReceived> {
    let one = v2::ReceiveMessageResponse {
        content: Some(v2::receive_message_response::Content::Status(s)),
    };
    Box::pin(tokio_stream::once(Ok(RawReceived::encode(&one))))
}

impl ProxyApi {
    /// Routes a receive and streams the group's answer back undecoded, each message's receipt
    /// handle wrapped with the group's name ([`super::raw_receive`]).
    pub(super) async fn receive_message(
        &self,
        md: &MetadataMap,
        r: v2::ReceiveMessageRequest,
    ) -> Result<BoxStream<RawReceived>, Status> {
        let view = self.routes.view();
        let Some((g, probes)) = receive_plan(&view, r.message_queue.as_ref(), self.routes.next())
        else {
            let s = fail(
                md,
                v2::Code::InternalServerError,
                "no broker group is alive",
            );
            return Ok(status_only(s));
        };
        // Several groups: ask each once without waiting, starting with the chosen one, so a
        // backlog on one group is served at once instead of after long polls on empty ones.
        // Only when none has anything does the receive long-poll, on the chosen group.
        for other in probes {
            let mut quick = r.clone();
            quick.long_polling_timeout = Some(prost_types::Duration::default());
            let Ok(mut c) = self.routes.raw(&other) else {
                continue;
            };
            let Ok(s) = raw_receive::receive(&mut c, outgoing(md, quick)).await else {
                continue;
            };
            let items: Vec<RawReceived> = s.into_inner().filter_map(|i| i.ok()).collect().await;
            if items.iter().any(RawReceived::is_message) {
                tracing::Span::current().record("group", other.name.as_str());
                let name: Arc<str> = Arc::from(other.name.as_str());
                let out: Vec<Result<RawReceived, Status>> = items
                    .into_iter()
                    .map(|item| Ok(item.wrapped(&name)))
                    .collect();
                return Ok(Box::pin(tokio_stream::iter(out)));
            }
        }
        tracing::Span::current().record("group", g.name.as_str());
        let mut c = self.routes.raw(&g).map_err(Status::internal)?;
        match raw_receive::receive(&mut c, outgoing(md, r)).await {
            Ok(s) => {
                let name: Arc<str> = Arc::from(g.name.as_str());
                let out = s
                    .into_inner()
                    .map(move |item| item.map(|raw| raw.wrapped(&name)));
                Ok(Box::pin(out))
            }
            Err(e) => Ok(status_only(unreachable_status(md, &g.name, &e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::routes::TopicAtGroup;
    use super::*;

    fn group(name: &str, topic: &str, message_type: ferromq_proto::admin::TopicType) -> GroupRoute {
        let mut topics = std::collections::BTreeMap::new();
        topics.insert(
            topic.to_string(),
            TopicAtGroup {
                queues: 4,
                message_type: message_type as i32,
                permission: 0,
            },
        );
        GroupRoute {
            name: name.into(),
            endpoint: format!("{name}:10911"),
            read_only: false,
            topics: topics.into(),
            total_lag: 0,
            queues_with_lag: 0,
            age_ms: 0,
            epoch: 0,
        }
    }

    fn queue(topic: &str, group: Option<&str>) -> v2::MessageQueue {
        v2::MessageQueue {
            topic: Some(v2::Resource {
                resource_namespace: String::new(),
                name: topic.into(),
            }),
            broker: group.map(|g| v2::Broker {
                name: g.into(),
                id: 0,
                endpoints: None,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn normal_topics_probe_every_holder_starting_with_the_rotation() {
        use ferromq_proto::admin::TopicType;
        let view = ClusterView {
            groups: vec![
                group("a", "t", TopicType::Normal),
                group("b", "t", TopicType::Normal),
                group("c", "other", TopicType::Normal),
            ],
        };
        let (g, probes) = receive_plan(&view, Some(&queue("t", Some("a"))), 1).expect("plan");
        assert_eq!(g.name, "b");
        let names: Vec<_> = probes.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["b", "a"], "only holders of the topic");
    }

    #[test]
    fn fifo_topics_stay_on_the_named_group_and_probe_nothing() {
        use ferromq_proto::admin::TopicType;
        let view = ClusterView {
            groups: vec![
                group("a", "f", TopicType::Fifo),
                group("b", "f", TopicType::Fifo),
            ],
        };
        let (g, probes) = receive_plan(&view, Some(&queue("f", Some("b"))), 0).expect("plan");
        assert_eq!(g.name, "b");
        assert!(probes.is_empty());
        let gone = group_for_queue(&view, Some(&queue("f", Some("zz"))), 3).expect("a holder");
        assert_eq!(
            gone.name, "b",
            "a gone group falls back to a holder by rotation"
        );
    }
}
