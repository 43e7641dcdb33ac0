//! `ferromq bench pull`: reads a topic as a classic (4.x) consumer does, over the remoting
//! protocol. Each client owns some of the topic's queues and pulls them by offset
//! (PULL_MESSAGE, up to `--batch` messages a pull) over one connection per broker, with one
//! pull in flight per queue, as the 4.x push consumer keeps them (its pull service asks again
//! for a queue as soon as the queue's last answer is in, and the answers of different queues
//! share the connection). A queue with nothing new is long-polled (sysFlag SUSPEND). The
//! group's position is committed by the next pull (sysFlag COMMIT_OFFSET, as the 4.x push
//! consumer commits) and once more at the end. Nothing is acknowledged message by message: this is the read model Kafka's consumer
//! has, so the two compare, while `bench consume` measures the RocketMQ 5 receive-and-ack one.
//!
//! It speaks only the wire protocol, so it reads from any remoting broker the same way:
//! FerroMQ's remoting port (standalone, or a proxy's) and Apache RocketMQ's name server and
//! broker. Every record's CRC is checked and its body and properties decoded, as a client
//! must before handing a message on. No TLS and no ACL signature: for test and bench systems.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use ferromq_remoting::body::{self, TopicRouteData};
use ferromq_remoting::code::{request, response};
use ferromq_remoting::custom::{
    pull_sys_flag, GetRouteInfoRequestHeader, OffsetResponseHeader, PullMessageRequestHeader,
    PullMessageResponseHeader, QueryConsumerOffsetRequestHeader, UpdateConsumerOffsetRequestHeader,
};
use ferromq_remoting::message::StoredMessage;
use ferromq_remoting::{Command, RemotingCodec};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite};
use tracing::{info_span, Instrument as _};

use super::{new_histogram, report, watch, Totals};
use crate::dial::now_ms;

/// Longest one call may take before the run calls the server stuck.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a pull on a queue with nothing new may be held by the server (long polling).
const SUSPEND: Duration = Duration::from_millis(1000);
/// Calls a connection queues for its writer before callers wait.
const WRITE_QUEUE: usize = 256;

#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// Name server of the remoting protocol (host:port): FerroMQ's `--remoting-addr`, or Apache
    /// RocketMQ's name server. The topic's route it gives says which brokers to pull from.
    #[arg(long, env = "FERROMQ_NAMESRV", default_value = "127.0.0.1:9876")]
    pub namesrv: String,
    /// Topic to read (it must exist).
    #[arg(long, value_parser = crate::cli::topic_name)]
    pub topic: String,
    /// Consumer group whose committed position the read starts from (the queue's start when it
    /// has none) and moves.
    #[arg(long, default_value = "ferromq-bench", value_parser = crate::cli::group_name)]
    pub group: String,
    /// Concurrent clients, each with its own connection per broker and its share of the queues
    /// (one pull in flight per queue).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    pub clients: u16,
    /// Messages asked for per pull (a broker may answer fewer: FerroMQ at most 256, RocketMQ
    /// 32 by default).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(i32).range(1..=1024))]
    pub batch: i32,
    /// How long to run, e.g. `30s`, `2m`, `500ms`.
    #[arg(long, default_value = "10s", value_parser = super::parse_duration)]
    pub duration: Duration,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// One queue of the topic: the broker (group) holding it and where this run reads it from.
#[derive(Debug, Clone)]
struct Queue {
    broker_name: String,
    addr: String,
    id: i32,
    /// Next offset to pull; everything below it was read.
    offset: i64,
    /// What the broker has been told the group read.
    committed: i64,
}

/// Answers awaited on a connection, by opaque.
type Pending = Arc<Mutex<HashMap<i32, oneshot::Sender<Command>>>>;

/// One remoting connection that several calls share: answers are matched to their calls by
/// opaque, so each queue of a client keeps its own pull in flight on it.
struct Conn {
    out: mpsc::Sender<Command>,
    pending: Pending,
    opaque: AtomicI32,
    closed: Arc<AtomicBool>,
}

