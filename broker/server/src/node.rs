//! What the RPC handlers of one storage node (the `standalone` and `broker` roles) share: the
//! delivery engine, plus the protocol side the engine knows nothing of: the clients and their
//! Telemetry streams, metrics, the address routes advertise, readiness and shutdown.
//!
//! Handlers reach the blocking engine only through [`Node::blocking`], which runs the closure
//! on tokio's blocking pool so a slow disk never stalls the reactor.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ferromq_engine::Engine;
use tokio::sync::watch;

use crate::clients::Clients;
use crate::metrics::Metrics;
use crate::status::RpcError;

/// Protocol-side settings of a storage node.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// host:port used in routes when the client's own access point cannot be echoed.
    pub advertise_addr: String,
    /// Largest message body accepted.
    pub max_body_size: usize,
    /// How long a receive woken on a busy topic gathers before it answers (zero: off).
    pub receive_gather: std::time::Duration,
}

pub struct Node {
    pub engine: Arc<Engine>,
    pub settings: NodeSettings,
    pub clients: Clients,
    pub metrics: Arc<Metrics>,
    /// Flips to true when shutdown starts; long polls and streams watch it.
    pub shutdown: watch::Receiver<bool>,
    pub ready: AtomicBool,
    /// Transaction checks through another front door (the remoting protocol's producers),
    /// tried first: it declines messages its producers did not send.
    pub other_checks: std::sync::OnceLock<ferromq_engine::CheckSender>,
}

impl Node {
    /// Wraps an engine; transaction checks go out through this node's clients' Telemetry
    /// streams.
    pub fn new(
        engine: Arc<Engine>,
        settings: NodeSettings,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<Node> {
        Node::with_metrics(engine, settings, shutdown, Arc::new(Metrics::default()))
    }

    /// [`Node::new`] counting into `metrics` (a replicated member's terms share one).
    pub fn with_metrics(
        engine: Arc<Engine>,
        settings: NodeSettings,
        shutdown: watch::Receiver<bool>,
        metrics: Arc<Metrics>,
    ) -> Arc<Node> {
        let node = Arc::new(Node {
            engine,
            settings,
            clients: Clients::default(),
            metrics,
            shutdown,
            ready: AtomicBool::new(false),
            other_checks: std::sync::OnceLock::new(),
        });
        let weak = Arc::downgrade(&node);
        node.engine
            .transactions
            .set_sender(Box::new(move |m, tx_id| match weak.upgrade() {
                Some(n) => n.send_transaction_check(m, tx_id),
                None => false,
            }));
        node
    }

    /// Sends RecoverOrphanedTransactionCommand to the producer that sent the half message, else
    /// to a live producer that declared its topic.
    fn send_transaction_check(&self, m: &ferromq_store::StoredMessage, tx_id: &str) -> bool {
        if self.other_checks.get().is_some_and(|check| check(m, tx_id)) {
            return true;
        }
        let sender = m
            .properties
            .get(ferromq_engine::props::TX_PRODUCER)
            .and_then(|id| self.clients.stream_of(id));
        let Some(tx) = sender.or_else(|| self.clients.producer_stream_for(&m.topic)) else {
            tracing::debug!(topic = %m.topic, "no producer online for a transaction check");
            return false;
        };
        let message = crate::convert::to_proto(m.clone(), "", &self.settings.advertise_addr, None);
        let cmd = ferromq_proto::v2::TelemetryCommand {
            status: None,
            command: Some(
                ferromq_proto::v2::telemetry_command::Command::RecoverOrphanedTransactionCommand(
                    ferromq_proto::v2::RecoverOrphanedTransactionCommand {
                        message: Some(message),
                        transaction_id: tx_id.to_string(),
                    },
                ),
            ),
        };
        tx.try_send(Ok(cmd)).is_ok()
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !*self.shutdown.borrow()
    }

    /// Runs blocking engine work off the async workers.
    pub async fn blocking<T, F>(self: &Arc<Self>, f: F) -> Result<T, RpcError>
    where
        F: FnOnce(&Node) -> Result<T, RpcError> + Send + 'static,
        T: Send + 'static,
    {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(&me))
            .await
            .map_err(|e| RpcError::internal(format!("worker failed: {e}")))?
    }

    /// Consumer progress, with the subscriptions this node's clients announced.
    pub fn lag(&self) -> Vec<ferromq_engine::lag::QueueLag> {
        self.engine.lag(&self.clients.subscriptions())
    }
}
