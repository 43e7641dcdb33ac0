//! QueryRoute and QueryAssignment: where a topic's queues are and which of them a push
//! consumer should read.
//!
//! Standalone is one broker, so every queue lives on broker id 0 (clients ignore other ids) at
//! the address the client dialled (echoed when usable, else `advertise-addr`).

use std::net::IpAddr;

use ferromq_proto::v2::{self, AddressScheme, Code};
use ferromq_store::{MessageType, Permission, TopicConfig};
use tracing::instrument;

use super::RequestMeta;
use crate::node::Node;
use crate::status::{self, RpcError};
use crate::validate;

/// The broker name clients see in routes.
pub const BROKER_NAME: &str = "ferromq-standalone";

pub fn proto_permission(p: Permission) -> v2::Permission {
    match p {
        Permission::ReadWrite => v2::Permission::ReadWrite,
        Permission::Read => v2::Permission::Read,
        Permission::Write => v2::Permission::Write,
        Permission::None => v2::Permission::None,
    }
}

pub fn proto_message_type(t: MessageType) -> v2::MessageType {
    match t {
        MessageType::Normal => v2::MessageType::Normal,
        MessageType::Fifo => v2::MessageType::Fifo,
        MessageType::Delay => v2::MessageType::Delay,
        MessageType::Transaction => v2::MessageType::Transaction,
        MessageType::Priority => v2::MessageType::Priority,
    }
}

fn scheme_of(host: &str) -> AddressScheme {
    match host
        .trim_matches(|c| c == '[' || c == ']')
        .parse::<IpAddr>()
    {
        Ok(IpAddr::V4(_)) => AddressScheme::Ipv4,
        Ok(IpAddr::V6(_)) => AddressScheme::Ipv6,
        Err(_) => AddressScheme::DomainName,
    }
}

/// The endpoints to advertise: the client's access point when it is a usable address (same
/// scheme and address it already reaches), else the configured advertise address.
pub fn advertised_endpoints(requested: Option<&v2::Endpoints>, advertise: &str) -> v2::Endpoints {
    if let Some(e) = requested {
        let usable: Vec<v2::Address> = e
            .addresses
            .iter()
            .filter(|a| {
                let h = a.host.trim_matches(|c| c == '[' || c == ']');
                !h.is_empty()
                    && a.port > 0
                    && a.port <= 65535
                    && h.parse::<IpAddr>().map_or(true, |ip| !ip.is_unspecified())
            })
            .cloned()
            .collect();
        if let Some(first) = usable.first() {
            let scheme = match AddressScheme::try_from(e.scheme) {
                Ok(AddressScheme::Unspecified) | Err(_) => scheme_of(&first.host),
                Ok(s) => s,
            };
            return v2::Endpoints {
                scheme: scheme as i32,
                addresses: usable,
            };
        }
    }
    let (host, port) = advertise.rsplit_once(':').unwrap_or((advertise, "8081"));
    v2::Endpoints {
        scheme: scheme_of(host) as i32,
        addresses: vec![v2::Address {
            host: host.trim_matches(|c| c == '[' || c == ']').to_string(),
            port: port.parse().unwrap_or(8081),
        }],
    }
}

fn queue(
    topic: &v2::Resource,
    t: &TopicConfig,
    id: i32,
    endpoints: &v2::Endpoints,
) -> v2::MessageQueue {
    v2::MessageQueue {
        topic: Some(topic.clone()),
        id,
        permission: proto_permission(t.permission) as i32,
        broker: Some(v2::Broker {
            name: BROKER_NAME.into(),
            id: 0,
            endpoints: Some(endpoints.clone()),
        }),
        accept_message_types: vec![proto_message_type(t.message_type) as i32],
    }
}

