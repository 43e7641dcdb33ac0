//! One remoting connection, whatever carries it: a client's TCP socket, or a proxy's tunnel
//! stream to a broker (`super::tunnel`). Both run [`run`]: a reader that hands each request to
//! the [`Service`] as its own task, and one writer that sends the answers and the server's own
//! requests in the order they are ready.
//!
//! ## Rules
//! - Requests are answered out of order (clients match answers by `opaque`), so a long-polling
//!   pull never holds up a heartbeat behind it on the same connection.
//! - At most [`Limits::in_flight`] requests of one connection are handled at once; the reader
//!   waits for one to finish before it reads the next frame, so a flood of one-way requests
//!   (which have no answer to pace them) is slowed by TCP back-pressure, never buffered
//!   without bound.
//! - A frame that cannot be decoded (too large, truncated, an unknown serialize type, a header
//!   that does not parse) closes the connection: its `opaque` cannot be trusted to answer it,
//!   and the Java server does the same. Nothing it carried has been acted on.
//! - A connection silent for [`Limits::idle`] is closed (clients heartbeat every 30 s).
//! - The server calls clients on their own connection ([`Peer::invoke`], [`Peer::oneway`]):
//!   consumer-membership notifications, transaction checks, running-info requests.
//! - Shutdown: the reader stops, requests in flight finish and are answered, then the
//!   connection closes. A client that goes away closes it too; long polls watch
//!   [`Peer::closed`] and stop.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferromq_remoting::command::FLAG_ONEWAY;
use ferromq_remoting::{Command, FrameError, RemotingCodec};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinSet;
use tokio_util::codec::Framed;
use tracing::{debug, warn};

use crate::serve::{stopped, ConnectionHandler};

/// A future a [`Service`] answers with.
pub type Answer = Pin<Box<dyn Future<Output = Option<Command>> + Send>>;

/// What serves the requests of remoting connections.
pub trait Service: Send + Sync + 'static {
    /// Answers one request; `None` writes nothing (one-way requests are never answered, whatever
    /// this returns).
    fn handle(self: Arc<Self>, peer: Arc<Peer>, request: Command) -> Answer;
    /// The connection closed (the client went away, went idle, or shutdown).
    fn closed(self: Arc<Self>, peer: Arc<Peer>);
}

/// Bounds of one connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest frame accepted, length field included.
    pub max_frame: usize,
    /// Requests handled at once (see the module docs).
    pub in_flight: usize,
    /// Close after this long without a frame from the peer; `None`: never.
    pub idle: Option<Duration>,
}

impl Limits {
    /// Frames up to 16 MiB (RocketMQ's cap) or two message bodies, whichever is larger.
    pub fn for_body_size(max_body: usize) -> Limits {
        Limits {
            max_frame: ferromq_remoting::frame::DEFAULT_MAX_FRAME.max(max_body * 2 + (1 << 20)),
            in_flight: IN_FLIGHT,
            idle: Some(IDLE),
        }
    }
}

/// Requests one connection may have in flight. A 4.x consumer keeps one long-polling pull per
/// queue it holds on its connection, so this bounds the queues one client can pull at once.
pub const IN_FLIGHT: usize = 1024;
/// RocketMQ's server closes a channel idle for 120 s; clients heartbeat every 30 s.
pub const IDLE: Duration = Duration::from_secs(120);
/// Answers and server requests queued for the writer of one connection.
const OUT_QUEUE: usize = 1024;

/// How a connection presents the server: the address routes and offset message ids name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Front {
    /// `host:port` put in routes (the remoting endpoint the client reached).
    pub addr: String,
    /// The same as a socket address, for message ids (which carry an IP).
    pub store_host: SocketAddr,
}

/// Why a call to a client failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("the connection is closed")]
    Closed,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// One connection: its peer's address and a handle to write to it and to call it.
pub struct Peer {
    id: u64,
    /// The client's socket address; through a proxy, the one the proxy saw.
    pub addr: String,
    /// The address authorization checks policies' source ranges against: the socket's peer on
    /// TCP; through a proxy's tunnel, the proxy's own address (the address the proxy reports
    /// for its client is not proven, so it cannot widen what a policy allows).
    pub source: Option<std::net::IpAddr>,
    pub front: Arc<Front>,
    out: mpsc::Sender<Command>,
    pending: Mutex<HashMap<i32, oneshot::Sender<Command>>>,
    next_opaque: AtomicI32,
    closed: watch::Sender<bool>,
}

static NEXT_PEER: AtomicU64 = AtomicU64::new(1);

