//! The address clients reach a Broker at (`status.endpoint`) and the one its proxies
//! advertise in routes.
//!
//! A proxy answers a route query with the address the client says it dialled when that one is
//! usable, and with its advertised address otherwise (`ferromq proxy --advertise-addr`, from
//! `FERROMQ_ADVERTISE_ADDR`); both follow the client Service's type here so that a client
//! outside the cluster is never sent to an in-cluster name.

use k8s_openapi::api::core::v1::Service;

use super::common::GRPC_PORT;
use crate::crd::{Broker, ServiceType};

/// What the API server reports about an existing client Service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceFacts {
    /// First ingress address of a LoadBalancer Service (IP or host name).
    pub load_balancer: Option<String>,
    /// Node port allocated to the client port.
    pub node_port: Option<i32>,
}

impl ServiceFacts {
    /// Reads the facts of `svc` (the client Service as stored).
    pub fn of(svc: &Service) -> Self {
        let load_balancer = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .and_then(|i| i.first())
            .and_then(|i| i.ip.clone().or_else(|| i.hostname.clone()))
            .filter(|a| !a.is_empty());
        let node_port = svc
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .and_then(|p| p.iter().find(|p| p.port == GRPC_PORT))
            .and_then(|p| p.node_port);
        ServiceFacts {
            load_balancer,
            node_port,
        }
    }
}

/// `host:port`, with brackets around an IPv6 host.
fn host_port(host: &str, port: i32) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The client Service's in-cluster address.
pub fn cluster_address(broker: &str, namespace: &str) -> String {
    format!("{broker}.{namespace}.svc:{GRPC_PORT}")
}

fn service_type(broker: &Broker) -> ServiceType {
    broker
        .spec
        .compute
        .service
        .as_ref()
        .map(|s| s.type_)
        .unwrap_or_default()
}

/// The node port: the one the spec fixes, else the one Kubernetes allocated.
fn node_port(broker: &Broker, facts: &ServiceFacts) -> Option<i32> {
    broker
        .spec
        .compute
        .service
        .as_ref()
        .and_then(|s| s.node_port)
        .or(facts.node_port)
}

fn advertised_override(broker: &Broker) -> Option<String> {
    broker
        .spec
        .compute
        .service
        .as_ref()
        .and_then(|s| s.advertised_address.clone())
}

/// What the proxies advertise (`FERROMQ_ADVERTISE_ADDR`): the configured address; else the
/// load balancer's address once it has one; else, for a NodePort Service, each proxy's own
/// node address (`$(FERROMQ_HOST_IP)`, from the downward API) on the node port; else the
/// in-cluster name. Only a load balancer getting its address changes it after creation, which
/// rolls the proxies once.
pub fn advertise(broker: &Broker, name: &str, namespace: &str, facts: &ServiceFacts) -> String {
    if let Some(a) = advertised_override(broker) {
        return a;
    }
    match service_type(broker) {
        ServiceType::LoadBalancer if facts.load_balancer.is_some() => host_port(
            facts.load_balancer.as_deref().unwrap_or_default(),
            GRPC_PORT,
        ),
        ServiceType::NodePort if node_port(broker, facts).is_some() => format!(
            "$(FERROMQ_HOST_IP):{}",
            node_port(broker, facts).unwrap_or_default()
        ),
        _ => cluster_address(name, namespace),
    }
}

