//! TLS on the internal links, with the real `ferromq` binary on loopback: a test CA (rcgen)
//! signs every node's certificate, every process runs `--tls required` with `--tls-ca`, and
//! - name server, broker and proxy work end to end (FerroMQ's own `send`, `consume` and
//!   `admin` commands with `--tls-ca` through the proxy), brokers reaching the name server by
//!   DNS name (`localhost`) and the proxy reaching the broker by IP address;
//! - a broker given a CA bundle that did not sign the name server's certificate never
//!   registers, and says why in its log, once;
//! - a plaintext dial to a `--tls required` internal port is refused;
//! - a replicated group (three name servers running the controller over TLS Raft, three
//!   members replicating over TLS) keeps every acknowledged message across a kill -9 of its
//!   leader.

mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ferromq_proto::v2::Code;
use support::{free_port, http_get, BIN};

/// A CA and the certificates it issues, as PEM files in a directory.
struct Pki {
    dir: PathBuf,
    ca: rcgen::Issuer<'static, rcgen::KeyPair>,
    bundle: PathBuf,
}

impl Pki {
    fn new(dir: &Path, name: &str) -> Pki {
        std::fs::create_dir_all(dir).expect("pki dir");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().expect("ca key");
        let cert = params.self_signed(&key).expect("ca certificate");
        let bundle = dir.join("ca.pem");
        std::fs::write(&bundle, cert.pem()).expect("write ca.pem");
        Pki {
            dir: dir.to_path_buf(),
            ca: rcgen::Issuer::new(params, key),
            bundle,
        }
    }

    /// A server certificate for `names` (DNS names or IP addresses), and its key.
    fn issue(&self, stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, stem);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.ca).expect("sign");
        let (c, k) = (
            self.dir.join(format!("{stem}.pem")),
            self.dir.join(format!("{stem}-key.pem")),
        );
        std::fs::write(&c, cert.pem()).expect("write cert");
        std::fs::write(&k, key.serialize_pem()).expect("write key");
        (c, k)
    }
}

/// One `ferromq` process; killed (-9) when dropped.
struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
    http_port: u16,
}