impl Peer {
    /// A peer writing to `out` (the writer of [`run`] reads the other end).
    pub fn new(addr: String, front: Arc<Front>, out: mpsc::Sender<Command>) -> Arc<Peer> {
        let source = addr
            .parse::<std::net::SocketAddr>()
            .ok()
            .map(|a| ferromq_auth::policy::canonical_ip(a.ip()));
        Peer::with_source(addr, source, front, out)
    }

    /// A peer whose source address for authorization is not the one its `addr` names.
    pub fn with_source(
        addr: String,
        source: Option<std::net::IpAddr>,
        front: Arc<Front>,
        out: mpsc::Sender<Command>,
    ) -> Arc<Peer> {
        Arc::new(Peer {
            id: NEXT_PEER.fetch_add(1, Ordering::Relaxed),
            addr,
            source,
            front,
            out,
            pending: Mutex::new(HashMap::new()),
            next_opaque: AtomicI32::new(1),
            closed: watch::channel(false).0,
        })
    }

    /// Unique among the connections of this process.
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Resolves when the connection closes.
    pub async fn closed(&self) {
        stopped(self.closed.subscribe()).await
    }

    fn close(&self) {
        self.closed.send_replace(true);
        // Callers waiting for an answer learn now that none will come.
        self.pending.lock().clear();
    }

    /// Queues an answer (waits while the writer's queue is full).
    pub async fn send(&self, cmd: Command) {
        let _ = self.out.send(cmd).await;
    }

    /// Sends a one-way request to the peer (a notification); dropped when the connection is
    /// closed or its writer is backed up, since nothing waits for it.
    pub fn oneway(&self, mut cmd: Command) -> bool {
        if self.is_closed() {
            return false;
        }
        cmd.flag |= FLAG_ONEWAY;
        cmd.opaque = self.next_opaque.fetch_add(1, Ordering::Relaxed);
        self.out.try_send(cmd).is_ok()
    }

    /// Sends a request to the peer and waits for its answer.
    pub async fn invoke(&self, mut cmd: Command, timeout: Duration) -> Result<Command, CallError> {
        if self.is_closed() {
            return Err(CallError::Closed);
        }
        let opaque = self.next_opaque.fetch_add(1, Ordering::Relaxed);
        cmd.opaque = opaque;
        cmd.flag &= !FLAG_ONEWAY;
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(opaque, tx);
        let sent = tokio::time::timeout(timeout, self.out.send(cmd)).await;
        if !matches!(sent, Ok(Ok(()))) {
            self.pending.lock().remove(&opaque);
            return Err(CallError::Closed);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(CallError::Closed),
            Err(_) => {
                self.pending.lock().remove(&opaque);
                Err(CallError::Timeout(timeout))
            }
        }
    }

    /// Hands an answer from the peer to the caller waiting for it (an answer nobody waits for
    /// any more, after a timeout, is dropped).
    fn complete(&self, answer: Command) {
        if let Some(tx) = self.pending.lock().remove(&answer.opaque) {
            let _ = tx.send(answer);
        }
    }
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("id", &self.id)
            .field("addr", &self.addr)
            .finish()
    }
}

/// Runs one connection until the peer goes away, goes idle or sends a bad frame, or shutdown
/// begins (see the module docs). `out_rx` is the other end of the peer's writer queue.
pub async fn run<R, W>(
    service: Arc<dyn Service>,
    peer: Arc<Peer>,
    out_rx: mpsc::Receiver<Command>,
    mut reader: R,
    writer: W,
    limits: Limits,
    shutdown: watch::Receiver<bool>,
) where
    R: Stream<Item = Result<Command, FrameError>> + Unpin + Send,
    W: Sink<Command, Error = FrameError> + Unpin + Send + 'static,
{
    let (finish, finished) = oneshot::channel();
    let writer_task = tokio::spawn(write_loop(out_rx, writer, finished, peer.addr.clone()));
    let permits = Arc::new(Semaphore::new(limits.in_flight));
    let mut handlers = JoinSet::new();
    let mut shutting_down = false;
    loop {
        let next = tokio::select! {
            _ = stopped(shutdown.clone()) => {
                shutting_down = true;
                break;
            }
            Some(_) = handlers.join_next(), if !handlers.is_empty() => continue,
            next = read_next(&mut reader, limits.idle) => next,
        };
        let cmd = match next {
            Read::Frame(cmd) => cmd,
            Read::Idle => {
                debug!(peer = %peer.addr, "closing an idle connection");
                break;
            }
            Read::End => break,
            Read::Bad(e) => {
                warn!(peer = %peer.addr, error = %e, "closing the connection: unreadable frame");
                break;
            }
        };
        if cmd.is_response() {
            peer.complete(cmd);
            continue;
        }
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stopped(shutdown.clone()) => {
                shutting_down = true;
                break;
            }
        };
        let (svc, p) = (service.clone(), peer.clone());
        handlers.spawn(async move {
            let oneway = cmd.is_oneway();
            let answer = svc.handle(p.clone(), cmd).await;
            if let (Some(a), false) = (answer, oneway) {
                p.send(a).await;
            }
            drop(permit);
        });
    }
    if !shutting_down {
        // The peer is gone: what is in flight stops waiting for it.
        peer.close();
    }
    while handlers.join_next().await.is_some() {}
    peer.close();
    service.closed(peer.clone());
    // Every answer is queued now: the writer writes them and ends.
    let _ = finish.send(());
    let _ = writer_task.await;
}