#[instrument(skip_all, fields(topic = req.topic.as_ref().map(|t| t.name.as_str()).unwrap_or(""), client = meta.client_id.as_deref().unwrap_or("")))]
pub async fn query_route(
    node: &std::sync::Arc<Node>,
    meta: &RequestMeta,
    req: v2::QueryRouteRequest,
) -> v2::QueryRouteResponse {
    let result: Result<Vec<v2::MessageQueue>, RpcError> = async {
        let name = validate::topic_name(req.topic.as_ref())?.to_string();
        let t = node.blocking(move |b| Ok(b.engine.topic(&name)?)).await?;
        let resource = req.topic.clone().unwrap_or_default();
        let endpoints = advertised_endpoints(req.endpoints.as_ref(), &node.settings.advertise_addr);
        Ok((0..t.queues as i32)
            .map(|id| queue(&resource, &t, id, &endpoints))
            .collect())
    }
    .await;
    match result {
        Ok(message_queues) => v2::QueryRouteResponse {
            status: Some(status::ok()),
            message_queues,
        },
        Err(e) => v2::QueryRouteResponse {
            status: Some(meta.status(&e)),
            message_queues: vec![],
        },
    }
}

#[instrument(skip_all, fields(topic = req.topic.as_ref().map(|t| t.name.as_str()).unwrap_or(""), group = req.group.as_ref().map(|g| g.name.as_str()).unwrap_or("")))]
pub async fn query_assignment(
    node: &std::sync::Arc<Node>,
    meta: &RequestMeta,
    req: v2::QueryAssignmentRequest,
) -> v2::QueryAssignmentResponse {
    let result: Result<Vec<v2::Assignment>, RpcError> = async {
        let name = validate::topic_name(req.topic.as_ref())?.to_string();
        let group = validate::group_name(req.group.as_ref())?.to_string();
        let t = node.blocking(move |b| Ok(b.engine.topic(&name)?)).await?;
        if !t.permission.readable() {
            return Err(RpcError::new(
                Code::Forbidden,
                format!("topic {} has no readable queue", t.name),
            ));
        }
        let resource = req.topic.clone().unwrap_or_default();
        let endpoints = advertised_endpoints(req.endpoints.as_ref(), &node.settings.advertise_addr);
        let fifo = node
            .engine
            .groups
            .fifo(&group, t.message_type == MessageType::Fifo);
        // Non-FIFO: one assignment for the whole broker (queue id -1, the server picks queues).
        // FIFO: one per queue, so each is consumed by one loop in order.
        let ids: Vec<i32> = if fifo {
            (0..t.queues as i32).collect()
        } else {
            vec![-1]
        };
        Ok(ids
            .into_iter()
            .map(|id| v2::Assignment {
                message_queue: Some(queue(&resource, &t, id, &endpoints)),
            })
            .collect())
    }
    .await;
    match result {
        Ok(assignments) => v2::QueryAssignmentResponse {
            status: Some(status::ok()),
            assignments,
        },
        Err(e) => v2::QueryAssignmentResponse {
            status: Some(meta.status(&e)),
            assignments: vec![],
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usable_access_points_are_echoed_and_wildcards_replaced() {
        let req = v2::Endpoints {
            scheme: AddressScheme::Unspecified as i32,
            addresses: vec![v2::Address {
                host: "127.0.0.1".into(),
                port: 9876,
            }],
        };
        let e = advertised_endpoints(Some(&req), "10.0.0.1:8081");
        assert_eq!(e.addresses[0].port, 9876);
        assert_eq!(e.scheme, AddressScheme::Ipv4 as i32);
        let wildcard = v2::Endpoints {
            scheme: 1,
            addresses: vec![v2::Address {
                host: "0.0.0.0".into(),
                port: 8081,
            }],
        };
        let e = advertised_endpoints(Some(&wildcard), "broker.local:8081");
        assert_eq!(e.addresses[0].host, "broker.local");
        assert_eq!(e.scheme, AddressScheme::DomainName as i32);
        let e = advertised_endpoints(None, "127.0.0.1:1234");
        assert_eq!(e.addresses[0].port, 1234);
    }
}
