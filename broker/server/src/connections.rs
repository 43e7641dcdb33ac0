//! What a client may hold on a role's ports, bounded: connections, descriptors, time.
//!
//! Every listener of a role (gRPC, HTTP) takes its connections through one [`Connections`]:
//! - **Client connections** (the gRPC port) are capped at `max-connections` and at the
//!   descriptor limit minus `fd-reserve`. At start the soft RLIMIT_NOFILE is raised to the hard
//!   limit; what clients can hold is that minus the reserve, so the store (segments, metadata
//!   log, checkpoint), outgoing connections and the HTTP port always find a descriptor. A
//!   connection over the cap is closed as soon as it is accepted (the client sees the connection
//!   reset and retries elsewhere or later). The HTTP port (probes, metrics scrapes) has its own
//!   small cap, [`HTTP_CONNECTIONS`], taken out of the reserve, so clients filling their cap never
//!   make a liveness probe fail.
//! - **Handshake timeout**: a new connection must send its first byte and finish its TLS
//!   handshake within `handshake-timeout`, or it is closed.
//! - **Idle timeout**: a connection that carries nothing for `idle-timeout` is closed. On the
//!   gRPC port the byte stream is read as HTTP/2 frames (9-byte headers after the client's
//!   preface) and PING frames do not count: the server's own keepalive PINGs (every 60 s,
//!   answered within 20 s or the connection is dropped) detect dead peers, and a client that only
//!   answers PINGs while holding a descriptor is idle. Every other frame, in either direction,
//!   counts as activity, so a long poll (at most 30 s of silence) or a Telemetry stream whose
//!   client heartbeats (every 10 s; 30 s for Rust 5.0.0) never looks idle. On the HTTP port any
//!   byte counts.
//! - Per connection, HTTP/2 allows `max-concurrent-streams` open streams (more are refused with
//!   REFUSED_STREAM) and header blocks of `max-header-list-size` bytes (set on the gRPC server
//!   builder by [`crate::serve`]).

use std::future::Future as _;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tracing::{debug, info, warn};

use crate::metrics::Family;

/// The bounds a role's listeners enforce (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub max_concurrent_streams: u32,
    pub max_header_list_size: u32,
    pub idle_timeout: Duration,
    pub handshake_timeout: Duration,
    pub fd_reserve: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 10_000,
            max_concurrent_streams: 256,
            max_header_list_size: 16 << 10,
            idle_timeout: Duration::from_secs(300),
            handshake_timeout: Duration::from_secs(10),
            fd_reserve: 256,
        }
    }
}

/// Connections the HTTP port (health probes, metrics) may hold at once. They come out of the
/// descriptor reserve.
pub const HTTP_CONNECTIONS: usize = 32;

/// The two kinds of port a role listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// The client port (gRPC).
    Clients,
    /// Health and metrics (HTTP/1).
    Http,
}

/// Raises the soft descriptor limit to the hard one; returns the soft limit now in force.
pub fn raise_nofile() -> Option<u64> {
    // SAFETY: getrlimit/setrlimit fill and read a plain struct.
    let mut r: libc::rlimit = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return None;
    }
    if r.rlim_cur < r.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: r.rlim_max,
            rlim_max: r.rlim_max,
        };
        // An infinite hard limit is refused by the kernel (nr_open caps it): keep the soft one.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            r.rlim_cur = r.rlim_max;
        }
    }
    Some(r.rlim_cur as u64)
}

/// The connections of one role: the cap, what is open, and what was turned away.
#[derive(Debug)]
pub struct Connections {
    pub limits: Limits,
    /// Client connections allowed open at once (see the module docs).
    cap: usize,
    open: AtomicUsize,
    open_http: AtomicUsize,
    refused: AtomicU64,
    timed_out: AtomicU64,
    /// When the last "connection refused" warning was logged (one per 10 s).
    last_warning: Mutex<Option<Instant>>,
}