enum Read {
    Frame(Command),
    Idle,
    End,
    Bad(FrameError),
}

async fn read_next<R>(reader: &mut R, idle: Option<Duration>) -> Read
where
    R: Stream<Item = Result<Command, FrameError>> + Unpin,
{
    let next = match idle {
        Some(d) => match tokio::time::timeout(d, reader.next()).await {
            Ok(n) => n,
            Err(_) => return Read::Idle,
        },
        None => reader.next().await,
    };
    match next {
        Some(Ok(cmd)) => Read::Frame(cmd),
        Some(Err(e)) => Read::Bad(e),
        None => Read::End,
    }
}

/// Writes queued commands, batching what is ready into one flush, until `finished` says every
/// answer is queued (then what is queued is written and the connection closed).
async fn write_loop<W>(
    mut rx: mpsc::Receiver<Command>,
    mut writer: W,
    finished: oneshot::Receiver<()>,
    addr: String,
) where
    W: Sink<Command, Error = FrameError> + Unpin,
{
    let done = finished;
    tokio::pin!(done);
    loop {
        let first = tokio::select! {
            biased;
            cmd = rx.recv() => cmd,
            _ = &mut done => None,
        };
        // (`done` resolves once: when finished, or when `run` is gone.)
        let Some(first) = first else { break };
        if let Err(e) = write_batch(&mut writer, first, &mut rx).await {
            debug!(peer = %addr, error = %e, "write failed; the connection is gone");
            return;
        }
    }
    // Closing: write what is queued (answers of the last requests).
    while let Ok(cmd) = rx.try_recv() {
        if writer.feed(cmd).await.is_err() {
            return;
        }
    }
    let _ = writer.flush().await;
    let _ = writer.close().await;
}

async fn write_batch<W>(
    writer: &mut W,
    first: Command,
    rx: &mut mpsc::Receiver<Command>,
) -> Result<(), FrameError>
where
    W: Sink<Command, Error = FrameError> + Unpin,
{
    writer.feed(first).await?;
    for _ in 0..64 {
        match rx.try_recv() {
            Ok(cmd) => writer.feed(cmd).await?,
            Err(_) => break,
        }
    }
    writer.flush().await
}

/// Serves remoting connections on a TCP listener (plugs into the serve loop).
pub struct TcpRemoting {
    pub service: Arc<dyn Service>,
    pub front: Arc<Front>,
    pub limits: Limits,
}

impl ConnectionHandler for TcpRemoting {
    fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        shutdown: watch::Receiver<bool>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            let (writer, reader) =
                Framed::new(stream, RemotingCodec::new(self.limits.max_frame)).split();
            let (tx, rx) = mpsc::channel(OUT_QUEUE);
            let p = Peer::new(peer.to_string(), self.front.clone(), tx);
            debug!(peer = %peer, "remoting connection opened");
            run(
                self.service.clone(),
                p,
                rx,
                reader,
                writer,
                self.limits,
                shutdown,
            )
            .await;
            debug!(peer = %peer, "remoting connection closed");
        })
    }
}

