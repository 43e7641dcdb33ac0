//! Users and ACLs of a replicated broker group, inside the test process: a name server running
//! the replication controller and three members with `--auth`. A user created on the leader is
//! known to the member elected after the leader stops; a follower checks credentials before it
//! says who leads; a user deleted on the new leader is refused there. (Suite 35 does the same
//! with real processes and kill -9.)

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use ferromq_auth::{ClockPolicy, Secret};
use ferromq_proto::admin::{self, admin_client::AdminClient};
use ferromq_proto::v2::{self, messaging_service_client::MessagingServiceClient, Code};
use support::inproc::*;
use support::{code_of, free_port, message};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

const ADMIN_SECRET: &str = "admin-secret-of-the-group";
const APP_SECRET: &str = "app-secret-of-the-group";

/// Signs each call as `user` (none: unsigned).
#[derive(Clone)]
struct Signed(Option<(&'static str, &'static str)>);

impl tonic::service::Interceptor for Signed {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let md = req.metadata_mut();
        md.insert(
            "x-mq-client-id",
            MetadataValue::from_static("auth-replicated"),
        );
        if let Some((ak, sk)) = self.0 {
            let h = ferromq_auth::sign(ak, &Secret::new(sk).expect("secret"), SystemTime::now());
            md.insert(
                "authorization",
                MetadataValue::try_from(h.authorization.as_str()).expect("ascii"),
            );
            md.insert(
                "x-mq-date-time",
                MetadataValue::try_from(h.date_time.as_str()).expect("ascii"),
            );
        }
        Ok(req)
    }
}

const ADMIN: Signed = Signed(Some(("admin", ADMIN_SECRET)));
const APP: Signed = Signed(Some(("app", APP_SECRET)));

async fn admin_at(addr: SocketAddr, s: Signed) -> AdminClient<InterceptedService<Channel, Signed>> {
    let ch = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    AdminClient::with_interceptor(ch, s)
}

async fn send_code(addr: SocketAddr, s: Signed, topic: &str, id: &str) -> Code {
    let ch = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let r = MessagingServiceClient::with_interceptor(ch, s)
        .send_message(v2::SendMessageRequest {
            messages: vec![message(topic, id, id.as_bytes())],
        })
        .await
        .expect("grpc ok")
        .into_inner();
    code_of(&r.status)
}

/// The member that answers the super user's admin calls (the leader, once its term opened and
/// its bootstrap user is in the group), among `members` not in `skip`.
async fn leader(members: &[(usize, SocketAddr)], skip: Option<usize>) -> (usize, SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for &(i, addr) in members.iter().filter(|(i, _)| Some(*i) != skip) {
            let mut c = admin_at(addr, ADMIN).await;
            if c.list_users(admin::ListUsersRequest {}).await.is_ok() {
                return (i, addr);
            }
        }
        assert!(Instant::now() < deadline, "a leader serves the super user");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_acls_survive_a_leader_change_and_every_member_checks_credentials() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ns_addr = format!("127.0.0.1:{}", free_port());
    let peers = vec![ns_addr.clone()];
    let ns = controller_nameserver(&ns_addr, &peers, &tmp.path().join("ns")).await;
    let auth = |cfg: &mut ferromq::config::node::NodeConfig| {
        cfg.auth.enabled = true;
        cfg.auth.super_user = Some(("admin".into(), Secret::new(ADMIN_SECRET).expect("secret")));
        cfg.auth.clock = ClockPolicy::default();
    };
    let mut running = Vec::new();
    let mut members = Vec::new();
    for i in 1..=3u32 {
        let (r, addr) = member_with("ag", i, &peers, &tmp.path().join(format!("m{i}")), auth).await;
        running.push(Some(r));
        members.push((i as usize, addr));
    }

    let (first, at) = leader(&members, None).await;
    let mut root = admin_at(at, ADMIN).await;
    root.create_user(admin::CreateUserRequest {
        name: "app".into(),
        secret: APP_SECRET.into(),
        kind: "normal".into(),
    })
    .await
    .expect("user created on the leader");
    for resource in ["topic:orders", "group:billing"] {
        root.create_acl(admin::PutAclRequest {
            user: "app".into(),
            entry: Some(admin::AclEntry {
                resource: resource.into(),
                actions: vec!["publish".into(), "subscribe".into()],
                effect: "allow".into(),
                sources: vec![],
            }),
        })
        .await
        .expect("ACL stored on the leader");
    }
    root.create_topic(admin::CreateTopicRequest {
        topic: Some(admin::Topic {
            name: "orders".into(),
            queues: 2,
            message_type: admin::TopicType::Normal as i32,
            permission: admin::TopicPermission::ReadWrite as i32,
            ..Default::default()
        }),
    })
    .await
    .expect("topic created");
    assert_eq!(send_code(at, APP, "orders", "before-1").await, Code::Ok);

    // A follower checks credentials before it says who leads, and takes no user change.
    let &(_, follower) = members
        .iter()
        .find(|(i, _)| *i != first)
        .expect("a follower");
    let refused = admin_at(follower, Signed(None))
        .await
        .list_users(admin::ListUsersRequest {})
        .await
        .expect_err("anonymous refused");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    // The follower knows the super user once it applied the group's record of it (it applies
    // what the group confirmed, a moment after the leader did).
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let refused = admin_at(follower, ADMIN)
            .await
            .delete_user(admin::DeleteUserRequest { name: "app".into() })
            .await
            .expect_err("a follower takes no user change");
        if refused.code() != tonic::Code::Unauthenticated || Instant::now() > deadline {
            break refused;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("follows"), "{refused:?}");

    // The leader stops; the member elected next knows the user, its ACL and its secret.
    running[first - 1]
        .take()
        .expect("leader running")
        .stop()
        .await;
    let (second, at) = leader(&members, Some(first)).await;
    assert_ne!(second, first);
    let mut root = admin_at(at, ADMIN).await;
    let users = root
        .list_users(admin::ListUsersRequest {})
        .await
        .expect("users")
        .into_inner()
        .users;
    assert!(users.iter().any(|u| u.name == "app"), "{users:?}");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match send_code(at, APP, "orders", "after-1").await {
            Code::Ok => break,
            c => assert!(Instant::now() < deadline, "send after the failover: {c:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        send_code(at, Signed(Some(("app", "app-secret-wrong"))), "orders", "w").await,
        Code::Unauthorized
    );
    assert_eq!(
        send_code(at, APP, "payments", "p").await,
        Code::Forbidden,
        "the ACL came along"
    );

    // Deleted on the new leader: refused there at once.
    root.delete_user(admin::DeleteUserRequest { name: "app".into() })
        .await
        .expect("user deleted");
    assert_eq!(
        send_code(at, APP, "orders", "after-delete").await,
        Code::Unauthorized
    );

    for r in running.into_iter().flatten() {
        r.stop().await;
    }
    ns.stop().await;
}
