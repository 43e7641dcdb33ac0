//! Client sessions through the proxy: Heartbeat and NotifyClientTermination go to every live
//! group; a Telemetry stream is opened to every live group and the client's commands are copied
//! to each, so a group can reach the producer (transaction check-back) through whichever proxy
//! holds its stream.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use ferromq_proto::v2;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::Status;

use super::fanout::{broadcast, outgoing};
use super::handles::wrap_handle;
use super::ProxyApi;
use crate::rpc::BoxStream;

impl ProxyApi {
    pub(super) async fn heartbeat(
        &self,
        md: &MetadataMap,
        r: v2::HeartbeatRequest,
    ) -> v2::HeartbeatResponse {
        let status = broadcast(&self.routes, md, r, |mut c, r| async move {
            c.heartbeat(r).await.map(|x| x.into_inner().status)
        })
        .await;
        v2::HeartbeatResponse {
            status: Some(status),
        }
    }

    pub(super) async fn notify_client_termination(
        &self,
        md: &MetadataMap,
        r: v2::NotifyClientTerminationRequest,
    ) -> v2::NotifyClientTerminationResponse {
        let status = broadcast(&self.routes, md, r, |mut c, r| async move {
            c.notify_client_termination(r)
                .await
                .map(|x| x.into_inner().status)
        })
        .await;
        v2::NotifyClientTerminationResponse {
            status: Some(status),
        }
    }

    pub(super) async fn telemetry(
        &self,
        md: &MetadataMap,
        mut inbound: tonic::Streaming<v2::TelemetryCommand>,
    ) -> Result<BoxStream<v2::TelemetryCommand>, Status> {
        if md.get("x-mq-client-id").is_none() {
            return Err(Status::invalid_argument(
                "header x-mq-client-id is required",
            ));
        }
        let view = self.routes.view();
        if view.groups.is_empty() {
            return Err(Status::unavailable("no broker group is alive"));
        }
        let (out_tx, out_rx) = mpsc::channel::<Result<v2::TelemetryCommand, Status>>(16);
        // Settings answers: the client sends Settings and expects one answer per command; every
        // group answers, so only as many answers as the client asked for are passed on.
        let asked = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(AtomicUsize::new(0));
        let mut to_groups = Vec::new();
        for g in view.groups.iter() {
            let (tx, rx) = mpsc::channel::<v2::TelemetryCommand>(16);
            to_groups.push(tx);
            let mut c = self.client(g)?;
            let out = out_tx.clone();
            let (asked, answered) = (asked.clone(), answered.clone());
            let name = g.name.clone();
            let (routes, group) = (self.routes.clone(), g.clone());
            let r = outgoing(md, ReceiverStream::new(rx));
            tokio::spawn(async move {
                let mut s = match c.telemetry(r).await {
                    Ok(s) => {
                        routes.broker_ok(&group);
                        s.into_inner()
                    }
                    Err(e) => {
                        routes.broker_failed(&group, &e, "cannot open Telemetry to broker group");
                        return;
                    }
                };
                while let Ok(Some(mut cmd)) = s.message().await {
                    // A transaction check names the group's half message: route the answer back.
                    if let Some(
                        v2::telemetry_command::Command::RecoverOrphanedTransactionCommand(c),
                    ) = cmd.command.as_mut()
                    {
                        c.transaction_id = wrap_handle(&name, &c.transaction_id);
                    }
                    let is_settings = matches!(
                        cmd.command,
                        Some(v2::telemetry_command::Command::Settings(_))
                    );
                    if is_settings {
                        let n = answered.fetch_add(1, Ordering::AcqRel);
                        if n >= asked.load(Ordering::Acquire) {
                            answered.fetch_sub(1, Ordering::AcqRel);
                            continue;
                        }
                    }
                    if out.send(Ok(cmd)).await.is_err() {
                        break;
                    }
                }
            });
        }
        drop(out_tx);
        tokio::spawn(async move {
            while let Ok(Some(cmd)) = inbound.message().await {
                if matches!(
                    cmd.command,
                    Some(v2::telemetry_command::Command::Settings(_))
                ) {
                    asked.fetch_add(1, Ordering::AcqRel);
                }
                for tx in &to_groups {
                    let _ = tx.send(cmd.clone()).await;
                }
            }
        });
        Ok(Box::pin(ReceiverStream::new(out_rx)))
    }
}