impl Connections {
    /// Raises the descriptor limit and computes the cap.
    pub fn new(limits: Limits) -> Arc<Connections> {
        let nofile = raise_nofile();
        let by_fds = nofile.map_or(usize::MAX, |n| n.saturating_sub(limits.fd_reserve) as usize);
        let cap = limits.max_connections.min(by_fds);
        if cap < limits.max_connections {
            info!(
                nofile = nofile.unwrap_or(0),
                fd_reserve = limits.fd_reserve,
                cap,
                "client connections capped by the descriptor limit"
            );
        }
        if cap < 16 {
            warn!(cap, "the descriptor limit leaves almost no room for client connections; raise `ulimit -n` or lower fd-reserve");
        }
        Arc::new(Connections {
            limits,
            cap,
            open: AtomicUsize::new(0),
            open_http: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            last_warning: Mutex::new(None),
        })
    }

    /// Client connections allowed open at once.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Client connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    fn counter(&self, port: Port) -> (&AtomicUsize, usize) {
        match port {
            Port::Clients => (&self.open, self.cap),
            Port::Http => (&self.open_http, HTTP_CONNECTIONS),
        }
    }

    /// Connections closed at accept because the cap was reached, since start.
    pub fn refused_total(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Connections closed for silence (handshake or idle timeout), since start.
    pub fn timed_out_total(&self) -> u64 {
        self.timed_out.load(Ordering::Relaxed)
    }

    /// Families for `/metrics`: open connections and the cap, refusals and timeouts.
    pub fn families(&self) -> Vec<Family> {
        let port = |p: &str| vec![("port", p.to_string())];
        vec![
            Family::gauge(
                "ferromq_connections",
                "Connections open, by port (clients: gRPC; http: probes and metrics).",
            )
            .with(port("clients"), self.open())
            .with(port("http"), self.open_http.load(Ordering::Relaxed)),
            Family::gauge(
                "ferromq_connections_max",
                "Connections allowed open at once, by port (clients: max-connections, or the descriptor limit minus fd-reserve if lower).",
            )
            .with(port("clients"), self.cap)
            .with(port("http"), HTTP_CONNECTIONS),
            Family::counter(
                "ferromq_connections_refused_total",
                "Connections closed at accept because the limit was reached.",
            )
            .value(self.refused_total()),
            Family::counter(
                "ferromq_connections_timed_out_total",
                "Connections closed for sending no first byte or finishing no TLS handshake in time, or for being idle.",
            )
            .value(self.timed_out_total()),
        ]
    }

    /// Counts a connection closed for silence.
    pub fn count_timeout(&self) {
        self.timed_out.fetch_add(1, Ordering::Relaxed);
    }

    /// A permit for a just-accepted connection, or `None` (then drop the connection) when the
    /// cap is reached.
    pub fn admit(self: &Arc<Self>, peer: SocketAddr, port: Port) -> Option<Permit> {
        let (open, cap) = self.counter(port);
        let prev = open.fetch_add(1, Ordering::AcqRel);
        if prev < cap {
            return Some(Permit(self.clone(), port));
        }
        open.fetch_sub(1, Ordering::AcqRel);
        self.refused.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut last = self.last_warning.lock();
        if last.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10)) {
            *last = Some(now);
            warn!(%peer, ?port, cap, refused_total = self.refused_total(), "connection limit reached; closing new connections");
        }
        None
    }

    /// Accepts the next connection the cap admits. Accept errors (out of descriptors, say) back
    /// off briefly instead of spinning.
    pub async fn accept(
        self: &Arc<Self>,
        listener: &TcpListener,
        port: Port,
    ) -> (TcpStream, SocketAddr, Permit) {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    if let Some(p) = self.admit(peer, port) {
                        return (stream, peer, p);
                    }
                    drop(stream);
                }
                Err(e) => {
                    debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// One admitted connection; releases its place when dropped (with the connection).
#[derive(Debug)]
pub struct Permit(Arc<Connections>, Port);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.counter(self.1).0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Reads HTTP/2 frame headers out of a byte stream to tell PINGs from everything else.
#[derive(Debug, Clone, Default)]
struct FrameScanner {
    /// Bytes of the client connection preface still to skip.
    preface_left: usize,
    header: [u8; 9],
    have: usize,
    /// Payload bytes of the current frame still to skip.
    payload_left: usize,
}

/// HTTP/2 frame type of PING.
const PING: u8 = 0x6;
/// `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`
const CLIENT_PREFACE_LEN: usize = 24;

impl FrameScanner {
    fn client() -> FrameScanner {
        FrameScanner {
            preface_left: CLIENT_PREFACE_LEN,
            ..Default::default()
        }
    }

    /// Feeds bytes; says whether they held the start of a frame other than PING.
    fn feed(&mut self, mut buf: &[u8]) -> bool {
        let mut active = false;
        while !buf.is_empty() {
            if self.preface_left > 0 {
                let n = self.preface_left.min(buf.len());
                self.preface_left -= n;
                buf = &buf[n..];
                active = true;
                continue;
            }
            if self.payload_left > 0 {
                let n = self.payload_left.min(buf.len());
                self.payload_left -= n;
                buf = &buf[n..];
                continue;
            }
            let n = (9 - self.have).min(buf.len());
            self.header[self.have..self.have + n].copy_from_slice(&buf[..n]);
            self.have += n;
            buf = &buf[n..];
            if self.have == 9 {
                let h = self.header;
                self.payload_left =
                    usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                self.have = 0;
                active |= h[3] != PING;
            }
        }
        active
    }
}

/// How activity is recognised on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// gRPC: HTTP/2 frames, PINGs excluded.
    Http2,
    /// Anything else (the HTTP/1 port): every byte.
    Bytes,
}

