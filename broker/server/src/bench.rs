//! `ferromq bench produce|consume`: load through the same RocketMQ 5 protocol the official
//! clients use, reporting throughput and latency percentiles from an HDR histogram
//! (`bench pull`: the classic remoting protocol's offset-based read, see [`pull`]).
//!
//! At a fixed `--rate`, each send is scheduled at its intended time and its latency is measured
//! from that time, not from when it actually started: a stalled server then shows up as the
//! queue of sends that should have happened (coordinated-omission correction), instead of
//! silently lowering the offered load. With `--rate max` every client sends back to back.
//! Consume latency is end to end: receive time minus the producer's born timestamp.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::dial::{now_ms, resource};
use ferromq_proto::v2::{self, Code};
use futures_util::future::join_all;
use hdrhistogram::Histogram;
use parking_lot::Mutex;

pub mod null_sink;
pub mod pull;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub mode: BenchMode,
}

#[derive(Debug, clap::Args, Clone)]
pub struct Common {
    /// gRPC address of the server (host:port, or https://host:port for TLS).
    #[arg(long, env = "FERROMQ_SERVER", default_value = "127.0.0.1:8081")]
    pub server: String,
    #[command(flatten)]
    pub tls: crate::dial::ServerTls,
    /// Topic to send to or receive from (it must exist, with the type the mode needs).
    #[arg(long, value_parser = crate::cli::topic_name)]
    pub topic: String,
    /// Concurrent clients (each with its own connection).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    pub clients: u16,
    /// How long to run, e.g. `30s`, `2m`, `500ms`.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Credentials to sign calls with (servers running with --auth).
    #[command(flatten)]
    pub credentials: crate::credentials::CredentialArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum BenchMode {
    /// Send messages of `--size` bytes at `--rate` messages/s in total (or `max`).
    Produce {
        #[command(flatten)]
        common: Common,
        /// Body size of each message in bytes.
        #[arg(long, default_value_t = 1024)]
        size: usize,
        /// Messages per second over all clients, or `max`.
        #[arg(long, default_value = "max", value_parser = parse_rate)]
        rate: Rate,
        /// Queues of the topic: sends go round-robin over queue ids `0..queues`.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
        queues: u32,
        /// Messages per SendMessage request (a batch goes to one queue).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
        batch: u32,
        /// Send DELAY messages due this long after they are sent (`2s`), or spread evenly over
        /// a range (`1s..60s`). The topic must be a DELAY topic.
        #[arg(long, value_parser = parse_delay)]
        delay: Option<(Duration, Duration)>,
    },
    /// Serve a null sink: a RocketMQ 5 gRPC server that acks every send and keeps nothing, the
    /// ceiling the client and the machine leave to any broker.
    Sink {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:18081")]
        addr: std::net::SocketAddr,
    },
    /// Read as a classic (4.x) consumer over the remoting protocol: pull by queue offset,
    /// commit the group's offsets, no per-message ack (the read model Kafka's consumer has).
    Pull(pull::PullArgs),
    /// Receive and ack as a consumer group.
    Consume {
        #[command(flatten)]
        common: Common,
        /// Consumer group to receive as.
        #[arg(long, default_value = "ferromq-bench", value_parser = crate::cli::group_name)]
        group: String,
        /// Messages asked for per ReceiveMessage request.
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(i32).range(1..=1024))]
        batch: i32,
        /// Ack every message with an AckMessage of its own, all of a receive's at once, as the
        /// official clients' consumers do (without it, one AckMessage per receive).
        #[arg(long)]
        ack_each: bool,
    },
}

/// `--rate`: messages per second, or as fast as the server answers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    Max,
    PerSecond(f64),
}

/// Parses `--rate`: a positive number or `max`.
pub fn parse_rate(s: &str) -> Result<Rate, String> {
    if s == "max" {
        return Ok(Rate::Max);
    }
    match s.parse::<f64>() {
        Ok(r) if r > 0.0 && r.is_finite() => Ok(Rate::PerSecond(r)),
        _ => Err(format!(
            "{s:?} is not a positive number of messages per second or max"
        )),
    }
}

/// Parses `--delay`: one duration or a range `a..b`.
pub fn parse_delay(s: &str) -> Result<(Duration, Duration), String> {
    match s.split_once("..") {
        Some((a, b)) => {
            let (a, b) = (parse_duration(a)?, parse_duration(b)?);
            if a > b {
                return Err(format!("{s:?}: the range starts after it ends"));
            }
            Ok((a, b))
        }
        None => parse_duration(s).map(|d| (d, d)),
    }
}

