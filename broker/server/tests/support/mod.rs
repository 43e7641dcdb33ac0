//! Shared helpers of the end-to-end tests: start the real `ferromq standalone` binary on
//! loopback ports with a temporary data directory, talk to it with our generated gRPC client
//! types, and run `ferromq admin`.
#![allow(dead_code)]

pub mod inproc;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ferromq_proto::v2::{self, messaging_service_client::MessagingServiceClient, Code};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub mod remoting;

pub const BIN: &str = env!("CARGO_BIN_EXE_ferromq");

/// A port free right now on loopback, and never handed out before in this test process: the
/// kernel may give a port just released to the next bind, and two roles of one server (gRPC
/// and HTTP) must not get the same one.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind :0")
            .local_addr()
            .expect("addr")
            .port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A running `ferromq standalone`; killed when dropped.
pub struct Server {
    pub child: Option<Child>,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub grpc_port: u16,
    pub http_port: u16,
    /// The remoting port: always on a free port, so tests never compete for 9876.
    pub remoting_port: u16,
    pub extra: Vec<String>,
    /// RLIMIT_NOFILE (soft and hard) the server is started with, if not inherited.
    pub nofile: Option<u64>,
}

impl Server {
    pub fn start(extra: &[&str]) -> Server {
        Server::start_with_nofile(extra, None)
    }

    /// Starts with a descriptor limit (soft and hard) of `nofile`, as `ulimit -n` would.
    pub fn start_with_nofile(extra: &[&str], nofile: Option<u64>) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut s = Server {
            child: None,
            data_dir: dir,
            _tmp: Some(tmp),
            grpc_port: free_port(),
            http_port: free_port(),
            remoting_port: free_port(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            nofile,
        };
        s.spawn();
        s
    }