/// A writer queue for a peer of another transport (the tunnel).
pub fn queue() -> (mpsc::Sender<Command>, mpsc::Receiver<Command>) {
    mpsc::channel(OUT_QUEUE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferromq_remoting::code::response;
    use std::sync::atomic::AtomicUsize;
    use tokio_stream::wrappers::ReceiverStream;

    /// Answers every request; requests with code 1 take 50 ms. Counts how many run at once.
    #[derive(Default)]
    struct Counting {
        now: AtomicUsize,
        max: AtomicUsize,
        closed: AtomicUsize,
    }

    impl Service for Counting {
        fn handle(self: Arc<Self>, _peer: Arc<Peer>, req: Command) -> Answer {
            Box::pin(async move {
                let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
                self.max.fetch_max(n, Ordering::SeqCst);
                if req.code == 1 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                self.now.fetch_sub(1, Ordering::SeqCst);
                Some(req.response_to(response::SUCCESS, None))
            })
        }

        fn closed(self: Arc<Self>, _peer: Arc<Peer>) {
            self.closed.fetch_add(1, Ordering::SeqCst);
        }
    }

    type Incoming = mpsc::Sender<Result<Command, FrameError>>;

    /// A connection over in-memory channels: what the client sends, what it receives.
    fn connect(
        service: Arc<Counting>,
        limits: Limits,
    ) -> (
        Incoming,
        mpsc::Receiver<Command>,
        tokio::task::JoinHandle<()>,
        watch::Sender<bool>,
    ) {
        let (in_tx, in_rx) = mpsc::channel(64);
        let (out_tx, out_rx) = mpsc::channel::<Command>(64);
        let writer = futures_util::sink::unfold(out_tx, |tx, cmd: Command| async move {
            tx.send(cmd).await.map_err(|_| {
                FrameError::Io(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            })?;
            Ok::<_, FrameError>(tx)
        });
        let (q_tx, q_rx) = queue();
        let front = Arc::new(Front {
            addr: "127.0.0.1:9876".into(),
            store_host: "127.0.0.1:9876".parse().expect("addr"),
        });
        let peer = Peer::new("127.0.0.1:5000".into(), front, q_tx);
        let (shutdown, watching) = watch::channel(false);
        let task = tokio::spawn(run(
            service,
            peer,
            q_rx,
            ReceiverStream::new(in_rx),
            Box::pin(writer),
            limits,
            watching,
        ));
        (in_tx, out_rx, task, shutdown)
    }

    fn req(code: i32, opaque: i32) -> Command {
        Command {
            code,
            opaque,
            ..Command::default()
        }
    }

    #[tokio::test]
    async fn requests_in_flight_are_bounded_and_answered_out_of_order() {
        let svc = Arc::new(Counting::default());
        let limits = Limits {
            max_frame: 1 << 20,
            in_flight: 2,
            idle: None,
        };
        let (tx, mut rx, task, _shutdown) = connect(svc.clone(), limits);
        for i in 1..=6 {
            tx.send(Ok(req(1, i))).await.expect("send");
        }
        let mut answered = Vec::new();
        while answered.len() < 6 {
            answered.push(rx.recv().await.expect("an answer").opaque);
        }
        answered.sort();
        assert_eq!(
            answered,
            vec![1, 2, 3, 4, 5, 6],
            "every request answered once"
        );
        assert_eq!(
            svc.max.load(Ordering::SeqCst),
            2,
            "never more than the limit at once"
        );
        drop(tx);
        task.await.expect("connection ends with its stream");
        assert_eq!(svc.closed.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_bad_frame_closes_the_connection_and_one_way_requests_get_no_answer() {
        let svc = Arc::new(Counting::default());
        let (tx, mut rx, task, _shutdown) = connect(svc.clone(), Limits::for_body_size(1024));
        let mut oneway = req(2, 7);
        oneway.flag = FLAG_ONEWAY;
        tx.send(Ok(oneway)).await.expect("send");
        tx.send(Ok(req(2, 8))).await.expect("send");
        tx.send(Err(FrameError::UnknownSerializeType(9)))
            .await
            .expect("send");
        assert_eq!(
            rx.recv().await.map(|c| c.opaque),
            Some(8),
            "only the two-way one"
        );
        task.await.expect("the bad frame ends the connection");
        assert!(rx.recv().await.is_none(), "and nothing more is written");
        assert_eq!(svc.closed.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn shutdown_stops_reading_and_answers_what_is_in_flight() {
        let svc = Arc::new(Counting::default());
        let (tx, mut rx, task, shutdown) = connect(svc.clone(), Limits::for_body_size(1024));
        tx.send(Ok(req(1, 1))).await.expect("send");
        tokio::time::sleep(Duration::from_millis(10)).await;
        shutdown.send_replace(true);
        assert_eq!(rx.recv().await.map(|c| c.opaque), Some(1), "answered");
        task.await.expect("the connection ends");
        let _ = tx.send(Ok(req(2, 2))).await;
        assert!(
            rx.recv().await.is_none(),
            "nothing read after shutdown began"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_closed() {
        let svc = Arc::new(Counting::default());
        let (_tx, _rx, task, _shutdown) = connect(svc.clone(), Limits::for_body_size(1024));
        tokio::time::timeout(IDLE + Duration::from_secs(1), task)
            .await
            .expect("closed after the idle time")
            .expect("task");
        assert_eq!(svc.closed.load(Ordering::SeqCst), 1);
    }
}