/// A duration flag: `500ms`, `10s`, `2m` (humantime's units), or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::config::duration(s)
}

type Client = crate::dial::Messaging;

async fn connect(c: &Common, n: usize) -> anyhow::Result<Client> {
    crate::dial::messaging(&c.server, &c.tls, "ferromq-bench", n, &c.credentials).await
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 1 h, 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static bounds are valid")
}

struct Totals {
    ok: AtomicU64,
    failed: AtomicU64,
    bytes: AtomicU64,
    /// Latency from the scheduled send time (what a user at that rate waits).
    hist: Mutex<Histogram<u64>>,
    /// Latency from the actual send (service time), to tell the server from the client's
    /// timer: tokio timers wake on millisecond ticks, which the first histogram includes.
    service: Mutex<Histogram<u64>>,
    /// Consumers: delay messages received before their delivery time (must stay 0).
    early: AtomicU64,
}

impl Totals {
    fn new() -> Totals {
        Totals {
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            hist: Mutex::new(new_histogram()),
            service: Mutex::new(new_histogram()),
            early: AtomicU64::new(0),
        }
    }
}

fn report(kind: &str, t: &Totals, elapsed: Duration, json: bool) {
    let h = t.hist.lock();
    let secs = elapsed.as_secs_f64().max(1e-9);
    let ok = t.ok.load(Ordering::Relaxed);
    let bytes = t.bytes.load(Ordering::Relaxed);
    let q = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    let quantiles: Vec<[f64; 2]> = [
        0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 1.0,
    ]
    .iter()
    .map(|&p| [p, q(p)])
    .collect();
    let svc = t.service.lock();
    let sq = |p: f64| svc.value_at_quantile(p) as f64 / 1000.0;
    let service = (!svc.is_empty()).then(|| serde_json::json!({ "p50": sq(0.5), "p99": sq(0.99), "p999": sq(0.999), "max": svc.max() as f64 / 1000.0 }));
    let v = serde_json::json!({
        "mode": kind,
        "service_latency_ms": service,
        "seconds": secs,
        "messages": ok,
        "failed": t.failed.load(Ordering::Relaxed),
        "early": t.early.load(Ordering::Relaxed),
        "msgs_per_sec": ok as f64 / secs,
        "mb_per_sec": bytes as f64 / secs / 1e6,
        "latency_ms": { "p50": q(0.5), "p99": q(0.99), "p999": q(0.999), "max": h.max() as f64 / 1000.0, "mean": h.mean() / 1000.0 },
        // For latency CDF plots: (quantile, ms) pairs from the same histogram.
        "quantiles_ms": quantiles,
    });
    if json {
        println!("{v}");
    } else {
        println!(
            "{kind}: {ok} msgs in {secs:.1} s = {:.0} msgs/s, {:.2} MB/s, {} failed, {} early; latency ms p50 {:.3} p99 {:.3} p999 {:.3} max {:.3}",
            ok as f64 / secs,
            bytes as f64 / secs / 1e6,
            t.failed.load(Ordering::Relaxed),
            t.early.load(Ordering::Relaxed),
            q(0.5),
            q(0.99),
            q(0.999),
            h.max() as f64 / 1000.0
        );
    }
}

/// A progress bar over the run, showing the messages so far, while stderr is a terminal;
/// cleared when dropped.
struct Watch(indicatif::ProgressBar, tokio::task::JoinHandle<()>);

impl Drop for Watch {
    fn drop(&mut self) {
        self.1.abort();
        self.0.finish_and_clear();
    }
}

