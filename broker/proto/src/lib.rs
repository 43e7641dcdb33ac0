//! Wire types of FerroMQ, generated from the `.proto` files under `proto/`.
//!
//! - [`v2`]: the RocketMQ 5 client protocol (`apache.rocketmq.v2`), so the official RocketMQ
//!   clients talk to FerroMQ unchanged. Written from the published field numbers; only package,
//!   service, method names, field numbers and enum numbers matter on the wire.
//! - [`admin`]: FerroMQ's own administration API (`ferromq.admin.v1`), served on the same port.
//! - [`cluster`]: membership between broker groups, name servers and proxies (`ferromq.cluster.v1`).
//! - [`tunnel`]: remoting-protocol connections carried from a proxy to a broker group
//!   (`ferromq.remoting.v1`).
//! - [`replication`]: log shipping inside a replicated broker group (`ferromq.replication.v1`).
//! - [`controller`]: the replication controller (`ferromq.controller.v1`): Raft between
//!   controller peers, and the Controller service broker group members and admins call.
//! - [`forward`]: many clients' sends a proxy hands a broker group in one call
//!   (`ferromq.forward.v1`).
//!
//! This crate holds types only: no behaviour, no I/O.

/// Generated code mirrors the `.proto` package tree; the short aliases below are what callers use.
pub mod apache {
    pub mod rocketmq {
        pub mod v2 {
            #![allow(clippy::all, missing_docs)]
            tonic::include_proto!("apache.rocketmq.v2");
        }
    }
}

/// FerroMQ's internal and administrative packages.
pub mod ferromq {
    pub mod admin {
        pub mod v1 {
            #![allow(clippy::all, missing_docs)]
            tonic::include_proto!("ferromq.admin.v1");
        }
    }
    pub mod cluster {
        pub mod v1 {
            #![allow(clippy::all, missing_docs)]
            tonic::include_proto!("ferromq.cluster.v1");
        }
    }
    pub mod remoting {
        pub mod v1 {
            #![allow(clippy::all, missing_docs)]
            tonic::include_proto!("ferromq.remoting.v1");
        }
    }
    pub mod replication {
        pub mod v1 {
            #![allow(clippy::all, missing_docs)]
            tonic::include_proto!("ferromq.replication.v1");
        }
    }
    pub mod controller {
        pub mod v1 {
            #![allow(clippy::all, missing_docs)]
            tonic::include_proto!("ferromq.controller.v1");
        }
    }
    pub mod forward {
        pub mod v1 {
            #![allow(clippy::all, missing_docs)]
            tonic::include_proto!("ferromq.forward.v1");
        }
    }
}

pub use apache::rocketmq::v2;
pub use ferromq::admin::v1 as admin;
pub use ferromq::cluster::v1 as cluster;
pub use ferromq::controller::v1 as controller;
pub use ferromq::forward::v1 as forward;
pub use ferromq::remoting::v1 as tunnel;
pub use ferromq::replication::v1 as replication;

#[cfg(test)]
mod tests {
    use super::v2;
    use prost::Message;

    /// The numbers below are what the official clients put on the wire; a typo in the .proto
    /// would silently break them, so pin a few that are easy to get wrong.
    #[test]
    fn enum_numbers_match_the_published_protocol() {
        assert_eq!(v2::Code::Ok as i32, 20000);
        assert_eq!(v2::Code::MessageNotFound as i32, 40401);
        assert_eq!(v2::Code::TopicNotFound as i32, 40402);
        assert_eq!(v2::Code::MessagePropertyConflictWithType as i32, 40014);
        assert_eq!(v2::Code::MessageBodyTooLarge as i32, 41301);
        assert_eq!(v2::Permission::ReadWrite as i32, 4);
        assert_eq!(v2::MessageType::Transaction as i32, 4);
        assert_eq!(v2::ClientType::SimpleConsumer as i32, 3);
        assert_eq!(v2::Encoding::Identity as i32, 1);
        assert_eq!(v2::DigestType::Md5 as i32, 2);
    }

    #[test]
    fn system_properties_field_numbers_survive_a_round_trip() {
        let sp = v2::SystemProperties {
            tag: Some("a".into()),
            message_id: "01ABC".into(),
            receipt_handle: Some("h".into()),
            delivery_attempt: Some(3),
            message_group: Some("g".into()),
            queue_id: 7,
            ..Default::default()
        };
        let bytes = sp.encode_to_vec();
        // field 16 (delivery_attempt), varint wire type: key = 16 << 3 = 128 -> 0x80 0x01
        assert!(bytes.windows(3).any(|w| w == [0x80, 0x01, 3]));
        let back = v2::SystemProperties::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(back, sp);
    }
}