    /// Starts (again) on the same ports and data directory.
    pub fn spawn(&mut self) {
        let log = std::fs::File::create(
            self.data_dir
                .with_extension(format!("log{}", self.grpc_port)),
        )
        .ok();
        let mut cmd = Command::new(BIN);
        cmd.arg("standalone")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--grpc-addr")
            .arg(format!("127.0.0.1:{}", self.grpc_port))
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{}", self.http_port))
            .arg("--remoting-addr")
            .arg(format!("127.0.0.1:{}", self.remoting_port))
            .args(&self.extra)
            .env(
                "FERROMQ_LOG",
                std::env::var("TEST_FERROMQ_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null());
        if let Some(n) = self.nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe and touches only the child being set up.
            unsafe {
                cmd.pre_exec(move || {
                    let r = libc::rlimit {
                        rlim_cur: n as libc::rlim_t,
                        rlim_max: n as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        match log {
            Some(f) => cmd.stderr(f),
            None => cmd.stderr(Stdio::null()),
        };
        self.child = Some(cmd.spawn().expect("spawn ferromq"));
        self.wait_ready();
    }

    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if http_get(self.http_port, "/readyz").is_some_and(|(code, _)| code == 200) {
                return;
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!(
                        "ferromq exited during start-up with {status}; log: {}",
                        self.log()
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("ferromq not ready within 20 s; log: {}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(
            self.data_dir
                .with_extension(format!("log{}", self.grpc_port)),
        )
        .unwrap_or_default()
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.grpc_port)
    }

    /// SIGTERM, then the exit status (within 20 s).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY-free: kill(1) with the pid avoids a libc dependency here.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(s)) = child.try_wait() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("ferromq did not stop within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server process's anonymous resident memory (heap and stacks, not the store's
    /// mapped files), in KiB, from /proc.
    pub fn rss_anon_kib(&self) -> u64 {
        let pid = self.child.as_ref().expect("running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("RssAnon:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("RssAnon in /proc/PID/status")
    }

    /// One value of `/metrics` (a family without labels), if the server reports it.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let (_, text) = http_get(self.http_port, "/metrics")?;
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub async fn client(&self) -> Client {
        client(self.grpc_port, "test-client@1").await
    }

    /// Runs `ferromq admin --server <this> <args>`.
    pub fn admin(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("admin")
            .arg("--server")
            .arg(self.addr())
            .args(args)
            .output()
            .expect("run admin")
    }

    /// Runs an admin command that must succeed and returns its JSON output.
    pub fn admin_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a: Vec<&str> = args.to_vec();
        a.extend(["-o", "json"]);
        let out = self.admin(&a);
        assert!(
            out.status.success(),
            "admin {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "admin {args:?} printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    pub fn create_topic(&self, name: &str, kind: &str, queues: u32) {
        let q = queues.to_string();
        let out = self.admin(&["topic", "create", name, "--type", kind, "--queues", &q]);
        assert!(
            out.status.success(),
            "topic create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A self-signed certificate for localhost, made with the openssl CLI (`None` without it).
pub fn self_signed(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    ok.then_some((cert, key))
}

/// Minimal HTTP/1.0 GET: (status code, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((code, body))
}

#[derive(Clone)]
pub struct Headers {
    client_id: Option<String>,
}

impl tonic::service::Interceptor for Headers {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(id) = &self.client_id {
            req.metadata_mut().insert(
                "x-mq-client-id",
                MetadataValue::try_from(id.as_str()).expect("ascii"),
            );
        }
        req.metadata_mut()
            .insert("x-mq-language", MetadataValue::from_static("JAVA"));
        Ok(req)
    }
}

pub type Client = MessagingServiceClient<InterceptedService<Channel, Headers>>;

pub async fn connect(port: u16, client_id: Option<&str>) -> Client {
    let ch = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    MessagingServiceClient::with_interceptor(
        ch,
        Headers {
            client_id: client_id.map(str::to_string),
        },
    )
}

/// A client on a channel the test set up itself (TLS, ...), with client id `id`.
pub fn client_on(ch: Channel, id: &str) -> Client {
    MessagingServiceClient::with_interceptor(
        ch,
        Headers {
            client_id: Some(id.to_string()),
        },
    )
}

pub async fn client(port: u16, id: &str) -> Client {
    connect(port, Some(id)).await
}

pub fn res(name: &str) -> Option<v2::Resource> {
    Some(v2::Resource {
        resource_namespace: String::new(),
        name: name.into(),
    })
}

pub fn dur(ms: u64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

/// A message as an official producer would build it.
pub fn message(topic: &str, id: &str, body: &[u8]) -> v2::Message {
    v2::Message {
        topic: res(topic),
        user_properties: Default::default(),
        system_properties: Some(v2::SystemProperties {
            message_id: id.into(),
            body_encoding: v2::Encoding::Identity as i32,
            message_type: v2::MessageType::Normal as i32,
            born_host: "test-host".into(),
            born_timestamp: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            ..Default::default()
        }),
        body: bytes::Bytes::copy_from_slice(body),
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn ts(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// A DELAY message due at `due_ms` (ms since the epoch).
pub fn delay_message(topic: &str, id: &str, due_ms: i64) -> v2::Message {
    let mut m = message(topic, id, id.as_bytes());
    let sp = m.system_properties.as_mut().expect("sp");
    sp.message_type = v2::MessageType::Delay as i32;
    sp.delivery_timestamp = Some(ts(due_ms));
    m
}

pub fn fifo_message(topic: &str, id: &str, group: &str, body: &[u8]) -> v2::Message {
    let mut m = message(topic, id, body);
    let sp = m.system_properties.as_mut().expect("sp");
    sp.message_type = v2::MessageType::Fifo as i32;
    sp.message_group = Some(group.into());
    m
}

pub fn code_of(s: &Option<v2::Status>) -> Code {
    Code::try_from(s.as_ref().map_or(0, |s| s.code)).unwrap_or(Code::Unspecified)
}

/// Sends one message; returns its send entry status code.
pub async fn send(c: &mut Client, m: v2::Message) -> (Code, v2::SendMessageResponse) {
    let r = c
        .send_message(v2::SendMessageRequest { messages: vec![m] })
        .await
        .expect("grpc ok")
        .into_inner();
    (code_of(&r.status), r)
}

pub async fn send_ok(c: &mut Client, m: v2::Message) {
    let (code, r) = send(c, m).await;
    assert_eq!(code, Code::Ok, "send failed: {r:?}");
}

/// What one ReceiveMessage call returned.
#[derive(Debug, Default)]
pub struct Received {
    pub status: Option<v2::Status>,
    pub messages: Vec<v2::Message>,
    pub saw_timestamp: bool,
}

impl Received {
    pub fn code(&self) -> Code {
        code_of(&self.status)
    }
    pub fn bodies(&self) -> Vec<String> {
        self.messages
            .iter()
            .map(|m| String::from_utf8_lossy(&m.body).into_owned())
            .collect()
    }
}

pub fn receive_request(
    group: &str,
    topic: &str,
    batch: i32,
    invisible_ms: u64,
    poll_ms: u64,
    filter: &str,
) -> v2::ReceiveMessageRequest {
    v2::ReceiveMessageRequest {
        group: res(group),
        message_queue: Some(v2::MessageQueue {
            topic: res(topic),
            id: 0,
            ..Default::default()
        }),
        filter_expression: Some(v2::FilterExpression {
            r#type: v2::FilterType::Tag as i32,
            expression: filter.into(),
        }),
        batch_size: batch,
        invisible_duration: Some(dur(invisible_ms)),
        auto_renew: false,
        long_polling_timeout: Some(dur(poll_ms)),
        attempt_id: None,
    }
}

pub async fn receive_with(c: &mut Client, req: v2::ReceiveMessageRequest) -> Received {
    let mut stream = c.receive_message(req).await.expect("grpc ok").into_inner();
    let mut out = Received::default();
    while let Some(item) = stream.message().await.expect("stream ok") {
        match item.content.expect("every item has content") {
            v2::receive_message_response::Content::Status(s) => out.status = Some(s),
            v2::receive_message_response::Content::Message(m) => out.messages.push(m),
            v2::receive_message_response::Content::DeliveryTimestamp(_) => out.saw_timestamp = true,
        }
    }
    out
}

pub async fn receive(
    c: &mut Client,
    group: &str,
    topic: &str,
    batch: i32,
    invisible_ms: u64,
    poll_ms: u64,
) -> Received {
    receive_with(
        c,
        receive_request(group, topic, batch, invisible_ms, poll_ms, "*"),
    )
    .await
}

/// A TRANSACTION (half) message.
pub fn tx_message(topic: &str, id: &str) -> v2::Message {
    let mut m = message(topic, id, id.as_bytes());
    m.system_properties.as_mut().expect("sp").message_type = v2::MessageType::Transaction as i32;
    m
}

/// EndTransaction; returns the answer's code.
pub async fn end(
    c: &mut Client,
    topic: &str,
    id: &str,
    tx: &str,
    how: v2::TransactionResolution,
    source: v2::TransactionSource,
) -> Code {
    let r = c
        .end_transaction(v2::EndTransactionRequest {
            topic: res(topic),
            message_id: id.into(),
            transaction_id: tx.into(),
            resolution: how as i32,
            source: source as i32,
            trace_context: String::new(),
        })
        .await
        .expect("grpc ok")
        .into_inner();
    code_of(&r.status)
}

/// Bodies a group receives (and acks) until the topic has nothing more for it.
pub async fn drain_all(c: &mut Client, group: &str, topic: &str) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let r = receive(c, group, topic, 32, 30_000, 500).await;
        if r.messages.is_empty() {
            return out;
        }
        for m in &r.messages {
            assert_eq!(ack(c, group, topic, m).await, Code::Ok);
            out.push(String::from_utf8_lossy(&m.body).into_owned());
        }
    }
}

pub fn handle(m: &v2::Message) -> String {
    m.system_properties
        .as_ref()
        .and_then(|s| s.receipt_handle.clone())
        .expect("receipt handle")
}

pub fn attempt(m: &v2::Message) -> i32 {
    m.system_properties
        .as_ref()
        .and_then(|s| s.delivery_attempt)
        .expect("delivery attempt")
}

/// The message id a delivered message carries.
pub fn message_id(m: &v2::Message) -> String {
    m.system_properties
        .as_ref()
        .map(|s| s.message_id.clone())
        .unwrap_or_default()
}

/// ForwardMessageToDeadLetterQueue of a delivered message (the client gave up on it);
/// returns the answer's code.
pub async fn forward_to_dlq(c: &mut Client, group: &str, topic: &str, m: &v2::Message) -> Code {
    let r = c
        .forward_message_to_dead_letter_queue(v2::ForwardMessageToDeadLetterQueueRequest {
            group: res(group),
            topic: res(topic),
            receipt_handle: handle(m),
            message_id: message_id(m),
            delivery_attempt: 1,
            max_delivery_attempts: 1,
            lite_topic: None,
        })
        .await
        .expect("grpc ok")
        .into_inner();
    code_of(&r.status)
}

pub async fn ack(c: &mut Client, group: &str, topic: &str, m: &v2::Message) -> Code {
    let r = c
        .ack_message(v2::AckMessageRequest {
            group: res(group),
            topic: res(topic),
            entries: vec![v2::AckMessageEntry {
                message_id: message_id(m),
                receipt_handle: handle(m),
                lite_topic: None,
            }],
        })
        .await
        .expect("grpc ok")
        .into_inner();
    assert_eq!(r.entries.len(), 1, "one ack entry per request entry");
    code_of(&r.status)
}

pub fn data_dir(s: &Server) -> &Path {
    &s.data_dir
}

/// Receives repeatedly (as a consumer loop does) until `n` messages arrived or 10 s passed.
pub async fn receive_n(
    c: &mut Client,
    req: v2::ReceiveMessageRequest,
    n: usize,
) -> Vec<v2::Message> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        let r = receive_with(c, req.clone()).await;
        out.extend(r.messages);
    }
    out
}

/// A Telemetry command announcing `settings`.
pub fn settings_command(settings: v2::Settings) -> v2::TelemetryCommand {
    v2::TelemetryCommand {
        status: None,
        command: Some(v2::telemetry_command::Command::Settings(settings)),
    }
}

/// Opens a Telemetry stream that first announces `settings`; returns the sender for further
/// commands and the server's stream (whose first item answers the settings).
pub async fn open_telemetry(
    c: &mut Client,
    settings: v2::Settings,
) -> (
    tokio::sync::mpsc::Sender<v2::TelemetryCommand>,
    tonic::Streaming<v2::TelemetryCommand>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tx.send(settings_command(settings))
        .await
        .expect("send settings");
    let stream = c
        .telemetry(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("telemetry accepted")
        .into_inner();
    (tx, stream)
}