fn watch(totals: &Arc<Totals>, duration: Duration, label: &str) -> Option<Watch> {
    let pb = crate::progress::timed(duration, label)?;
    let (bar, totals, start) = (pb.clone(), totals.clone(), Instant::now());
    let ticker = tokio::spawn(async move {
        loop {
            let secs = start.elapsed().as_secs_f64().max(1e-3);
            let ok = totals.ok.load(Ordering::Relaxed);
            bar.set_position(start.elapsed().as_millis() as u64);
            bar.set_message(format!(
                "{ok} msgs ({:.0}/s), {} failed",
                ok as f64 / secs,
                totals.failed.load(Ordering::Relaxed)
            ));
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    Some(Watch(pb, ticker))
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.mode {
        BenchMode::Produce {
            common,
            size,
            rate,
            queues,
            batch,
            delay,
        } => produce(common, size, rate, queues, batch, delay).await,
        BenchMode::Sink { addr } => null_sink::serve(addr).await,
        BenchMode::Consume {
            common,
            group,
            batch,
            ack_each,
        } => consume(common, &group, batch, ack_each).await,
        BenchMode::Pull(args) => pull::run(args).await,
    }
}

/// When request number `request` of client `n` is due, after the start, with one request
/// per `interval` per client. Clients are phase-shifted by a fraction of the interval so that
/// together they send evenly, not in bursts of `clients` requests at once. Scheduling by a
/// count of messages made a batched run send `batch` times too slowly.
fn request_due(interval: Duration, request: u64, n: usize, clients: u16) -> Duration {
    interval.mul_f64(request as f64 + n as f64 / f64::from(clients))
}

async fn produce(
    c: Common,
    size: usize,
    rate: Rate,
    queues: u32,
    batch: u32,
    delay: Option<(Duration, Duration)>,
) -> anyhow::Result<()> {
    let rate = match rate {
        Rate::Max => None,
        Rate::PerSecond(r) => Some(r),
    };
    let totals = Arc::new(Totals::new());
    let body = bytes::Bytes::from(
        (0..size)
            .map(|i| b'a' + (i % 26) as u8)
            .collect::<Vec<u8>>(),
    );
    let start = Instant::now();
    let end = start + c.duration;
    let mut tasks = Vec::new();
    for n in 0..usize::from(c.clients) {
        let mut client = connect(&c, n).await?;
        let (totals, body, topic) = (totals.clone(), body.clone(), c.topic.clone());
        // One request carries `batch` messages, so each client sends a request every
        // clients * batch / rate seconds.
        let interval = rate.map(|r| Duration::from_secs_f64(c.clients as f64 * batch as f64 / r));
        let clients = c.clients;
        tasks.push(tokio::spawn(async move {
            let mut local = new_histogram();
            let mut local_service = new_histogram();
            // Requests sent so far; the schedule counts requests, the ids count messages.
            let mut request: u64 = 0;
            loop {
                let intended = match interval {
                    Some(iv) => start + request_due(iv, request, n, clients),
                    None => Instant::now(),
                };
                if intended >= end {
                    break;
                }
                // Only when the send is due later: tokio's timer rounds a deadline up to its
                // next millisecond tick, so sleeping until "now" (every request at the maximum
                // rate, and every late one at a fixed rate) would add up to a millisecond to
                // each closed-loop send and cap what a client can offer.
                if intended > Instant::now() {
                    tokio::time::sleep_until(intended.into()).await;
                }
                let queue_id = ((request + n as u64) % queues as u64) as i32;
                let seq = request * batch as u64;
                let messages = (0..batch as u64)
                    .map(|i| v2::Message {
                        topic: resource(&topic),
                        user_properties: Default::default(),
                        system_properties: Some(v2::SystemProperties {
                            message_id: format!("B{}{n:03}{:012}", std::process::id(), seq + i),
                            delivery_timestamp: delay.map(|(lo, hi)| {
                                // Spread over the range by a stride that visits it evenly.
                                let span = (hi - lo).as_millis() as u64;
                                let off = if span == 0 { 0 } else { (seq + i).wrapping_mul(7919) % (span + 1) };
                                crate::convert::timestamp_from_ms(now_ms() + (lo.as_millis() as u64 + off) as i64)
                            }),
                            message_type: if delay.is_some() { v2::MessageType::Delay } else { v2::MessageType::Normal } as i32,
                            body_encoding: v2::Encoding::Identity as i32,
                            born_timestamp: Some(crate::convert::timestamp_from_ms(now_ms())),
                            born_host: "ferromq-bench".into(),
                            queue_id,
                            ..Default::default()
                        }),
                        body: body.clone(),
                    })
                    .collect();
                request += 1;
                let sent = Instant::now();
                let r = client.send_message(v2::SendMessageRequest { messages }).await;
                let ok = matches!(&r, Ok(resp) if resp.get_ref().status.as_ref().is_some_and(|s| s.code == Code::Ok as i32));
                if ok {
                    totals.ok.fetch_add(batch as u64, Ordering::Relaxed);
                    totals
                        .bytes
                        .fetch_add(body.len() as u64 * batch as u64, Ordering::Relaxed);
                    let _ = local.record_n(intended.elapsed().as_micros().max(1) as u64, batch as u64);
                    let _ = local_service.record_n(sent.elapsed().as_micros().max(1) as u64, batch as u64);
                } else {
                    totals.failed.fetch_add(batch as u64, Ordering::Relaxed);
                }
            }
            let _ = totals.hist.lock().add(&local);
            let _ = totals
                .service
                .lock()
                .add(&local_service);
        }));
    }
    let bar = watch(&totals, c.duration, "produce");
    for t in tasks {
        t.await?;
    }
    drop(bar);
    report("produce", &totals, start.elapsed(), c.json);
    Ok(())
}

/// How long each receive asks the server to wait for messages when none are ready.
const LONG_POLL: Duration = Duration::from_secs(1);

/// The request timeout the consumer's settings declare.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// The gRPC deadline of each receive. Apache RocketMQ's proxy raises any polling time to its
/// 5 s minimum and refuses a receive whose deadline leaves less than that (one without a
/// deadline fails inside it with INTERNAL); like the official clients, the deadline is that
/// polling time plus the request timeout. FerroMQ answers before it anyway, after `LONG_POLL`.
const RECEIVE_DEADLINE: Duration = Duration::from_secs(5 + REQUEST_TIMEOUT.as_secs());

/// Opens a Telemetry stream and declares a simple consumer of `c.topic` in `group` on it, as
/// the official clients do before their first receive; answers the stream's sender, which keeps
/// it open while held. A server that answers the settings with an error status fails the run.
async fn declare_consumer(
    client: &mut Client,
    c: &Common,
    group: &str,
    batch: i32,
) -> anyhow::Result<tokio::sync::mpsc::Sender<v2::TelemetryCommand>> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let settings = v2::Settings {
        client_type: Some(v2::ClientType::SimpleConsumer as i32),
        access_point: access_point(&c.server),
        request_timeout: Some(prost_types::Duration {
            seconds: REQUEST_TIMEOUT.as_secs() as i64,
            nanos: 0,
        }),
        pub_sub: Some(v2::settings::PubSub::Subscription(v2::Subscription {
            group: resource(group),
            subscriptions: vec![v2::SubscriptionEntry {
                topic: resource(&c.topic),
                expression: Some(v2::FilterExpression {
                    r#type: v2::FilterType::Tag as i32,
                    expression: "*".into(),
                }),
            }],
            fifo: Some(false),
            receive_batch_size: Some(batch),
            long_polling_timeout: Some(prost_types::Duration {
                seconds: LONG_POLL.as_secs() as i64,
                nanos: 0,
            }),
            ..Default::default()
        })),
        user_agent: Some(v2::Ua {
            language: v2::Language::Rust as i32,
            version: env!("CARGO_PKG_VERSION").into(),
            platform: std::env::consts::OS.into(),
            hostname: "ferromq-bench".into(),
        }),
        ..Default::default()
    };
    tx.send(v2::TelemetryCommand {
        status: None,
        command: Some(v2::telemetry_command::Command::Settings(settings)),
    })
    .await
    .map_err(|_| anyhow::anyhow!("the Telemetry stream closed before it opened"))?;
    let mut answers = client
        .telemetry(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .context("Telemetry (declaring the consumer) failed")?
        .into_inner();
    // The server answers the settings (with its own view of them) before anything else.
    match tokio::time::timeout(Duration::from_secs(5), answers.message()).await {
        Ok(Ok(Some(first))) => {
            if let Some(st) = first.status.filter(|s| s.code != Code::Ok as i32) {
                anyhow::bail!(
                    "the server refused the consumer's settings: {} {}",
                    st.code,
                    st.message
                );
            }
        }
        Ok(Ok(None)) => anyhow::bail!("the server closed the Telemetry stream at once"),
        Ok(Err(e)) => anyhow::bail!("Telemetry (declaring the consumer) failed: {e}"),
        Err(_) => anyhow::bail!("the server did not answer the consumer's settings in 5 s"),
    }
    // Later commands from the server (none expected) are read and dropped.
    tokio::spawn(async move { while let Ok(Some(_)) = answers.message().await {} });
    Ok(tx)
}

/// The endpoint the client was given, as the Settings' access point.
fn access_point(server: &str) -> Option<v2::Endpoints> {
    let hostport = server
        .trim_start_matches("http://")
        .trim_start_matches("https://");
    let (host, port) = hostport.rsplit_once(':')?;
    let scheme = match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => v2::AddressScheme::Ipv4,
        Ok(std::net::IpAddr::V6(_)) => v2::AddressScheme::Ipv6,
        Err(_) => v2::AddressScheme::DomainName,
    };
    Some(v2::Endpoints {
        scheme: scheme as i32,
        addresses: vec![v2::Address {
            host: host.trim_matches(['[', ']']).to_string(),
            port: port.parse().ok()?,
        }],
    })
}

/// How often each consumer says it is alive, as the official clients do (every 10 s): a server
/// may drop a consumer it has not heard from for a while.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);

/// Says every `HEARTBEAT_EVERY` that this simple consumer of `group` is alive, until aborted.
fn heartbeats(mut client: Client, group: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
        loop {
            tick.tick().await;
            // A failed heartbeat shows up as refused receives; nothing to do about it here.
            let _ = client
                .heartbeat(v2::HeartbeatRequest {
                    group: resource(&group),
                    client_type: v2::ClientType::SimpleConsumer as i32,
                })
                .await;
        }
    })
}