/// `status.endpoint`: the configured address; the load balancer's address (LoadBalancer); the
/// node address of a ready proxy (`node_ip`) with the node port (NodePort); the in-cluster
/// name (ClusterIP). `None` while a LoadBalancer or NodePort Service has no address yet.
pub fn endpoint(
    broker: &Broker,
    name: &str,
    namespace: &str,
    facts: &ServiceFacts,
    node_ip: Option<&str>,
) -> Option<String> {
    if let Some(a) = advertised_override(broker) {
        return Some(a);
    }
    match service_type(broker) {
        ServiceType::ClusterIP => Some(cluster_address(name, namespace)),
        ServiceType::LoadBalancer => facts
            .load_balancer
            .as_deref()
            .map(|h| host_port(h, GRPC_PORT)),
        ServiceType::NodePort => match (node_ip, node_port(broker, facts)) {
            (Some(ip), Some(port)) => Some(host_port(ip, port)),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::broker::tests::fixture;
    use crate::crd::ClientService;
    use serde_json::json;

    fn with(type_: ServiceType, advertised: Option<&str>) -> Broker {
        let mut b = fixture(1, 1);
        b.spec.compute.service = Some(ClientService {
            type_,
            advertised_address: advertised.map(String::from),
            ..ClientService::default()
        });
        b
    }

    fn lb(addr: serde_json::Value) -> ServiceFacts {
        let svc: Service = serde_json::from_value(json!({
            "metadata": { "name": "demo" },
            "spec": { "type": "LoadBalancer", "ports": [{ "name": "grpc", "port": 8081, "nodePort": 31081 }] },
            "status": { "loadBalancer": { "ingress": [addr] } } }))
        .expect("service");
        ServiceFacts::of(&svc)
    }

    #[test]
    fn facts_read_the_load_balancer_address_and_node_port() {
        assert_eq!(
            lb(json!({ "ip": "203.0.113.7" })),
            ServiceFacts {
                load_balancer: Some("203.0.113.7".into()),
                node_port: Some(31081)
            }
        );
        assert_eq!(
            lb(json!({ "hostname": "a1.elb.example.com" })).load_balancer,
            Some("a1.elb.example.com".into())
        );
        assert_eq!(
            ServiceFacts::of(&Service::default()),
            ServiceFacts::default()
        );
    }

    #[test]
    fn cluster_ip_uses_the_service_dns_name() {
        let b = fixture(1, 1);
        let none = ServiceFacts::default();
        assert_eq!(
            endpoint(&b, "demo", "prod", &none, None).as_deref(),
            Some("demo.prod.svc:8081")
        );
        assert_eq!(advertise(&b, "demo", "prod", &none), "demo.prod.svc:8081");
    }

    #[test]
    fn load_balancer_address_once_assigned() {
        let b = with(ServiceType::LoadBalancer, None);
        let pending = ServiceFacts::default();
        assert_eq!(endpoint(&b, "demo", "prod", &pending, None), None);
        assert_eq!(
            advertise(&b, "demo", "prod", &pending),
            "demo.prod.svc:8081"
        );
        let up = lb(json!({ "ip": "203.0.113.7" }));
        assert_eq!(
            endpoint(&b, "demo", "prod", &up, None).as_deref(),
            Some("203.0.113.7:8081")
        );
        assert_eq!(advertise(&b, "demo", "prod", &up), "203.0.113.7:8081");
        let v6 = lb(json!({ "ip": "2001:db8::7" }));
        assert_eq!(advertise(&b, "demo", "prod", &v6), "[2001:db8::7]:8081");
    }

    #[test]
    fn node_port_names_a_node_and_each_proxy_advertises_its_own() {
        let b = with(ServiceType::NodePort, None);
        let facts = ServiceFacts {
            load_balancer: None,
            node_port: Some(30081),
        };
        assert_eq!(endpoint(&b, "demo", "prod", &facts, None), None);
        assert_eq!(
            endpoint(&b, "demo", "prod", &facts, Some("10.0.0.5")).as_deref(),
            Some("10.0.0.5:30081")
        );
        assert_eq!(
            advertise(&b, "demo", "prod", &facts),
            "$(FERROMQ_HOST_IP):30081"
        );
        assert_eq!(
            advertise(&b, "demo", "prod", &ServiceFacts::default()),
            "demo.prod.svc:8081",
            "no node port allocated yet"
        );
    }

    #[test]
    fn an_advertised_address_overrides_everything() {
        let b = with(ServiceType::LoadBalancer, Some("mq.example.com:443"));
        let up = lb(json!({ "ip": "203.0.113.7" }));
        assert_eq!(
            endpoint(&b, "demo", "prod", &up, None).as_deref(),
            Some("mq.example.com:443")
        );
        assert_eq!(advertise(&b, "demo", "prod", &up), "mq.example.com:443");
    }
}
