//! QueryRoute and QueryAssignment through the proxy: asked of every group holding the topic
//! and merged; each queue carries its group as the broker name and this proxy tier's endpoints
//! (what the client dialled), so clients keep talking to proxies and spread over them.

use ferromq_proto::v2;
use tonic::metadata::MetadataMap;

use super::fanout::{merge_answers, topic_of};
use super::routes::GroupRoute;
use super::ProxyApi;

/// Sets a queue's broker to its group and this proxy tier's endpoints, and marks a draining
/// group's queues read-only.
pub fn relabel(mq: &mut v2::MessageQueue, g: &GroupRoute, endpoints: &v2::Endpoints) {
    if let Some(b) = mq.broker.as_mut() {
        b.name = g.name.clone();
        b.endpoints = Some(endpoints.clone());
    }
    if g.read_only {
        mq.permission = v2::Permission::Read as i32;
    }
}

impl ProxyApi {
    pub(super) async fn query_route(
        &self,
        md: &MetadataMap,
        r: v2::QueryRouteRequest,
    ) -> v2::QueryRouteResponse {
        let topic = topic_of(r.topic.as_ref());
        tracing::Span::current().record("topic", topic.as_str());
        let endpoints = crate::service::advertised_endpoints(r.endpoints.as_ref(), &self.advertise);
        match self
            .ask_holders(
                md,
                &topic,
                r,
                |mut c, r| async move { c.query_route(r).await },
            )
            .await
        {
            Err(s) => v2::QueryRouteResponse {
                status: Some(s),
                message_queues: vec![],
            },
            Ok(answers) => {
                let (status, message_queues) = merge_answers(
                    answers,
                    |a| (a.status, a.message_queues),
                    |q, g| relabel(q, g, &endpoints),
                );
                v2::QueryRouteResponse {
                    status: Some(status),
                    message_queues,
                }
            }
        }
    }

    pub(super) async fn query_assignment(
        &self,
        md: &MetadataMap,
        r: v2::QueryAssignmentRequest,
    ) -> v2::QueryAssignmentResponse {
        let topic = topic_of(r.topic.as_ref());
        tracing::Span::current().record("topic", topic.as_str());
        let endpoints = crate::service::advertised_endpoints(r.endpoints.as_ref(), &self.advertise);
        match self
            .ask_holders(md, &topic, r, |mut c, r| async move {
                c.query_assignment(r).await
            })
            .await
        {
            Err(s) => v2::QueryAssignmentResponse {
                status: Some(s),
                assignments: vec![],
            },
            Ok(answers) => {
                let (status, assignments) = merge_answers(
                    answers,
                    |a| (a.status, a.assignments),
                    |x: &mut v2::Assignment, g| {
                        if let Some(q) = x.message_queue.as_mut() {
                            relabel(q, g, &endpoints);
                        }
                    },
                );
                v2::QueryAssignmentResponse {
                    status: Some(status),
                    assignments,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_name_the_group_and_point_at_the_proxy_tier() {
        let g = GroupRoute {
            name: "g7".into(),
            endpoint: "10.0.0.9:10911".into(),
            read_only: true,
            topics: Default::default(),
            total_lag: 0,
            queues_with_lag: 0,
            age_ms: 0,
            epoch: 0,
        };
        let proxy = crate::service::advertised_endpoints(None, "proxy.example:8081");
        let mut q = v2::MessageQueue {
            permission: v2::Permission::ReadWrite as i32,
            broker: Some(v2::Broker {
                name: "standalone".into(),
                id: 0,
                endpoints: crate::service::advertised_endpoints(None, "10.0.0.9:10911").into(),
            }),
            ..Default::default()
        };
        relabel(&mut q, &g, &proxy);
        let b = q.broker.expect("broker kept");
        assert_eq!(b.name, "g7");
        assert_eq!(
            b.endpoints.expect("endpoints").addresses[0].host,
            "proxy.example"
        );
        assert_eq!(
            q.permission,
            v2::Permission::Read as i32,
            "a draining group is read-only"
        );
    }
}