impl Conn {
    async fn open(addr: &str) -> anyhow::Result<Arc<Conn>> {
        let tcp = tokio::time::timeout(CALL_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| anyhow!("connecting to {addr} timed out"))?
            .with_context(|| format!("connect to {addr}"))?;
        tcp.set_nodelay(true)?;
        let (read, write) = tcp.into_split();
        let mut reader = FramedRead::new(read, RemotingCodec::default());
        let mut writer = FramedWrite::new(write, RemotingCodec::default());
        let (out, mut queued) = mpsc::channel::<Command>(WRITE_QUEUE);
        let pending: Pending = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        // The writer sends what is queued in one flush; it ends (closing our half of the
        // socket, which ends the reader too) when the connection is dropped.
        tokio::spawn(async move {
            while let Some(cmd) = queued.recv().await {
                if writer.feed(cmd).await.is_err() {
                    return;
                }
                while let Ok(more) = queued.try_recv() {
                    if writer.feed(more).await.is_err() {
                        return;
                    }
                }
                if SinkExt::<Command>::flush(&mut writer).await.is_err() {
                    return;
                }
            }
        });
        let (waiting, gone) = (pending.clone(), closed.clone());
        tokio::spawn(async move {
            // Requests the server makes (notifications) are ignored.
            while let Some(Ok(r)) = reader.next().await {
                if r.is_response() {
                    if let Some(tx) = waiting.lock().remove(&r.opaque) {
                        let _ = tx.send(r);
                    }
                }
            }
            gone.store(true, Ordering::Release);
            // Callers still waiting learn now that no answer will come.
            waiting.lock().clear();
        });
        Ok(Arc::new(Conn {
            out,
            pending,
            opaque: AtomicI32::new(0),
            closed,
        }))
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Sends `cmd` and returns its answer.
    async fn call(&self, mut cmd: Command) -> anyhow::Result<Command> {
        let opaque = self.opaque.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        cmd.opaque = opaque;
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(opaque, tx);
        if self.is_closed() {
            self.pending.lock().remove(&opaque);
            bail!("the server closed the connection");
        }
        let answer = tokio::time::timeout(CALL_TIMEOUT, async {
            self.out
                .send(cmd)
                .await
                .map_err(|_| anyhow!("the connection is closed"))?;
            rx.await
                .map_err(|_| anyhow!("the server closed the connection"))
        })
        .await;
        match answer {
            Ok(a) => a,
            Err(_) => {
                self.pending.lock().remove(&opaque);
                Err(anyhow!("no answer in {CALL_TIMEOUT:?}"))
            }
        }
    }
}

/// A client's connection to one broker, opened again by the first queue that finds it closed.
struct Link {
    addr: String,
    conn: Mutex<Arc<Conn>>,
}

impl Link {
    fn get(&self) -> Arc<Conn> {
        self.conn.lock().clone()
    }