/// What one receive brought: the messages' ack entries, and the refusal, if the server
/// answered with an error status.
struct Received {
    entries: Vec<v2::AckMessageEntry>,
    refusal: Option<String>,
}

/// One ReceiveMessage of up to `batch` messages, recording each message's latency in `local`.
async fn receive_once(
    client: &mut Client,
    topic: &str,
    group: &str,
    batch: i32,
    totals: &Totals,
    local: &mut Histogram<u64>,
) -> Received {
    let mut req = tonic::Request::new(v2::ReceiveMessageRequest {
        group: resource(group),
        message_queue: Some(v2::MessageQueue {
            topic: resource(topic),
            // Any queue: the servers pop from whichever has messages for a non-FIFO group.
            id: -1,
            ..Default::default()
        }),
        filter_expression: Some(v2::FilterExpression {
            r#type: v2::FilterType::Tag as i32,
            expression: "*".into(),
        }),
        batch_size: batch,
        invisible_duration: Some(prost_types::Duration {
            seconds: 30,
            nanos: 0,
        }),
        auto_renew: false,
        long_polling_timeout: Some(prost_types::Duration {
            seconds: LONG_POLL.as_secs() as i64,
            nanos: 0,
        }),
        attempt_id: None,
    });
    req.set_timeout(RECEIVE_DEADLINE);
    let mut stream = match client.receive_message(req).await {
        Ok(resp) => resp.into_inner(),
        Err(e) => {
            return Received {
                entries: Vec::new(),
                refusal: Some(format!("ReceiveMessage failed: {}", e.message())),
            }
        }
    };
    let mut got = Received {
        entries: Vec::new(),
        refusal: None,
    };
    loop {
        let item = match stream.message().await {
            Ok(Some(item)) => item,
            Ok(None) => break,
            Err(e) => {
                got.refusal = Some(format!("ReceiveMessage failed: {}", e.message()));
                break;
            }
        };
        match item.content {
            // An empty long poll ends with MESSAGE_NOT_FOUND; anything else but OK is a refusal.
            Some(v2::receive_message_response::Content::Status(st))
                if st.code != Code::Ok as i32 && st.code != Code::MessageNotFound as i32 =>
            {
                got.refusal = Some(format!(
                    "ReceiveMessage refused: {} {}",
                    st.code, st.message
                ));
            }
            Some(v2::receive_message_response::Content::Message(m)) => {
                let sp = m.system_properties.unwrap_or_default();
                // Delay messages: lateness after their delivery time; others: since sent.
                if let Some(from) = sp
                    .delivery_timestamp
                    .as_ref()
                    .or(sp.born_timestamp.as_ref())
                {
                    let lat_ms = now_ms() - crate::convert::ms_from_timestamp(from);
                    if lat_ms < 0 && sp.delivery_timestamp.is_some() {
                        totals.early.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = local.record((lat_ms.max(0) as u64 * 1000).max(1));
                }
                totals
                    .bytes
                    .fetch_add(m.body.len() as u64, Ordering::Relaxed);
                got.entries.push(v2::AckMessageEntry {
                    message_id: sp.message_id,
                    receipt_handle: sp.receipt_handle.unwrap_or_default(),
                    lite_topic: None,
                });
            }
            _ => {}
        }
    }
    got
}

async fn consume(c: Common, group: &str, batch: i32, ack_each: bool) -> anyhow::Result<()> {
    let totals = Arc::new(Totals::new());
    // The first refusal of the run, said once at the end: the count alone does not say why.
    let first_refusal: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let start = Instant::now();
    let end = tokio::time::Instant::from_std(start + c.duration);
    let mut tasks = Vec::new();
    let mut beats = Vec::new();
    for n in 0..usize::from(c.clients) {
        let mut client = connect(&c, n).await?;
        // Held open for the run: a server that keeps its clients' settings per Telemetry stream
        // (Apache RocketMQ's proxy) answers receives only while it is open.
        let telemetry = declare_consumer(&mut client, &c, group, batch).await?;
        beats.push(heartbeats(client.clone(), group.to_string()));
        let (totals, topic, group, first_refusal) = (
            totals.clone(),
            c.topic.clone(),
            group.to_string(),
            first_refusal.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let _open = telemetry;
            let mut local = new_histogram();
            let refused = |why: String| {
                first_refusal.lock().get_or_insert(why);
            };
            // A receive still waiting at the end is dropped (which cancels it), so a server's
            // long poll on an empty topic cannot stretch the run.
            while let Ok(got) = tokio::time::timeout_at(
                end,
                receive_once(&mut client, &topic, &group, batch, &totals, &mut local),
            )
            .await
            {
                if let Some(why) = got.refusal {
                    // Counted, and not retried at full speed.
                    totals.failed.fetch_add(1, Ordering::Relaxed);
                    refused(why);
                    if got.entries.is_empty() {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                if got.entries.is_empty() {
                    continue;
                }
                let acks: Vec<Vec<v2::AckMessageEntry>> = if ack_each {
                    got.entries.into_iter().map(|e| vec![e]).collect()
                } else {
                    vec![got.entries]
                };
                let acked = join_all(acks.into_iter().map(|entries| {
                    let (mut client, group, topic) = (client.clone(), &group, &topic);
                    async move {
                        let n = entries.len() as u64;
                        (
                            n,
                            crate::console::ack(&mut client, group, topic, entries).await,
                        )
                    }
                }))
                .await;
                for (n, outcome) in acked {
                    match outcome {
                        Ok(()) => {
                            totals.ok.fetch_add(n, Ordering::Relaxed);
                        }
                        Err(why) => {
                            totals.failed.fetch_add(n, Ordering::Relaxed);
                            refused(format!("AckMessage: {why:#}"));
                        }
                    }
                }
            }
            let _ = totals.hist.lock().add(&local);
        }));
    }
    let bar = watch(&totals, c.duration, "consume");
    for t in tasks {
        t.await?;
    }
    drop(bar);
    for b in beats {
        b.abort();
    }
    if let Some(why) = first_refusal.lock().take() {
        eprintln!(
            "consume: {} failed; the first: {why}",
            totals.failed.load(Ordering::Relaxed)
        );
    }
    report("consume", &totals, start.elapsed(), c.json);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("soon").is_err());
    }

    /// 60 000 msg/s in batches of 32 from 16 clients: each client sends a request every
    /// 16 * 32 / 60 000 s, so in one second all of them send 1 875 requests (60 000 messages).
    /// The loop used to count messages here, and sent 1 875 messages a second instead.
    #[test]
    fn a_fixed_rate_counts_requests_so_batches_keep_the_rate() {
        let (clients, batch, rate) = (16u16, 32u64, 60_000.0);
        let interval = Duration::from_secs_f64(f64::from(clients) * batch as f64 / rate);
        let mut sent = 0u64;
        for n in 0..usize::from(clients) {
            let mut request = 0u64;
            while request_due(interval, request, n, clients) < Duration::from_secs(1) {
                request += 1;
                sent += batch;
            }
        }
        assert!(
            (59_000..=61_000).contains(&sent),
            "{sent} messages due in the first second"
        );
        // Clients are spread over the interval, not all due at once.
        assert!(request_due(interval, 0, 8, clients) > request_due(interval, 0, 0, clients));
    }
}
