//! Authentication and authorization through a proxy in front of two broker groups, inside the
//! test process: the proxy holds no users and forwards the caller's signed headers; each broker
//! group verifies them and applies the user's policy, so a cluster enforces exactly what a
//! standalone server does (suite 35 proves the standalone server with the official clients).
//! User and ACL changes made through the proxy reach every group. Refused calls store nothing.
//! Remoting clients of the proxy are checked the same way, on the groups, with their own
//! request signature.

mod support;

use std::time::{Duration, Instant, SystemTime};

use ferromq_auth::{ClockPolicy, Secret};
use ferromq_proto::admin::{self, admin_client::AdminClient};
use ferromq_proto::v2::{self, messaging_service_client::MessagingServiceClient, Code};
use support::inproc::*;
use support::{code_of, message, res};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

const ADMIN_SECRET: &str = "admin-secret-of-the-test";
const APP_SECRET: &str = "app-secret-of-the-test";

/// Signs each call as `user` (none: unsigned), with a clock `shift` from now (a replay).
#[derive(Clone)]
struct Signed {
    user: Option<(&'static str, &'static str)>,
    shift: Duration,
}

impl tonic::service::Interceptor for Signed {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let md = req.metadata_mut();
        md.insert("x-mq-client-id", MetadataValue::from_static("auth-test"));
        if let Some((ak, sk)) = self.user {
            let at = SystemTime::now() - self.shift;
            let h = ferromq_auth::sign(ak, &Secret::new(sk).expect("secret"), at);
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

async fn channel(port: u16) -> Channel {
    Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect")
}

fn as_user(user: &'static str, secret: &'static str) -> Signed {
    Signed {
        user: Some((user, secret)),
        shift: Duration::ZERO,
    }
}

async fn admin_as(port: u16, s: Signed) -> AdminClient<InterceptedService<Channel, Signed>> {
    AdminClient::with_interceptor(channel(port).await, s)
}

async fn client_as(
    port: u16,
    s: Signed,
) -> MessagingServiceClient<InterceptedService<Channel, Signed>> {
    MessagingServiceClient::with_interceptor(channel(port).await, s)
}

async fn send_code(port: u16, s: Signed, topic: &str, id: &str) -> Code {
    let r = client_as(port, s)
        .await
        .send_message(v2::SendMessageRequest {
            messages: vec![message(topic, id, id.as_bytes())],
        })
        .await
        .expect("grpc ok")
        .into_inner();
    code_of(&r.status)
}

fn topic(name: &str) -> admin::CreateTopicRequest {
    admin::CreateTopicRequest {
        topic: Some(admin::Topic {
            name: name.into(),
            queues: 2,
            message_type: admin::TopicType::Normal as i32,
            permission: admin::TopicPermission::ReadWrite as i32,
            ..Default::default()
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_forwards_identities_and_every_broker_group_enforces_the_policy() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let secret_file = tmp.path().join("admin.secret");
    std::fs::write(&secret_file, format!("{ADMIN_SECRET}\n")).expect("write secret");
    let (nameserver, ns) = nameserver().await;
    let auth = |cfg: &mut ferromq::config::node::NodeConfig| {
        cfg.auth.enabled = true;
        cfg.auth.super_user = Some(("admin".into(), Secret::new(ADMIN_SECRET).expect("secret")));
        cfg.auth.clock = ClockPolicy::default();
    };
    let g1 = broker_with("g1", &ns, &tmp.path().join("g1"), auth).await;
    let g2 = broker_with("g2", &ns, &tmp.path().join("g2"), auth).await;
    let (proxy, port) = proxy(&ns).await;

    // Without credentials the admin API answers UNAUTHENTICATED; the super user gets through once
    // both groups have reported.
    let mut anonymous = admin_as(
        port,
        Signed {
            user: None,
            shift: Duration::ZERO,
        },
    )
    .await;
    let mut root = admin_as(port, as_user("admin", ADMIN_SECRET)).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while root
        .list_cluster(admin::ListClusterRequest {})
        .await
        .map(|r| r.into_inner().groups.len())
        .unwrap_or(0)
        < 2
    {
        assert!(Instant::now() < deadline, "both groups report");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let refused = anonymous
        .create_topic(topic("orders"))
        .await
        .expect_err("anonymous create refused");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    for t in ["orders", "payments"] {
        root.create_topic(topic(t)).await.expect("topic created");
    }

    // The user and its policy go to both groups.
    root.create_user(admin::CreateUserRequest {
        name: "app".into(),
        secret: APP_SECRET.into(),
        kind: "normal".into(),
    })
    .await
    .expect("user created");
    root.create_acl(admin::PutAclRequest {
        user: "app".into(),
        entry: Some(admin::AclEntry {
            resource: "topic:orders".into(),
            actions: vec!["publish".into()],
            effect: "allow".into(),
            sources: vec![],
        }),
    })
    .await
    .expect("acl stored");
    let users = root
        .list_users(admin::ListUsersRequest {})
        .await
        .expect("users")
        .into_inner()
        .users;
    assert_eq!(users.len(), 2, "{users:?}");
    let mut app_admin = admin_as(port, as_user("app", APP_SECRET)).await;
    let refused = app_admin
        .list_users(admin::ListUsersRequest {})
        .await
        .expect_err("normal user may not list users");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    tokio::time::sleep(Duration::from_millis(1000)).await; // routes of the new topics

    // Sends rotate over both groups: every one of them must accept the forwarded identity.
    for i in 0..6 {
        let id = format!("ok-{i}");
        assert_eq!(
            send_code(port, as_user("app", APP_SECRET), "orders", &id).await,
            Code::Ok,
            "send {id}"
        );
    }
    let app = as_user("app", APP_SECRET);
    assert_eq!(
        send_code(port, app.clone(), "payments", "p1").await,
        Code::Forbidden
    );
    assert_eq!(
        send_code(port, as_user("app", "not-the-app-secret"), "orders", "w1").await,
        Code::Unauthorized
    );
    let replay = Signed {
        shift: Duration::from_secs(600),
        ..app.clone()
    };
    assert_eq!(
        send_code(port, replay, "orders", "r1").await,
        Code::Unauthorized
    );
    assert_eq!(
        send_code(
            port,
            Signed {
                user: None,
                shift: Duration::ZERO
            },
            "orders",
            "n1"
        )
        .await,
        Code::Unauthorized
    );
    // The route lookup is refused too, with the RocketMQ code in the answer.
    let route = client_as(port, app.clone())
        .await
        .query_route(v2::QueryRouteRequest {
            topic: res("payments"),
            endpoints: None,
        })
        .await
        .expect("grpc ok")
        .into_inner();
    assert_eq!(code_of(&route.status), Code::Forbidden);

    // Only the six allowed sends were stored.
    let count = |d: admin::TopicDetail| d.total_messages;
    let orders = root
        .describe_topic(admin::DescribeTopicRequest {
            name: "orders".into(),
        })
        .await
        .expect("describe")
        .into_inner();
    assert_eq!(count(orders), 6);
    let payments = root
        .describe_topic(admin::DescribeTopicRequest {
            name: "payments".into(),
        })
        .await
        .expect("describe")
        .into_inner();
    assert_eq!(count(payments), 0);

    // Deleting the user revokes it on every group at once.
    root.delete_user(admin::DeleteUserRequest { name: "app".into() })
        .await
        .expect("user deleted");
    for i in 0..2 {
        assert_eq!(
            send_code(port, app.clone(), "orders", &format!("gone-{i}")).await,
            Code::Unauthorized
        );
    }

    proxy.stop().await;
    g1.stop().await;
    g2.stop().await;
    nameserver.stop().await;
}

/// A remoting request signed as the classic clients' ACL hook signs it (`None`: unsigned).
fn signed_remoting(
    mut cmd: ferromq_remoting::Command,
    user: Option<(&str, &str)>,
) -> ferromq_remoting::Command {
    if let Some((ak, sk)) = user {
        let secret = Secret::new(sk).expect("secret");
        ferromq_auth::sign_remoting(ak, &secret, &mut cmd.ext_fields, &cmd.body);
    }
    cmd
}

/// Remoting clients of a proxy reach broker groups with `--auth` through the tunnel, and each
/// request is checked there with the client's own signature: unsigned, wrongly signed, tampered
/// and forbidden requests are refused with NO_PERMISSION and store nothing; allowed ones work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remoting_through_a_proxy_is_checked_by_the_broker_groups() {
    use ferromq_remoting::code::{request, response};
    use ferromq_remoting::message::{encode_properties, StoredMessage};
    use support::remoting::{request as req, Remoting};

    let tmp = tempfile::tempdir().expect("tempdir");
    let (nameserver, ns) = nameserver().await;
    let auth = |cfg: &mut ferromq::config::node::NodeConfig| {
        cfg.auth.enabled = true;
        cfg.auth.super_user = Some(("admin".into(), Secret::new(ADMIN_SECRET).expect("secret")));
        cfg.auth.clock = ClockPolicy::default();
    };
    let g1 = broker_with("g1", &ns, &tmp.path().join("g1"), auth).await;
    let (proxy, port, remoting_port) = proxy_with_remoting(&ns, true).await;
    let mut root = admin_as(port, as_user("admin", ADMIN_SECRET)).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while root
        .list_cluster(admin::ListClusterRequest {})
        .await
        .map(|r| r.into_inner().groups.len())
        .unwrap_or(0)
        < 1
    {
        assert!(Instant::now() < deadline, "the group reports");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for t in ["orders", "payments"] {
        root.create_topic(topic(t)).await.expect("topic created");
    }
    root.create_user(admin::CreateUserRequest {
        name: "app".into(),
        secret: APP_SECRET.into(),
        kind: "normal".into(),
    })
    .await
    .expect("user created");
    for (resource, actions) in [
        ("topic:orders", &["publish", "subscribe"][..]),
        ("group:billing", &["subscribe"][..]),
    ] {
        root.create_acl(admin::PutAclRequest {
            user: "app".into(),
            entry: Some(admin::AclEntry {
                resource: resource.into(),
                actions: actions.iter().map(|a| a.to_string()).collect(),
                effect: "allow".into(),
                sources: vec![],
            }),
        })
        .await
        .expect("acl stored");
    }

    let send = |topic: &str, id: &str| {
        let props = encode_properties(
            &[("UNIQ_KEY".to_string(), id.to_string())]
                .into_iter()
                .collect(),
        );
        req(
            request::SEND_MESSAGE_V2,
            &[
                ("a", "pg"),
                ("b", topic),
                ("c", "TBW102"),
                ("d", "4"),
                ("e", "0"),
                ("f", "0"),
                ("g", "0"),
                ("h", "0"),
                ("i", &props),
                ("n", "g1"),
            ],
        )
        .with_body(id.as_bytes().to_vec())
    };
    let app = Some(("app", APP_SECRET));
    let mut r = Remoting::connect(remoting_port).await;
    let refused = |a: &ferromq_remoting::Command, what: &str| {
        assert_eq!(a.code, response::NO_PERMISSION, "{what}: {:?}", a.remark);
    };
    let a = r.call(send("orders", "unsigned")).await;
    refused(&a, "unsigned send");
    assert!(
        a.remark.as_deref().unwrap_or("").contains("AccessKey"),
        "{:?}",
        a.remark
    );
    refused(
        &r.call(signed_remoting(
            send("orders", "wrong"),
            Some(("app", "not-the-secret")),
        ))
        .await,
        "wrong secret",
    );
    let mut tampered = signed_remoting(send("orders", "tampered"), app);
    tampered.body = b"something else".to_vec().into();
    refused(&r.call(tampered).await, "tampered body");
    refused(
        &r.call(signed_remoting(send("payments", "forbidden"), app))
            .await,
        "topic the policy does not cover",
    );
    let create = req(
        request::UPDATE_AND_CREATE_TOPIC,
        &[
            ("topic", "by-app"),
            ("defaultTopic", "TBW102"),
            ("readQueueNums", "2"),
            ("writeQueueNums", "2"),
            ("perm", "6"),
            ("topicFilterType", "SINGLE_TAG"),
            ("order", "false"),
        ],
    );
    refused(
        &r.call(signed_remoting(create.clone(), app)).await,
        "a normal user creating a topic",
    );
    let a = r.call(signed_remoting(send("orders", "ok-1"), app)).await;
    assert_eq!(a.code, response::SUCCESS, "allowed send: {:?}", a.remark);

    let pull = |group: &str| {
        req(
            request::PULL_MESSAGE,
            &[
                ("consumerGroup", group),
                ("topic", "orders"),
                ("queueId", "0"),
                ("queueOffset", "0"),
                ("maxMsgNums", "32"),
                ("sysFlag", "0"),
                ("commitOffset", "0"),
                ("suspendTimeoutMillis", "0"),
                ("subVersion", "0"),
                ("bname", "g1"),
            ],
        )
    };
    refused(
        &r.call(signed_remoting(pull("other"), app)).await,
        "pull with a group the policy does not cover",
    );
    // A consumer joins its group with a heartbeat, which names the group in its body.
    let heartbeat = |group: &str| {
        use ferromq_remoting::body::{self, ConsumerData, HeartbeatData, SubscriptionData};
        let hb = HeartbeatData {
            client_id: "127.0.0.1@auth".into(),
            consumer_data_set: vec![ConsumerData {
                group_name: group.into(),
                consume_type: "CONSUME_PASSIVELY".into(),
                message_model: "CLUSTERING".into(),
                subscription_data_set: vec![SubscriptionData {
                    topic: "orders".into(),
                    sub_string: "*".into(),
                    expression_type: "TAG".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        req(request::HEART_BEAT, &[]).with_body(body::encode(&hb))
    };
    refused(
        &r.call(signed_remoting(heartbeat("other"), app)).await,
        "heartbeat of a group the policy does not cover",
    );
    let a = r.call(signed_remoting(heartbeat("billing"), app)).await;
    assert_eq!(a.code, response::SUCCESS, "heartbeat: {:?}", a.remark);
    let a = r.call(signed_remoting(pull("billing"), app)).await;
    assert_eq!(a.code, response::SUCCESS, "allowed pull: {:?}", a.remark);
    let got = StoredMessage::decode_all(&a.body, true).expect("messages");
    let ids: Vec<&str> = got.iter().filter_map(|m| m.uniq_key()).collect();
    assert_eq!(ids, ["ok-1"], "only the allowed send was stored");

    // The super user may administer through the same port.
    let a = r
        .call(signed_remoting(create, Some(("admin", ADMIN_SECRET))))
        .await;
    assert_eq!(
        a.code,
        response::SUCCESS,
        "super user create: {:?}",
        a.remark
    );

    let count = |d: admin::TopicDetail| d.total_messages;
    for (t, want) in [("orders", 1), ("payments", 0)] {
        let d = root
            .describe_topic(admin::DescribeTopicRequest { name: t.into() })
            .await
            .expect("describe")
            .into_inner();
        assert_eq!(count(d), want, "{t}");
    }

    proxy.stop().await;
    g1.stop().await;
    nameserver.stop().await;
}