    async fn reopen_if_closed(&self) {
        if !self.get().is_closed() {
            return;
        }
        if let Ok(fresh) = Conn::open(&self.addr).await {
            *self.conn.lock() = fresh;
        }
    }
}

/// The topic's readable queues, from the name server's route (each broker group's master).
async fn route(namesrv: &str, topic: &str) -> anyhow::Result<Vec<Queue>> {
    let c = Conn::open(namesrv).await?;
    let r = c
        .call(Command::request(
            request::GET_ROUTEINFO_BY_TOPIC,
            0,
            &GetRouteInfoRequestHeader {
                topic: topic.to_string(),
                accept_standard_json_only: Some(true),
            },
        ))
        .await
        .context("ask the name server for the topic's route")?;
    if r.code != response::SUCCESS {
        bail!(
            "the name server has no route for {topic}: code {} {}",
            r.code,
            r.remark.unwrap_or_default()
        );
    }
    let route: TopicRouteData = body::decode(&r.body).context("read the topic's route")?;
    let mut queues = Vec::new();
    for qd in &route.queue_datas {
        if qd.perm & body::perm::READ == 0 {
            continue;
        }
        let addr = route
            .broker_datas
            .iter()
            .find(|b| b.broker_name == qd.broker_name)
            .and_then(|b| b.broker_addrs.0.get(&0))
            .with_context(|| format!("the route names no master for {}", qd.broker_name))?;
        for id in 0..qd.read_queue_nums {
            queues.push(Queue {
                broker_name: qd.broker_name.clone(),
                addr: addr.clone(),
                id,
                offset: 0,
                committed: 0,
            });
        }
    }
    if queues.is_empty() {
        bail!("{topic} has no readable queue");
    }
    Ok(queues)
}

/// A request naming the broker group it is for (`bname`), which a proxy routes by.
fn to_broker(
    code: i32,
    header: &impl ferromq_remoting::custom::CustomHeader,
    q: &Queue,
) -> Command {
    let mut cmd = Command::request(code, 0, header);
    cmd.ext_fields
        .insert("bname".to_string(), q.broker_name.clone());
    cmd
}

/// Where the group left `q`: its committed offset, or the queue's start (0) when it has none.
async fn start_offset(c: &Conn, group: &str, topic: &str, q: &Queue) -> anyhow::Result<i64> {
    let r = c
        .call(to_broker(
            request::QUERY_CONSUMER_OFFSET,
            &QueryConsumerOffsetRequestHeader {
                consumer_group: group.to_string(),
                topic: topic.to_string(),
                queue_id: q.id,
                set_zero_if_not_found: None,
            },
            q,
        ))
        .await?;
    match r.code {
        response::SUCCESS => Ok(r.header::<OffsetResponseHeader>()?.offset.max(0)),
        response::QUERY_NOT_FOUND => Ok(0),
        code => bail!(
            "QUERY_CONSUMER_OFFSET for queue {}: code {code} {}",
            q.id,
            r.remark.unwrap_or_default()
        ),
    }
}

/// One pull of `q`, recording each message's end-to-end latency (now minus its born time).
async fn pull_once(
    c: &Conn,
    a: &PullArgs,
    q: &mut Queue,
    totals: &Totals,
    local: &mut Histogram<u64>,
) -> anyhow::Result<()> {
    let mut sys_flag = pull_sys_flag::SUBSCRIPTION;
    if q.offset > q.committed {
        sys_flag |= pull_sys_flag::COMMIT_OFFSET;
    }
    // Each queue has its own pull in flight, so holding one starves no other.
    sys_flag |= pull_sys_flag::SUSPEND;
    let header = PullMessageRequestHeader {
        consumer_group: a.group.clone(),
        topic: a.topic.clone(),
        queue_id: q.id,
        queue_offset: q.offset,
        max_msg_nums: a.batch,
        sys_flag,
        commit_offset: q.offset,
        suspend_timeout_millis: SUSPEND.as_millis() as i64,
        subscription: Some("*".to_string()),
        sub_version: 0,
        expression_type: Some("TAG".to_string()),
        max_msg_bytes: None,
    };
    let r = c.call(to_broker(request::PULL_MESSAGE, &header, q)).await?;
    if sys_flag & pull_sys_flag::COMMIT_OFFSET != 0 && r.code != response::SYSTEM_ERROR {
        q.committed = q.offset;
    }
    let next = |r: &Command| -> anyhow::Result<i64> {
        Ok(r.header::<PullMessageResponseHeader>()?.next_begin_offset)
    };
    match r.code {
        response::SUCCESS => {
            let msgs = StoredMessage::decode_all(&r.body, true)
                .with_context(|| format!("decode the messages pulled from queue {}", q.id))?;
            let now = now_ms();
            let mut bytes = 0u64;
            for m in &msgs {
                bytes += m.body.len() as u64;
                let lat_ms = (now - m.born_timestamp).max(0) as u64;
                let _ = local.record((lat_ms * 1000).max(1));
            }
            totals.bytes.fetch_add(bytes, Ordering::Relaxed);
            totals.ok.fetch_add(msgs.len() as u64, Ordering::Relaxed);
            q.offset = next(&r)?;
            Ok(())
        }
        response::PULL_NOT_FOUND => {
            q.offset = next(&r)?;
            Ok(())
        }
        response::PULL_RETRY_IMMEDIATELY | response::PULL_OFFSET_MOVED => {
            q.offset = next(&r)?;
            Ok(())
        }
        code => bail!(
            "PULL_MESSAGE on queue {} refused: code {code} {}",
            q.id,
            r.remark.unwrap_or_default()
        ),
    }
}

/// Tells the broker where the group is on `q` (the last pulls' offsets are not committed yet).
async fn commit(c: &Conn, a: &PullArgs, q: &Queue) -> anyhow::Result<()> {
    let r = c
        .call(to_broker(
            request::UPDATE_CONSUMER_OFFSET,
            &UpdateConsumerOffsetRequestHeader {
                consumer_group: a.group.clone(),
                topic: a.topic.clone(),
                queue_id: q.id,
                commit_offset: q.offset,
            },
            q,
        ))
        .await?;
    if r.code != response::SUCCESS {
        bail!(
            "UPDATE_CONSUMER_OFFSET for queue {}: code {} {}",
            q.id,
            r.code,
            r.remark.unwrap_or_default()
        );
    }
    Ok(())
}

/// Counts a failure and keeps the first one's reason for the report.
fn note_failure(totals: &Totals, first_failure: &Mutex<Option<String>>, why: String) {
    totals.failed.fetch_add(1, Ordering::Relaxed);
    first_failure.lock().get_or_insert(why);
}

/// One client: a connection per broker, and each of its queues pulled by its own task until
/// `end`, then committed.
async fn client(
    a: Arc<PullArgs>,
    queues: Vec<Queue>,
    end: tokio::time::Instant,
    totals: Arc<Totals>,
    first_failure: Arc<Mutex<Option<String>>>,
) -> anyhow::Result<()> {
    let mut links: HashMap<String, Arc<Link>> = HashMap::new();
    for q in &queues {
        if !links.contains_key(&q.addr) {
            let conn = Conn::open(&q.addr).await?;
            links.insert(
                q.addr.clone(),
                Arc::new(Link {
                    addr: q.addr.clone(),
                    conn: Mutex::new(conn),
                }),
            );
        }
    }
    let mut tasks = Vec::new();
    for mut q in queues {
        let Some(link) = links.get(&q.addr).cloned() else {
            continue;
        };
        q.offset = start_offset(&link.get(), &a.group, &a.topic, &q).await?;
        q.committed = q.offset;
        tasks.push(tokio::spawn(read_queue(
            a.clone(),
            link,
            q,
            end,
            totals.clone(),
            first_failure.clone(),
        )));
    }
    for t in tasks {
        t.await?;
    }
    Ok(())
}

/// Pulls `q` until `end` (one pull in flight), then commits where it got to.
async fn read_queue(
    a: Arc<PullArgs>,
    link: Arc<Link>,
    mut q: Queue,
    end: tokio::time::Instant,
    totals: Arc<Totals>,
    first_failure: Arc<Mutex<Option<String>>>,
) {
    let mut local = new_histogram();
    while tokio::time::Instant::now() < end {
        let c = link.get();
        // A pull still held at the end is dropped: an empty topic cannot stretch the run.
        match tokio::time::timeout_at(end, pull_once(&c, &a, &mut q, &totals, &mut local)).await {
            Err(_) => break,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                note_failure(&totals, &first_failure, format!("{e:#}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                link.reopen_if_closed().await;
            }
        }
    }
    let _ = totals.hist.lock().add(&local);
    if q.offset != q.committed {
        if let Err(e) = commit(&link.get(), &a, &q).await {
            note_failure(&totals, &first_failure, format!("{e:#}"));
        }
    }
}

pub async fn run(a: PullArgs) -> anyhow::Result<()> {
    let span = info_span!("bench_pull", topic = %a.topic, group = %a.group);
    async move {
        let queues = route(&a.namesrv, &a.topic).await?;
        let clients = usize::from(a.clients).min(queues.len());
        let mut shares: Vec<Vec<Queue>> = vec![Vec::new(); clients];
        for (i, q) in queues.into_iter().enumerate() {
            shares[i % clients].push(q);
        }
        let totals = Arc::new(Totals::new());
        let first_failure: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let a = Arc::new(a);
        let start = Instant::now();
        let end = tokio::time::Instant::from_std(start + a.duration);
        let mut tasks = Vec::new();
        for share in shares {
            tasks.push(tokio::spawn(client(
                a.clone(),
                share,
                end,
                totals.clone(),
                first_failure.clone(),
            )));
        }
        let bar = watch(&totals, a.duration, "pull");
        let mut setup_error = None;
        for t in tasks {
            if let Err(e) = t.await? {
                setup_error.get_or_insert(e);
            }
        }
        // Measured to the deadline, not to the last commit after it.
        let elapsed = start
            .elapsed()
            .min(a.duration.max(Duration::from_millis(1)));
        drop(bar);
        if let Some(e) = setup_error {
            return Err(e.context("a pull client could not start"));
        }
        if let Some(why) = first_failure.lock().take() {
            eprintln!(
                "pull: {} failed; the first: {why}",
                totals.failed.load(Ordering::Relaxed)
            );
        }
        report("pull", &totals, elapsed, a.json);
        Ok(())
    }
    .instrument(span)
    .await
}
