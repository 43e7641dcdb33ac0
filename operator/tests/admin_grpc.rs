//! The operator's gRPC admin client ([`GrpcAdmin`]) against a real `ferromq standalone`.
//!
//! `#[ignore]`d in a plain `cargo test`: `tests/suites/60-operator.sh` builds the `ferromq`
//! binary, sets `FERROMQ_TEST_FERROMQ_BIN` to it and runs them with `--ignored`. Each test
//! starts its own server on free loopback ports with its own data directory.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use ferromq_auth::{Effect, PolicyEntry, Secret, UserKind};
use ferromq_proto::v2;
use tonic::service::Interceptor;
use tonic::Code;

use ferromq_operator::admin::{AdminError, ClusterAdmin, Credentials, DrainState, GrpcAdmin, Sign};
use ferromq_operator::crd::{GroupReplicationStatus, MessageType, Permission, TopicClusterState};

/// A running `ferromq standalone`, killed when dropped.
struct Standalone {
    child: Child,
    address: String,
    _data: tempfile::TempDir,
}

impl Drop for Standalone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts a standalone server (with `extra` flags) and waits until its admin API answers.
async fn standalone(admin: &GrpcAdmin, extra: &[&std::ffi::OsStr]) -> Result<Standalone> {
    standalone_on(admin, format!("127.0.0.1:{}", free_port()?), extra).await
}