impl Proc {
    fn start(dir: &Path, name: &str, http_port: u16, args: &[String]) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut all = args.to_vec();
        all.extend(["--http-addr".into(), format!("127.0.0.1:{http_port}")]);
        let child = Command::new(BIN)
            .args(&all)
            .env("FERROMQ_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn ferromq");
        Proc {
            name: name.into(),
            child: Some(child),
            log,
            http_port,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn ready(&self) -> bool {
        http_get(self.http_port, "/readyz").is_some_and(|(code, _)| code == 200)
    }

    fn wait_ready(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.ready() {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(Child::try_wait) {
                panic!("{} exited with {st}: {}", self.name, self.log());
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready within {within:?}: {}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The value of the first sample of family `name` whose labels contain `label` ("" for
    /// any).
    fn metric(&self, name: &str, label: &str) -> Option<f64> {
        let (_, text) = http_get(self.http_port, "/metrics")?;
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?;
            if !(rest.starts_with('{') || rest.starts_with(' ')) || !rest.contains(label) {
                return None;
            }
            rest.split_whitespace().last()?.parse().ok()
        })
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// `--tls required --tls-cert C --tls-key K --tls-ca CA`.
fn tls_flags(cert: &Path, key: &Path, ca: &Path) -> Vec<String> {
    s(&[
        "--tls",
        "required",
        "--tls-cert",
        &path(cert),
        "--tls-key",
        &path(key),
        "--tls-ca",
        &path(ca),
    ])
}

/// Runs `ferromq ARGS`, feeding `stdin`.
fn ferromq(args: &[String], stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ferromq");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("ferromq output")
}

fn text(o: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `ferromq admin --server SERVER --tls-ca CA ARGS -o json`, until it succeeds and `until`
/// holds, within 30 s.
fn admin_until(
    server: &str,
    ca: &Path,
    args: &[&str],
    until: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut a = s(&["admin", "--server", server, "--tls-ca", &path(ca)]);
    a.extend(s(args));
    a.extend(s(&["-o", "json"]));
    loop {
        let out = ferromq(&a, "");
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
            if until(&v) {
                return v;
            }
        }
        assert!(Instant::now() < deadline, "{a:?}: {}", text(&out));
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn groups(v: &serde_json::Value) -> Vec<String> {
    let list = v
        .get("groups")
        .and_then(|g| g.as_array())
        .or_else(|| v.as_array())
        .cloned()
        .unwrap_or_default();
    list.iter()
        .filter_map(|g| {
            g.get("name")
                .or_else(|| g.get("group"))
                .and_then(|n| n.as_str())
                .map(str::to_string)
        })
        .collect()
}

/// Waits until `p`'s log contains `needle` (30 s).
fn wait_log(p: &Proc, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = p.log();
        if log.contains(needle) {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "{} never logged {needle:?}: {log}",
            p.name
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn internal_links_speak_tls_and_refuse_strangers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let pki = Pki::new(&dir.join("pki"), "FerroMQ test cluster CA");
    let stranger = Pki::new(&dir.join("other"), "Some other CA");
    // One certificate for every node: a DNS name and an IP address.
    let (cert, key) = pki.issue("node", &["localhost", "127.0.0.1"]);
    let tls = tls_flags(&cert, &key, &pki.bundle);

    let ns_port = free_port();
    let mut args = s(&["nameserver", "--addr", &format!("127.0.0.1:{ns_port}")]);
    args.extend(tls.clone());
    let mut ns = Proc::start(dir, "ns", free_port(), &args);
    ns.wait_ready(Duration::from_secs(30));
    // Brokers and the proxy reach the name server by DNS name, the proxy reaches the broker
    // by the IP address it advertises.
    let ns_addr = format!("localhost:{ns_port}");

    let broker_port = free_port();
    let broker_addr = format!("127.0.0.1:{broker_port}");
    let mut args = s(&[
        "broker",
        "--group",
        "g1",
        "--addr",
        &broker_addr,
        "--nameservers",
        &ns_addr,
        "--data-dir",
        &path(&dir.join("g1")),
        "--segment-size",
        "8MiB",
    ]);
    args.extend(tls.clone());
    let mut g1 = Proc::start(dir, "g1", free_port(), &args);
    g1.wait_ready(Duration::from_secs(30));

    let proxy_port = free_port();
    let proxy_addr = format!("127.0.0.1:{proxy_port}");
    let mut args = s(&[
        "proxy",
        "--grpc-addr",
        &proxy_addr,
        "--nameservers",
        &ns_addr,
        "--remoting-addr",
        "off",
        "--route-refresh",
        "300ms",
    ]);
    args.extend(tls.clone());
    let mut proxy = Proc::start(dir, "proxy", free_port(), &args);
    // Ready once it holds a live broker group: broker -> name server -> proxy, all in TLS.
    proxy.wait_ready(Duration::from_secs(30));

    // (a) End to end through the proxy with FerroMQ's own client, verifying against the CA.
    admin_until(&proxy_addr, &pki.bundle, &["cluster", "list"], |v| {
        groups(v) == ["g1"]
    });
    let out = ferromq(
        &s(&[
            "admin",
            "--server",
            &proxy_addr,
            "--tls-ca",
            &path(&pki.bundle),
            "topic",
            "create",
            "t",
            "--queues",
            "2",
        ]),
        "",
    );
    assert!(out.status.success(), "topic create: {}", text(&out));
    let bodies: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    let send = s(&[
        "send",
        "--server",
        &proxy_addr,
        "--tls-ca",
        &path(&pki.bundle),
        "-t",
        "t",
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // Until the proxy's routes hold the new topic.
        let out = ferromq(&send, &format!("{}\n", bodies.join("\n")));
        if out.status.success() {
            assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 20);
            break;
        }
        assert!(Instant::now() < deadline, "send: {}", text(&out));
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = ferromq(
        &s(&[
            "consume",
            "--server",
            &format!("https://{proxy_addr}"),
            "--tls-ca",
            &path(&pki.bundle),
            "-t",
            "t",
            "-g",
            "c",
            "--max-messages",
            "20",
            "--timeout",
            "15s",
        ]),
        "",
    );
    assert!(out.status.success(), "consume: {}", text(&out));
    let got: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(got, bodies.iter().cloned().collect::<BTreeSet<_>>());
    for p in [&g1, &proxy] {
        assert!(
            p.log().contains("links=TLS verified against"),
            "{} logs its TLS links: {}",
            p.name,
            p.log()
        );
    }

    // The CLI against the broker's internal port: verified with the CA; `https://` without
    // it is encrypted, unverified and says so; another CA's bundle is refused, naming why.
    let list = |server: &str, ca: Option<&Path>| {
        let mut a = s(&["admin", "--server", server, "cluster", "list", "-o", "json"]);
        if let Some(ca) = ca {
            a.extend(s(&["--tls-ca", &path(ca)]));
        }
        ferromq(&a, "")
    };
    let out = list(&broker_addr, Some(&pki.bundle));
    assert!(out.status.success(), "{}", text(&out));
    let out = list(&format!("https://{broker_addr}"), None);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not verifying the certificate"),
        "{}",
        text(&out)
    );
    let out = list(&broker_addr, Some(&stranger.bundle));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("certificate not signed by --tls-ca"),
        "{}",
        text(&out)
    );
    // (c) Plaintext to `--tls required` internal ports: the broker's and the name server's.
    let out = list(&broker_addr, None);
    assert!(
        !out.status.success(),
        "plaintext admin call answered: {}",
        text(&out)
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let plain = rt.block_on(async {
        use ferromq_proto::cluster::{nameserver_client::NameserverClient, GetClusterRequest};
        match NameserverClient::connect(format!("http://127.0.0.1:{ns_port}")).await {
            Ok(mut c) => c
                .get_cluster(GetClusterRequest {})
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    });
    assert!(plain.is_err(), "a plaintext GetCluster was answered");

    // (b) A broker trusting another CA cannot register, and says why once.
    let mut args = s(&[
        "broker",
        "--group",
        "g2",
        "--addr",
        &format!("127.0.0.1:{}", free_port()),
        "--nameservers",
        &ns_addr,
        "--data-dir",
        &path(&dir.join("g2")),
        "--segment-size",
        "8MiB",
    ]);
    args.extend(tls_flags(&cert, &key, &stranger.bundle));
    let g2 = Proc::start(dir, "g2", free_port(), &args);
    let log = wait_log(&g2, "certificate not signed by --tls-ca");
    assert!(
        log.contains(&ns_addr),
        "the log names the name server: {log}"
    );
    if let Some(line) = log.lines().find(|l| l.contains("--tls-ca")) {
        eprintln!("g2 says: {line}");
    }
    // Several heartbeat rounds later: still one warning, and g2 is not in the routes.
    std::thread::sleep(Duration::from_secs(3));
    let warnings = g2.log().matches("name server unreachable").count();
    assert_eq!(warnings, 1, "one warning per outage: {}", g2.log());
    let v = admin_until(&proxy_addr, &pki.bundle, &["cluster", "list"], |_| true);
    assert_eq!(groups(&v), ["g1"], "{v}");

    // A broker that trusts the cluster CA (so it registers) but serves another CA's
    // certificate: the proxy refuses to talk to it, and says so once however often it tries
    // (every consumer heartbeat is sent to every group).
    let (odd_cert, odd_key) = stranger.issue("odd", &["localhost", "127.0.0.1"]);
    let mut args = s(&[
        "broker",
        "--group",
        "g3",
        "--addr",
        &format!("127.0.0.1:{}", free_port()),
        "--nameservers",
        &ns_addr,
        "--data-dir",
        &path(&dir.join("g3")),
        "--segment-size",
        "8MiB",
    ]);
    args.extend(tls_flags(&odd_cert, &odd_key, &pki.bundle));
    let g3 = Proc::start(dir, "g3", free_port(), &args);
    wait_log(&proxy, "\"g3\"");
    for _ in 0..3 {
        let out = ferromq(
            &s(&[
                "consume",
                "--server",
                &proxy_addr,
                "--tls-ca",
                &path(&pki.bundle),
                "-t",
                "t",
                "-g",
                "c2",
                "--max-messages",
                "1",
                "--timeout",
                "5s",
            ]),
            "",
        );
        assert!(out.status.success(), "consume beside g3: {}", text(&out));
    }
    let log = proxy.log();
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("cannot connect to broker group"))
        .collect();
    assert_eq!(refusals.len(), 1, "one warning per outage: {log}");
    assert!(
        refusals[0].contains("g3") && refusals[0].contains("certificate not signed by --tls-ca"),
        "{}",
        refusals[0]
    );
    eprintln!("proxy says: {}", refusals[0]);
    drop((g3, g2, proxy, g1, ns));
}

/// The member of `group` that leads it now (by its `/metrics`), if any.
fn leader(members: &[Proc]) -> Option<usize> {
    members
        .iter()
        .position(|m| m.child.is_some() && m.metric("ferromq_replication_leader", "") == Some(1.0))
}

#[test]
fn a_replicated_group_fails_over_with_tls_on_every_link() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let pki = Pki::new(&dir.join("pki"), "FerroMQ test cluster CA");
    let (cert, key) = pki.issue("node", &["localhost", "127.0.0.1"]);
    let tls = tls_flags(&cert, &key, &pki.bundle);

    // Held together so that the three ports differ.
    let held: Vec<std::net::TcpListener> = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let peers: Vec<String> = held
        .iter()
        .map(|l| format!("127.0.0.1:{}", l.local_addr().expect("addr").port()))
        .collect();
    drop(held);
    let mut nameservers: Vec<Proc> = peers
        .iter()
        .enumerate()
        .map(|(i, addr)| {
            let mut a = s(&[
                "nameserver",
                "--addr",
                addr,
                "--controller-peers",
                &peers.join(","),
                "--data-dir",
                &path(&dir.join(format!("ns{i}"))),
                "--member-expiry",
                "1500ms",
                "--lease",
                "1s",
            ]);
            a.extend(tls.clone());
            Proc::start(dir, &format!("ns{i}"), free_port(), &a)
        })
        .collect();
    // Ready means the controller peer knows a Raft leader: Raft over TLS works.
    for n in &mut nameservers {
        n.wait_ready(Duration::from_secs(60));
    }
    let mut members: Vec<Proc> = (1..=3)
        .map(|id| {
            let mut a = s(&[
                "broker",
                "--group",
                "g1",
                "--replica-id",
                &id.to_string(),
                "--addr",
                &format!("127.0.0.1:{}", free_port()),
                "--nameservers",
                &peers.join(","),
                "--data-dir",
                &path(&dir.join(format!("g1-{id}"))),
                "--segment-size",
                "8MiB",
                "--replica-lag",
                "4s",
            ]);
            a.extend(tls.clone());
            Proc::start(dir, &format!("g1-{id}"), free_port(), &a)
        })
        .collect();
    let proxy_addr = format!("127.0.0.1:{}", free_port());
    let mut a = s(&[
        "proxy",
        "--grpc-addr",
        &proxy_addr,
        "--nameservers",
        &peers.join(","),
        "--remoting-addr",
        "off",
        "--route-refresh",
        "300ms",
    ]);
    a.extend(tls.clone());
    let mut proxy = Proc::start(dir, "proxy", free_port(), &a);
    proxy.wait_ready(Duration::from_secs(60));

    // Every member in sync: the followers fetch the leader's log over TLS.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !nameservers
        .iter()
        .any(|n| n.metric("ferromq_controller_in_sync_members", "group=\"g1\"") == Some(3.0))
    {
        assert!(
            Instant::now() < deadline,
            "the group never had 3 members in sync: {}",
            members
                .iter()
                .map(Proc::log)
                .collect::<Vec<_>>()
                .join("\n----\n")
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = ferromq(
        &s(&[
            "admin",
            "--server",
            &proxy_addr,
            "--tls-ca",
            &path(&pki.bundle),
            "topic",
            "create",
            "t",
            "--queues",
            "2",
        ]),
        "",
    );
    assert!(out.status.success(), "topic create: {}", text(&out));

    // A producer over TLS through the proxy; a kill -9 of the leader half way.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let ca_pem = std::fs::read(&pki.bundle).expect("ca");
    let (acked, attempted) = rt.block_on(async {
        let ch = tonic::transport::Channel::from_shared(format!("https://{proxy_addr}"))
            .expect("uri")
            .tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(&ca_pem)),
            )
            .expect("tls")
            .timeout(Duration::from_secs(10))
            .connect()
            .await
            .expect("TLS to the proxy");
        let mut c = support::client_on(ch, "tls-failover@1");
        let mut acked = BTreeSet::new();
        let mut attempted = 0;
        // Until the proxy's routes hold the topic.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = c
                .send_message(ferromq_proto::v2::SendMessageRequest {
                    messages: vec![support::message("t", "warmup", b"warmup")],
                })
                .await;
            if r.is_ok_and(|r| support::code_of(&r.into_inner().status) == Code::Ok) {
                acked.insert("warmup".to_string());
                attempted += 1;
                break;
            }
            assert!(Instant::now() < deadline, "the topic never took a message");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let mut killed = None;
        for i in 0..200 {
            if i == 100 {
                let l = leader(&members).expect("a leader");
                members[l].kill9();
                killed = Some(l);
            }
            let id = format!("m{i}");
            attempted += 1;
            let r = c
                .send_message(ferromq_proto::v2::SendMessageRequest {
                    messages: vec![support::message("t", &id, id.as_bytes())],
                })
                .await;
            if r.is_ok_and(|r| support::code_of(&r.into_inner().status) == Code::Ok) {
                acked.insert(id);
            } else {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        // A new leader among the survivors.
        let deadline = Instant::now() + Duration::from_secs(30);
        while leader(&members).is_none_or(|l| Some(l) == killed) {
            assert!(Instant::now() < deadline, "no new leader after kill -9");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        (acked, attempted)
    });

    // Everything acknowledged is there after the failover.
    let out = ferromq(
        &s(&[
            "consume",
            "--server",
            &proxy_addr,
            "--tls-ca",
            &path(&pki.bundle),
            "-t",
            "t",
            "-g",
            "c",
            "--timeout",
            "10s",
        ]),
        "",
    );
    assert!(out.status.success(), "consume: {}", text(&out));
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let got: BTreeSet<String> = lines.iter().cloned().collect();
    let lost: Vec<&String> = acked.difference(&got).collect();
    let sent_ids: BTreeSet<String> = std::iter::once("warmup".to_string())
        .chain((0..200).map(|i| format!("m{i}")))
        .collect();
    let unexpected: Vec<&String> = got.difference(&sent_ids).collect();
    let duplicated = lines.len() - got.len();
    eprintln!(
        "TLS failover: attempted {attempted}, acknowledged {}, received {}, lost {}, duplicated {duplicated}, unexpected {}",
        acked.len(),
        got.len(),
        lost.len(),
        unexpected.len()
    );
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    assert!(unexpected.is_empty(), "never sent: {unexpected:?}");
    assert!(
        acked.len() > 100,
        "most sends acknowledged: {}",
        acked.len()
    );
    drop((proxy, members, nameservers));
}

/// The names a pod dials in Kubernetes (`broker-0.g1.ns.svc` against a `*.g1.ns.svc`
/// certificate) and IP addresses verify with the verifier tonic builds from the bundle
/// (rustls' WebPKI verifier over exactly those roots); other names and other CAs do not.
/// (Loopback cannot resolve such names, so this checks the verifier rather than a dial.)
#[test]
fn wildcard_dns_names_and_ip_addresses_verify_against_the_bundle() {
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&tmp.path().join("pki"), "cluster CA");
    let stranger = Pki::new(&tmp.path().join("other"), "other CA");
    let verifier = |bundle: &Path| {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(bundle).expect("bundle") {
            roots.add(c.expect("pem")).expect("anchor");
        }
        rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .expect("verifier")
    };
    let ours = verifier(&pki.bundle);
    let theirs = verifier(&stranger.bundle);
    let (cert, _) = pki.issue("wild", &["*.g1.ns.svc", "10.1.2.3"]);
    let leaf = CertificateDer::from_pem_file(&cert).expect("leaf");
    let check = |v: &rustls::client::WebPkiServerVerifier, name: &str| {
        v.verify_server_cert(
            &leaf,
            &[],
            &ServerName::try_from(name.to_string()).expect("name"),
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
    };
    check(&ours, "broker-0.g1.ns.svc").expect("a wildcard SAN verifies");
    check(&ours, "10.1.2.3").expect("an IP SAN verifies");
    assert!(
        check(&ours, "g1.ns.svc").is_err(),
        "the wildcard covers one label"
    );
    assert!(check(&ours, "a.broker-0.g1.ns.svc").is_err());
    assert!(check(&ours, "10.1.2.4").is_err());
    let err = check(&theirs, "broker-0.g1.ns.svc").expect_err("another CA");
    assert!(err.contains("UnknownIssuer"), "{err}");
}