/// A connection's byte stream, closed (with a `TimedOut` error to its reader) when the client
/// sends no first byte within the handshake timeout or the connection is idle for the idle
/// timeout. Holds the connection's [`Permit`].
pub struct Guarded<T> {
    inner: T,
    _permit: Permit,
    conns: Arc<Connections>,
    first_byte_by: Instant,
    idle: Duration,
    last_active: Instant,
    seen_first: bool,
    reads: Option<FrameScanner>,
    writes: Option<FrameScanner>,
    timer: Pin<Box<Sleep>>,
}

impl<T> Guarded<T> {
    /// Wraps an accepted connection. `accepted` is when it was accepted (the handshake timeout
    /// runs from there).
    pub fn new(inner: T, permit: Permit, protocol: Protocol, accepted: Instant) -> Guarded<T> {
        let conns = permit.0.clone();
        let first_byte_by = accepted + conns.limits.handshake_timeout;
        let (reads, writes) = match protocol {
            Protocol::Http2 => (Some(FrameScanner::client()), Some(FrameScanner::default())),
            Protocol::Bytes => (None, None),
        };
        Guarded {
            inner,
            idle: conns.limits.idle_timeout,
            conns,
            _permit: permit,
            first_byte_by,
            last_active: accepted,
            seen_first: false,
            reads,
            writes,
            timer: Box::pin(tokio::time::sleep_until(first_byte_by)),
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    fn deadline(&self) -> Instant {
        if self.seen_first {
            self.last_active + self.idle
        } else {
            self.first_byte_by
        }
    }

    /// Pending while the connection may stay; the error that closes it once it may not.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            let deadline = self.deadline();
            if Instant::now() >= deadline {
                self.conns.count_timeout();
                let what = if self.seen_first {
                    "idle timeout"
                } else {
                    "handshake timeout (no first byte)"
                };
                debug!(what, "closing a silent connection");
                return Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, what));
            }
            if self.timer.deadline() != deadline {
                self.timer.as_mut().reset(deadline);
            }
            match self.timer.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                // Fired: look again (activity may have moved the deadline meanwhile).
                Poll::Ready(()) => continue,
            }
        }
    }

    fn saw(scanner: &mut Option<FrameScanner>, bytes: &[u8]) -> bool {
        match scanner {
            Some(s) => s.feed(bytes),
            None => !bytes.is_empty(),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut me.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let got = &buf.filled()[before..];
                if !got.is_empty() {
                    me.seen_first = true;
                    if Self::saw(&mut me.reads, got) {
                        me.last_active = Instant::now();
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => me.poll_deadline(cx).map(Err),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            if Self::saw(&mut me.writes, &buf[..*n]) {
                me.last_active = Instant::now();
            }
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &r {
            let mut left = *n;
            let mut active = false;
            for b in bufs {
                if left == 0 {
                    break;
                }
                let take = left.min(b.len());
                active |= Self::saw(&mut me.writes, &b[..take]);
                left -= take;
            }
            if active {
                me.last_active = Instant::now();
            }
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<T: tonic::transport::server::Connected> tonic::transport::server::Connected for Guarded<T> {
    type ConnectInfo = T::ConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// The HTTP port's listener for `axum::serve`: admitted by the role's [`Connections`], each
/// connection guarded by the handshake and idle timeouts (every byte counts).
pub struct HttpListener {
    pub inner: TcpListener,
    pub conns: Arc<Connections>,
}

impl axum::serve::Listener for HttpListener {
    type Io = Guarded<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, peer, permit) = self.conns.accept(&self.inner, Port::Http).await;
        (
            Guarded::new(stream, permit, Protocol::Bytes, Instant::now()),
            peer,
        )
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(ty: u8, len: usize) -> Vec<u8> {
        let mut f = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            ty,
            0,
            0,
            0,
            0,
            1,
        ];
        f.extend(std::iter::repeat_n(0xAB, len));
        f
    }

    #[test]
    fn pings_are_not_activity_other_frames_are() {
        let mut s = FrameScanner::client();
        assert!(
            s.feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            "the preface is activity"
        );
        assert!(!s.feed(&frame(PING, 8)));
        assert!(s.feed(&frame(0x1, 40)), "HEADERS");
        // Split anywhere, even inside a header or a payload.
        let mut bytes = frame(PING, 8);
        bytes.extend(frame(0x0, 300));
        let (a, b) = bytes.split_at(5);
        assert!(!s.feed(a));
        let (b1, b2) = b.split_at(20);
        assert!(!s.feed(b1), "still inside the PING");
        assert!(s.feed(b2), "the DATA frame's header arrives here");
        assert!(!s.feed(&frame(PING, 8)));
    }

    #[tokio::test(start_paused = true)]
    async fn silent_connections_close_after_their_timeouts() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let conns = Arc::new(Connections {
            limits: Limits {
                handshake_timeout: Duration::from_secs(2),
                idle_timeout: Duration::from_secs(5),
                ..Limits::default()
            },
            cap: 1,
            open: AtomicUsize::new(0),
            open_http: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            last_warning: Mutex::new(None),
        });
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let permit = conns.admit(peer, Port::Clients).expect("room for one");
        assert!(conns.admit(peer, Port::Clients).is_none(), "the cap is one");
        assert_eq!(conns.refused_total(), 1);

        // Never a first byte: closed at the handshake timeout.
        let (mut client, server) = tokio::io::duplex(1024);
        let start = Instant::now();
        let mut g = Guarded::new(server, permit, Protocol::Bytes, start);
        let mut buf = [0u8; 16];
        let err = g.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        drop(g);
        assert_eq!(
            conns.open(),
            0,
            "the permit is released with the connection"
        );

        // Active, then silent: closed an idle timeout after the last byte.
        let permit = conns.admit(peer, Port::Clients).expect("room again");
        let (mut c2, server) = tokio::io::duplex(1024);
        let mut g = Guarded::new(server, permit, Protocol::Bytes, Instant::now());
        c2.write_all(b"GET").await.unwrap();
        assert_eq!(g.read(&mut buf).await.unwrap(), 3);
        let last = Instant::now();
        let err = g.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(last.elapsed(), Duration::from_secs(5));
        assert_eq!(conns.timed_out_total(), 2);
        client.shutdown().await.unwrap();
    }
}