/// [`standalone`] on a chosen `address` (so a test can register TLS for it first).
async fn standalone_on(
    admin: &GrpcAdmin,
    address: String,
    extra: &[&std::ffi::OsStr],
) -> Result<Standalone> {
    let bin = std::env::var("FERROMQ_TEST_FERROMQ_BIN")
        .context("FERROMQ_TEST_FERROMQ_BIN is not set: run tests/suites/60-operator.sh")?;
    let data = tempfile::tempdir()?;
    let child = Command::new(&bin)
        .arg("standalone")
        .arg("--data-dir")
        .arg(data.path())
        .arg("--grpc-addr")
        .arg(&address)
        .arg("--http-addr")
        .arg(format!("127.0.0.1:{}", free_port()?))
        // The tests run side by side: no shared default remoting port.
        .args(["--remoting-addr", "off"])
        .args(extra)
        // Its warnings and errors only, next to the test's output.
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {bin}"))?;
    let server = Standalone {
        child,
        address,
        _data: data,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match admin.describe_topic(&server.address, "probe").await {
            Err(AdminError::Unreachable { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            // Any answer, a refusal of an unsigned call to a server with --auth included.
            Ok(_) | Err(AdminError::Status { .. }) => return Ok(server),
            Err(e) => bail!("standalone at {} never answered: {e}", server.address),
        }
    }
}

/// Checks that `answer` is the cluster refusing `call` with `code` and a message that says
/// `words`, reported as `AdminApiRefused`.
fn refused<T: std::fmt::Debug>(
    answer: Result<T, AdminError>,
    call: &str,
    code: Code,
    words: &str,
) -> Result<()> {
    let reason = answer.as_ref().err().map(AdminError::reason);
    match answer {
        Err(AdminError::Status {
            call: c,
            code: got,
            message,
        }) if c == call && got == code && message.contains(words) => {
            assert_eq!(reason, Some("AdminApiRefused"));
            Ok(())
        }
        other => bail!("expected {call} refused with {code:?} saying {words:?}, got {other:?}"),
    }
}

fn topic(name: &str, queues: i32, mt: MessageType, p: Permission) -> TopicClusterState {
    TopicClusterState {
        name: name.into(),
        queues,
        message_type: mt,
        permission: p,
        retention: None,
    }
}

#[tokio::test]
#[ignore = "needs the ferromq binary; run by tests/suites/60-operator.sh"]
async fn topics_are_created_updated_refused_and_deleted_on_a_real_server() -> Result<()> {
    let admin = GrpcAdmin::default();
    let server = standalone(&admin, &[]).await?;
    let at = server.address.as_str();

    assert_eq!(admin.describe_topic(at, "Orders_EU").await?, None);
    let fifo = topic("Orders_EU", 4, MessageType::Fifo, Permission::ReadWrite);
    assert!(admin
        .groups_without_topic(at, "Orders_EU")
        .await?
        .is_empty());
    admin.upsert_topic(at, &fifo).await?;
    assert_eq!(admin.describe_topic(at, "Orders_EU").await?, Some(fifo));
    assert!(
        admin
            .groups_without_topic(at, "Orders_EU")
            .await?
            .is_empty(),
        "the only group holds the topic"
    );

    let grown = topic("Orders_EU", 8, MessageType::Fifo, Permission::ReadOnly);
    admin.upsert_topic(at, &grown).await?;
    assert_eq!(
        admin.describe_topic(at, "Orders_EU").await?,
        Some(grown.clone())
    );

    // The cluster's refusals arrive with their status code and the server's own message.
    let shrunk = topic("Orders_EU", 2, MessageType::Fifo, Permission::ReadOnly);
    let answer = admin.upsert_topic(at, &shrunk).await;
    refused(
        answer,
        "UpdateTopic",
        Code::InvalidArgument,
        "can only grow",
    )?;
    assert_eq!(
        admin.describe_topic(at, "Orders_EU").await?,
        Some(grown),
        "a refused update changes nothing"
    );
    let reserved = topic("rmq_sys_x", 1, MessageType::Normal, Permission::ReadWrite);
    let answer = admin.upsert_topic(at, &reserved).await;
    refused(answer, "CreateTopic", Code::InvalidArgument, "reserved")?;

    for mt in [
        MessageType::Normal,
        MessageType::Delay,
        MessageType::Transaction,
        MessageType::Priority,
    ] {
        let t = topic(&format!("t_{}", mt.as_str()), 1, mt, Permission::WriteOnly);
        admin.upsert_topic(at, &t).await?;
        assert_eq!(admin.describe_topic(at, &t.name).await?, Some(t));
    }

    // A retention of its own, read back in its largest unit, then back to the broker's;
    // one above the broker's (72h by default) is refused and changes nothing.
    let mut kept = topic("Kept", 2, MessageType::Normal, Permission::ReadWrite);
    kept.retention = Some("24h".into());
    admin.upsert_topic(at, &kept).await?;
    let held = admin.describe_topic(at, "Kept").await?.context("Kept")?;
    assert_eq!(held.retention.as_deref(), Some("1d"));
    kept.retention = Some("90m".into());
    admin.upsert_topic(at, &kept).await?;
    assert_eq!(admin.describe_topic(at, "Kept").await?, Some(kept.clone()));
    let mut too_long = kept.clone();
    too_long.retention = Some("30d".into());
    let answer = admin.upsert_topic(at, &too_long).await;
    refused(
        answer,
        "UpdateTopic",
        Code::InvalidArgument,
        "longer than this broker's retention",
    )?;
    assert_eq!(admin.describe_topic(at, "Kept").await?, Some(kept.clone()));
    kept.retention = None;
    admin.upsert_topic(at, &kept).await?;
    assert_eq!(admin.describe_topic(at, "Kept").await?, Some(kept));

    admin.delete_topic(at, "Orders_EU").await?;
    assert_eq!(admin.describe_topic(at, "Orders_EU").await?, None);
    admin
        .delete_topic(at, "Orders_EU")
        .await
        .context("deleting a missing topic succeeds")?;
    Ok(())
}

#[tokio::test]
#[ignore = "needs the ferromq binary; run by tests/suites/60-operator.sh"]
async fn drains_report_progress_and_a_stopped_server_is_unreachable() -> Result<()> {
    let admin = GrpcAdmin::default();
    let mut server = standalone(&admin, &[]).await?;
    let at = server.address.clone();

    // A standalone server is the one group "standalone"; it holds nothing unsettled.
    assert_eq!(
        admin.drain_group(&at, "standalone").await?,
        DrainState::Drained
    );
    let answer = admin.drain_group(&at, "elsewhere").await;
    refused(answer, "SetGroupState", Code::NotFound, "elsewhere")?;
    // ListCluster answers; the standalone group is unreplicated, so no replication state.
    assert_eq!(admin.replication(&at).await?, vec![]);

    server.child.kill()?;
    server.child.wait()?;
    match admin.describe_topic(&at, "t").await {
        Err(e @ AdminError::Unreachable { .. }) => {
            assert_eq!(e.reason(), "AdminApiUnavailable")
        }
        other => bail!("a stopped server: {other:?}"),
    }
    Ok(())
}

/// A self-signed certificate and key for localhost, made with the openssl CLI (the suite
/// requires it).
fn self_signed(dir: &std::path::Path) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .context("running openssl")?;
    if !out.status.success() {
        bail!("openssl: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok((cert, key))
}

#[tokio::test]
#[ignore = "needs the ferromq binary and openssl; run by tests/suites/60-operator.sh"]
async fn a_server_with_tls_on_is_reached_like_the_cli_reaches_it() -> Result<()> {
    // `--tls-cert` adds TLS to the gRPC port and keeps plaintext there; the operator, like
    // `ferromq admin`, speaks plaintext HTTP/2 to a bare host:port.
    let dir = tempfile::tempdir()?;
    let (cert, key) = self_signed(dir.path())?;
    let admin = GrpcAdmin::default();
    let flags = [
        "--tls-cert".as_ref(),
        cert.as_os_str(),
        "--tls-key".as_ref(),
        key.as_os_str(),
    ];
    let server = standalone(&admin, &flags).await?;
    let t = topic("secure", 2, MessageType::Normal, Permission::ReadWrite);
    admin.upsert_topic(&server.address, &t).await?;
    assert_eq!(
        admin.describe_topic(&server.address, "secure").await?,
        Some(t)
    );
    Ok(())
}

/// Child processes killed when dropped (the replicated cluster below).
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Processes {
    fn spawn(&mut self, args: &[String]) -> Result<()> {
        let bin = std::env::var("FERROMQ_TEST_FERROMQ_BIN")
            .context("FERROMQ_TEST_FERROMQ_BIN is not set: run tests/suites/60-operator.sh")?;
        let child = Command::new(&bin)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {bin} {}", args.join(" ")))?;
        self.0.push(child);
        Ok(())
    }
}

#[tokio::test]
#[ignore = "needs the ferromq binary; run by tests/suites/60-operator.sh"]
async fn replication_state_and_switchover_on_a_real_replicated_group() -> Result<()> {
    let admin = GrpcAdmin::default();
    let dir = tempfile::tempdir()?;
    let path = |name: &str| dir.path().join(name).display().to_string();
    let loopback = || -> Result<String> { Ok(format!("127.0.0.1:{}", free_port()?)) };
    let mut procs = Processes(Vec::new());
    // One name server running a one-peer replication controller, two members of group g1, and
    // a proxy: the operator's admin calls go to the proxy, as in a cluster.
    let ns = loopback()?;
    procs.spawn(&[
        "nameserver".into(),
        "--addr".into(),
        ns.clone(),
        "--http-addr".into(),
        loopback()?,
        "--controller-peers".into(),
        ns.clone(),
        "--data-dir".into(),
        path("ns"),
    ])?;
    for id in 1..=2 {
        procs.spawn(&[
            "broker".into(),
            "--group".into(),
            "g1".into(),
            "--replica-id".into(),
            id.to_string(),
            "--nameservers".into(),
            ns.clone(),
            "--addr".into(),
            loopback()?,
            "--http-addr".into(),
            loopback()?,
            "--data-dir".into(),
            path(&format!("g1-{id}")),
        ])?;
    }
    let proxy = loopback()?;
    procs.spawn(&[
        "proxy".into(),
        "--nameservers".into(),
        ns.clone(),
        "--grpc-addr".into(),
        proxy.clone(),
        "--http-addr".into(),
        loopback()?,
    ])?;

    // Polls ListCluster until g1 satisfies `done`.
    let wait_for = |what: &'static str, done: fn(&GroupReplicationStatus) -> bool| {
        let (admin, proxy) = (&admin, proxy.clone());
        async move {
            let deadline = Instant::now() + Duration::from_secs(90);
            loop {
                let seen = admin.replication(&proxy).await;
                if let Ok(groups) = &seen {
                    if let Some(g) = groups.iter().find(|g| g.group == "g1" && done(g)) {
                        return Ok::<_, anyhow::Error>(g.clone());
                    }
                }
                if Instant::now() > deadline {
                    bail!("g1 never {what}; last answer: {seen:?}");
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    };
    let g = wait_for("had a leader and both members in sync", |g| {
        g.leader.is_some() && g.in_sync == 2
    })
    .await?;
    let leader = g.leader.unwrap_or_default();
    let mut in_sync = g.in_sync_replicas.clone();
    in_sync.sort_unstable();
    assert_eq!(in_sync, vec![1, 2]);
    assert!(g.epoch >= 1, "{g:?}");

    let to = 3 - leader;
    let (new_leader, epoch) = admin.switchover(&proxy, "g1", to).await?;
    assert_eq!(new_leader, to);
    assert!(epoch > g.epoch, "epoch {epoch} after {}", g.epoch);
    let after = match to {
        1 => wait_for("showed replica 1 leading", |g| g.leader == Some(1)).await?,
        _ => wait_for("showed replica 2 leading", |g| g.leader == Some(2)).await?,
    };
    assert_eq!(after.epoch, epoch);

    let answer = admin.switchover(&proxy, "nowhere", 1).await;
    assert!(
        matches!(
            &answer,
            Err(AdminError::Status {
                call: "Switchover",
                ..
            })
        ),
        "{answer:?}"
    );
    Ok(())
}

/// Sends one message to `topic` as `credentials` (none: unsigned) through the RocketMQ 5 API,
/// signed the way the official clients sign; answers the RocketMQ status code.
async fn send_code(at: &str, credentials: Option<Credentials>, topic: &str) -> Result<i32> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{at}"))?
        .connect()
        .await?;
    let mut sign = Sign::new(credentials);
    let mut client = v2::messaging_service_client::MessagingServiceClient::with_interceptor(
        channel,
        move |req| {
            let mut req = sign.call(req)?;
            req.metadata_mut().insert(
                "x-mq-client-id",
                tonic::metadata::MetadataValue::from_static("operator-admin-grpc-test"),
            );
            Ok(req)
        },
    );
    let answer = client
        .send_message(v2::SendMessageRequest {
            messages: vec![v2::Message {
                topic: Some(v2::Resource {
                    resource_namespace: String::new(),
                    name: topic.into(),
                }),
                user_properties: Default::default(),
                system_properties: Some(v2::SystemProperties {
                    message_id: format!("operator-test-{topic}"),
                    body_encoding: v2::Encoding::Identity as i32,
                    message_type: v2::MessageType::Normal as i32,
                    born_host: "operator-test".into(),
                    ..Default::default()
                }),
                body: b"hello".to_vec().into(),
            }],
        })
        .await?
        .into_inner();
    Ok(answer.status.map_or(0, |s| s.code))
}

const OK: i32 = v2::Code::Ok as i32;
const UNAUTHORIZED: i32 = v2::Code::Unauthorized as i32;
const FORBIDDEN: i32 = v2::Code::Forbidden as i32;

#[tokio::test]
#[ignore = "needs the ferromq binary; run by tests/suites/60-operator.sh"]
async fn users_and_policies_on_a_real_server_with_authentication() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let su_file = dir.path().join("admin.secret");
    std::fs::write(&su_file, "operator-test-admin-secret\n")?;
    let admin = GrpcAdmin::default();
    let server = standalone(
        &admin,
        &[
            "--auth".as_ref(),
            "--auth-super-user".as_ref(),
            "admin".as_ref(),
            "--auth-super-secret-file".as_ref(),
            su_file.as_os_str(),
        ],
    )
    .await?;
    let at = server.address.as_str();

    // Unsigned admin calls are refused; signed as the super user they pass.
    refused(
        admin.describe_user(at, "app").await,
        "DescribeUser",
        Code::Unauthenticated,
        "",
    )?;
    admin.use_credentials(
        at,
        Some(Credentials {
            access_key: "admin".into(),
            secret: Secret::new("operator-test-admin-secret")?,
        }),
    );
    assert_eq!(admin.describe_user(at, "app").await?, None);
    assert_eq!(
        admin.describe_user(at, "admin").await?,
        Some(UserKind::Super)
    );

    let key = Secret::new("app-secret-of-the-test")?;
    let app = || {
        Some(Credentials {
            access_key: "app".into(),
            secret: key.clone(),
        })
    };
    admin.upsert_user(at, "app", &key, UserKind::Normal).await?;
    assert_eq!(
        admin.describe_user(at, "app").await?,
        Some(UserKind::Normal)
    );
    admin
        .upsert_user(at, "app", &key, UserKind::Normal)
        .await
        .context("upserting an existing user updates it")?;
    assert_eq!(admin.describe_acl(at, "app").await?, vec![]);
    let allow = PolicyEntry::parse("topic:allowed-*", "publish", "allow", &[])?;
    let deny = PolicyEntry::parse("topic:allowed-secret", "publish", "deny", &[])?;
    admin.put_acl(at, "app", &allow).await?;
    admin.put_acl(at, "app", &deny).await?;
    assert_eq!(
        admin.describe_acl(at, "app").await?,
        vec![allow.clone(), deny.clone()]
    );
    // Topic calls are signed too.
    for t in ["allowed-1", "allowed-secret", "other"] {
        admin
            .upsert_topic(at, &topic(t, 1, MessageType::Normal, Permission::ReadWrite))
            .await?;
    }

    // What the policy says is what the user may do.
    assert_eq!(send_code(at, app(), "allowed-1").await?, OK);
    assert_eq!(send_code(at, app(), "other").await?, FORBIDDEN);
    assert_eq!(
        send_code(at, app(), "allowed-secret").await?,
        FORBIDDEN,
        "deny wins"
    );
    assert_eq!(send_code(at, None, "allowed-1").await?, UNAUTHORIZED);

    admin
        .delete_acl(at, "app", &deny.resource, Effect::Deny)
        .await?;
    admin
        .delete_acl(at, "app", &deny.resource, Effect::Deny)
        .await
        .context("deleting a missing entry succeeds")?;
    assert_eq!(send_code(at, app(), "allowed-secret").await?, OK);

    // Deleting the user revokes its credentials at once.
    admin.delete_user(at, "app").await?;
    admin
        .delete_user(at, "app")
        .await
        .context("deleting a missing user succeeds")?;
    assert_eq!(send_code(at, app(), "allowed-1").await?, UNAUTHORIZED);
    Ok(())
}

/// The admin client with internal TLS: it dials TLS, verifies the server against the cluster
/// CA (here one made by the operator's own code, as is the server's certificate), and fails
/// rather than fall back when the server is not that CA's or speaks no TLS.
#[tokio::test]
#[ignore = "needs the ferromq binary; run by tests/suites/60-operator.sh"]
async fn admin_calls_dial_tls_verified_against_the_cluster_ca() -> Result<()> {
    use ferromq_operator::pki::{unix_now, ClusterCa};
    let now = unix_now();
    let ca = ClusterCa::generate("FerroMQ test cluster CA", now)?;
    let (cert, key) = ca.issue(&["demo.prod.svc".to_string(), "127.0.0.1".to_string()], now)?;
    let dir = tempfile::tempdir()?;
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_path, cert)?;
    std::fs::write(&key_path, key)?;

    let admin = GrpcAdmin::default();
    let address = format!("127.0.0.1:{}", free_port()?);
    admin.use_tls(&address, Some(ca.bundle_pem()));
    let server = standalone_on(
        &admin,
        address,
        &[
            "--tls".as_ref(),
            "required".as_ref(),
            "--tls-cert".as_ref(),
            cert_path.as_os_str(),
            "--tls-key".as_ref(),
            key_path.as_os_str(),
        ],
    )
    .await?;
    let at = server.address.as_str();
    let t = topic("Over_TLS", 2, MessageType::Normal, Permission::ReadWrite);
    admin.upsert_topic(at, &t).await?;
    assert_eq!(admin.describe_topic(at, "Over_TLS").await?, Some(t));

    // Plaintext to a TLS-only port: refused, reported as unreachable.
    let plain = GrpcAdmin::default();
    match plain.describe_topic(at, "Over_TLS").await {
        Err(AdminError::Unreachable { .. }) => {}
        other => bail!("plaintext to a TLS-only server: {other:?}"),
    }
    // Another CA: the handshake fails on the certificate, nothing is sent.
    let stranger = GrpcAdmin::default();
    let other = ClusterCa::generate("another CA", now)?;
    stranger.use_tls(at, Some(other.bundle_pem()));
    match stranger.describe_topic(at, "Over_TLS").await {
        Err(AdminError::Unreachable { detail }) => assert!(
            detail.to_lowercase().contains("certificate") || detail.contains("UnknownIssuer"),
            "{detail}"
        ),
        other => bail!("a server of another CA was trusted: {other:?}"),
    }
    // Turning TLS off for the endpoint dials plaintext again (and is refused here).
    admin.use_tls(at, None);
    assert!(matches!(
        admin.describe_topic(at, "Over_TLS").await,
        Err(AdminError::Unreachable { .. })
    ));
    Ok(())
}
