//! How FerroMQ's own clients (`ferromq admin`, `send`, `consume`, `bench`) reach a server: the
//! address as users type it, one connection error that says what failed once, and the headers
//! every RocketMQ call carries (client id, signature).

use anyhow::anyhow;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use ferromq_proto::v2::{self, messaging_service_client::MessagingServiceClient};

/// `host:port` as a URI (`http://host:port`); a URI is kept as given.
pub fn endpoint(server: &str) -> String {
    if server.contains("://") {
        server.to_string()
    } else {
        format!("http://{server}")
    }
}

/// A connection to `server`. The error names the server and the innermost cause only (tonic's
/// own chain repeats itself: "transport error: tcp connect error: tcp connect error: ...").
pub async fn connect(server: &str) -> anyhow::Result<Channel> {
    let ch = Channel::from_shared(endpoint(server))
        .map_err(|_| anyhow!("{server:?} is not a server address (host:port)"))?;
    ch.connect().await.map_err(|e| {
        let root = std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| {
            e.source()
        })
        .last()
        .map(ToString::to_string)
        .unwrap_or_default();
        anyhow!("cannot connect to {server}: {root}")
    })
}

/// The headers of every RocketMQ call: the client id, and the signature when credentials are
/// given.
#[derive(Clone)]
pub struct ClientId(
    MetadataValue<tonic::metadata::Ascii>,
    crate::credentials::Signer,
);

impl ClientId {
    /// `name@pid#n`: unique per process and connection, as the server's client table wants.
    pub fn new(name: &str, n: usize, signer: crate::credentials::Signer) -> anyhow::Result<Self> {
        let id = MetadataValue::try_from(format!("{name}@{}#{n}", std::process::id()))?;
        Ok(ClientId(id, signer))
    }
}

impl tonic::service::Interceptor for ClientId {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("x-mq-client-id", self.0.clone());
        self.1.call(req)
    }
}

/// A RocketMQ 5 MessagingService client.
pub type Messaging = MessagingServiceClient<InterceptedService<Channel, ClientId>>;

/// Connects a MessagingService client named `name` (connection `n` of the process).
pub async fn messaging(
    server: &str,
    name: &str,
    n: usize,
    credentials: &crate::credentials::CredentialArgs,
) -> anyhow::Result<Messaging> {
    let ch = connect(server).await?;
    let id = ClientId::new(name, n, credentials.signer()?)?;
    Ok(MessagingServiceClient::with_interceptor(ch, id).max_decoding_message_size(64 << 20))
}

/// A RocketMQ resource (topic or group) named `name`, without a namespace.
pub fn resource(name: &str) -> Option<v2::Resource> {
    Some(v2::Resource {
        resource_namespace: String::new(),
        name: name.into(),
    })
}

/// Wall-clock milliseconds since the epoch (born timestamps, latencies).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// An error as one line: each cause once. A cause whose text an earlier one already holds is
/// skipped; one that repeats the previous cause and adds to it replaces it.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || parts.iter().any(|p| p.contains(&text)) {
            continue;
        }
        match parts.last_mut() {
            Some(last) if text.contains(last.as_str()) => *last = text,
            _ => parts.push(text),
        }
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_is_said_once() {
        let e = anyhow!("tcp connect error: refused")
            .context("tcp connect error")
            .context("cannot connect to h:1");
        assert_eq!(
            one_line(&e),
            "cannot connect to h:1: tcp connect error: refused"
        );
        assert_eq!(endpoint("h:1"), "http://h:1");
        assert_eq!(endpoint("https://h:1"), "https://h:1");
    }
}
