//! A bare remoting client for tests: frames on a TCP connection through the
//! `ferromq-remoting` codec, one request at a time, server-initiated requests skipped.

use std::time::Duration;

use ferromq_remoting::code::request;
use ferromq_remoting::custom::CustomHeader;
use ferromq_remoting::{Command, RemotingCodec};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

pub struct Remoting {
    framed: Framed<TcpStream, RemotingCodec>,
    opaque: i32,
}

/// A request with string header fields.
pub fn request(code: i32, fields: &[(&str, &str)]) -> Command {
    let mut c = Command {
        code,
        version: 409,
        ..Command::default()
    };
    for (k, v) in fields {
        c.ext_fields.insert(k.to_string(), v.to_string());
    }
    c
}

/// A request with a typed header.
pub fn typed(code: i32, header: &impl CustomHeader) -> Command {
    let mut c = Command::request(code, 0, header);
    c.version = 409;
    c
}

impl Remoting {
    pub async fn connect(port: u16) -> Remoting {
        let s = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect to the remoting port");
        Remoting {
            framed: Framed::new(s, RemotingCodec::default()),
            opaque: 0,
        }
    }

    /// Sends a request and reads until its answer (within 30 s).
    pub async fn call(&mut self, mut cmd: Command) -> Command {
        self.opaque += 1;
        cmd.opaque = self.opaque;
        self.framed.send(&cmd).await.expect("send a request");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let next = tokio::time::timeout_at(deadline, self.framed.next())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no answer to {} within 30 s",
                        request::name(cmd.code).unwrap_or("?")
                    )
                });
            let c = next
                .expect("the connection stays open")
                .expect("a readable frame");
            if c.is_response() && c.opaque == cmd.opaque {
                return c;
            }
        }
    }

    /// Sends a one-way request (no answer).
    pub async fn oneway(&mut self, mut cmd: Command) {
        cmd.flag |= ferromq_remoting::command::FLAG_ONEWAY;
        self.opaque += 1;
        cmd.opaque = self.opaque;
        self.framed
            .feed(&cmd)
            .await
            .expect("send a one-way request");
    }

    pub async fn flush(&mut self) {
        SinkExt::<Command>::flush(&mut self.framed)
            .await
            .expect("flush");
    }

    /// Writes bytes as they are, bypassing the codec.
    pub async fn raw(&mut self, bytes: &[u8]) {
        self.framed
            .get_mut()
            .write_all(bytes)
            .await
            .expect("write raw bytes");
    }

    /// Closes our sending side (the server sees the end of the stream).
    pub async fn half_close(&mut self) {
        let _ = self.framed.get_mut().shutdown().await;
    }

    /// Whether the server closes the connection within `d` (reading whatever it sends).
    pub async fn closed_within(&mut self, d: Duration) -> bool {
        let mut buf = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + d;
        loop {
            match tokio::time::timeout_at(deadline, self.framed.get_mut().read(&mut buf)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
            }
        }
    }
}
