//! The operator's view of a running FerroMQ cluster's admin API.
//!
//! Reconcilers only see the [`ClusterAdmin`] trait. [`CliAdmin`] is the real implementation:
//! it runs `ferromq admin --server ADDR -o json topic create|update|delete|describe ...`, the
//! broker's admin CLI, so the operator speaks whatever transport that CLI speaks (gRPC today).
//! The CLI has no group-drain command yet; until it does, [`CliAdmin::drain_group`] reports the
//! CLI's refusal and the Broker keeps surplus groups (status says so). [`MemoryAdmin`] is an
//! in-process cluster used by tests.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use async_trait::async_trait;
use serde::Deserialize;

use crate::crd::{MessageType, Permission, TopicClusterState};

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The admin CLI could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program that was run.
        program: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The cluster refused or failed the request.
    #[error("`{command}` failed: {stderr}")]
    Failed {
        /// The admin sub-command.
        command: String,
        /// Its error output.
        stderr: String,
    },
    /// The cluster answered something the operator cannot read.
    #[error("unreadable answer to `{command}`: {detail}")]
    BadAnswer {
        /// The admin sub-command.
        command: String,
        /// What did not parse.
        detail: String,
    },
}

/// How far the drain of a broker group has gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainState {
    /// The group still owns queues or unconsumed messages; it no longer takes new writes.
    InProgress {
        /// Queues still assigned to the group.
        remaining_queues: u32,
    },
    /// Nothing left on the group; it can be removed.
    Drained,
}

/// Admin operations the controllers need. `endpoint` is the `host:port` of the cluster's
/// client Service (or the operator's `--admin-address` override).
#[async_trait]
pub trait ClusterAdmin: Send + Sync {
    /// The topic as the cluster holds it, or `None` when it does not exist.
    async fn describe_topic(
        &self,
        endpoint: &str,
        name: &str,
    ) -> Result<Option<TopicClusterState>, AdminError>;
    /// Creates the topic or updates its queues and permission.
    async fn upsert_topic(
        &self,
        endpoint: &str,
        topic: &TopicClusterState,
    ) -> Result<(), AdminError>;
    /// Deletes the topic; deleting a missing topic succeeds.
    async fn delete_topic(&self, endpoint: &str, name: &str) -> Result<(), AdminError>;
    /// Starts (or continues) draining a broker group before its removal and reports progress.
    async fn drain_group(&self, endpoint: &str, group: &str) -> Result<DrainState, AdminError>;
}

/// Runs the `ferromq admin` CLI.
pub struct CliAdmin {
    program: PathBuf,
}

impl CliAdmin {
    /// Uses `program` (normally `ferromq`, found on `PATH`).
    pub fn new(program: impl Into<PathBuf>) -> Self {
        CliAdmin {
            program: program.into(),
        }
    }

    async fn run(&self, endpoint: &str, args: &[&str]) -> Result<std::process::Output, AdminError> {
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.arg("admin")
            .arg("--server")
            .arg(endpoint)
            .arg("-o")
            .arg("json")
            .args(args);
        cmd.kill_on_drop(true);
        tracing::debug!(program = %self.program.display(), endpoint, ?args, "running admin command");
        cmd.output().await.map_err(|source| AdminError::Spawn {
            program: self.program.display().to_string(),
            source,
        })
    }

    fn failed(args: &[&str], out: &std::process::Output) -> AdminError {
        AdminError::Failed {
            command: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        }
    }
}

/// JSON shape of `ferromq admin -o json topic describe` as the operator reads it
/// (`{"name", "queues", "type", "perm", ...}`; other fields are ignored).
#[derive(Deserialize)]
struct TopicJson {
    name: String,
    queues: i32,
    #[serde(rename = "type", alias = "messageType")]
    message_type: String,
    #[serde(default, rename = "perm", alias = "permission")]
    permission: Option<String>,
}

fn parse_message_type(s: &str) -> Option<MessageType> {
    match s.to_ascii_uppercase().as_str() {
        "NORMAL" => Some(MessageType::Normal),
        "FIFO" => Some(MessageType::Fifo),
        "DELAY" => Some(MessageType::Delay),
        "TRANSACTION" => Some(MessageType::Transaction),
        "PRIORITY" => Some(MessageType::Priority),
        _ => None,
    }
}

fn parse_permission(s: Option<&str>) -> Option<Permission> {
    match s.map(str::to_ascii_lowercase).as_deref() {
        None | Some("rw") | Some("readwrite") | Some("6") => Some(Permission::ReadWrite),
        Some("r") | Some("read") | Some("readonly") | Some("4") => Some(Permission::ReadOnly),
        Some("w") | Some("write") | Some("writeonly") | Some("2") => Some(Permission::WriteOnly),
        _ => None,
    }
}

/// Reads one topic from the CLI's JSON output.
fn parse_topic(command: &str, stdout: &[u8]) -> Result<TopicClusterState, AdminError> {
    let bad = |detail: String| AdminError::BadAnswer {
        command: command.to_string(),
        detail,
    };
    let t: TopicJson = serde_json::from_slice(stdout).map_err(|e| bad(e.to_string()))?;
    Ok(TopicClusterState {
        message_type: parse_message_type(&t.message_type)
            .ok_or_else(|| bad(format!("message type {}", t.message_type)))?,
        permission: parse_permission(t.permission.as_deref())
            .ok_or_else(|| bad(format!("permission {:?}", t.permission)))?,
        name: t.name,
        queues: t.queues,
    })
}

fn looks_not_found(stderr: &[u8]) -> bool {
    let s = String::from_utf8_lossy(stderr).to_ascii_lowercase();
    s.contains("not found") || s.contains("not exist") || s.contains("notfound")
}

#[async_trait]
impl ClusterAdmin for CliAdmin {
    async fn describe_topic(
        &self,
        endpoint: &str,
        name: &str,
    ) -> Result<Option<TopicClusterState>, AdminError> {
        let args = ["topic", "describe", name];
        let out = self.run(endpoint, &args).await?;
        if !out.status.success() {
            return if looks_not_found(&out.stderr) {
                Ok(None)
            } else {
                Err(Self::failed(&args, &out))
            };
        }
        parse_topic("topic describe", &out.stdout).map(Some)
    }

    async fn upsert_topic(
        &self,
        endpoint: &str,
        topic: &TopicClusterState,
    ) -> Result<(), AdminError> {
        let queues = topic.queues.to_string();
        let exists = self.describe_topic(endpoint, &topic.name).await?.is_some();
        let verb = if exists { "update" } else { "create" };
        let message_type = topic.message_type.as_str().to_ascii_lowercase();
        let args = [
            "topic",
            verb,
            topic.name.as_str(),
            "--queues",
            queues.as_str(),
            "--type",
            message_type.as_str(),
            "--perm",
            topic.permission.as_str(),
        ];
        let out = self.run(endpoint, &args).await?;
        if out.status.success() {
            Ok(())
        } else {
            Err(Self::failed(&args, &out))
        }
    }

    async fn delete_topic(&self, endpoint: &str, name: &str) -> Result<(), AdminError> {
        let args = ["topic", "delete", name];
        let out = self.run(endpoint, &args).await?;
        if out.status.success() || looks_not_found(&out.stderr) {
            Ok(())
        } else {
            Err(Self::failed(&args, &out))
        }
    }

    async fn drain_group(&self, endpoint: &str, group: &str) -> Result<DrainState, AdminError> {
        let args = ["cluster", "drain", group];
        let out = self.run(endpoint, &args).await?;
        if !out.status.success() {
            return Err(Self::failed(&args, &out));
        }
        /// Answer of `ferromq admin -o json cluster drain GROUP`: the group is read-only from the
        /// first call on; `remaining_queues` counts its queues still holding unsettled messages.
        #[derive(Deserialize)]
        struct DrainJson {
            #[serde(alias = "remainingQueues")]
            remaining_queues: u32,
        }
        let d: DrainJson =
            serde_json::from_slice(&out.stdout).map_err(|e| AdminError::BadAnswer {
                command: "cluster drain".to_string(),
                detail: e.to_string(),
            })?;
        Ok(if d.remaining_queues == 0 {
            DrainState::Drained
        } else {
            DrainState::InProgress {
                remaining_queues: d.remaining_queues,
            }
        })
    }
}

/// An in-process cluster: topics per endpoint and scripted drain progress. For tests.
#[derive(Default)]
pub struct MemoryAdmin {
    state: Mutex<MemoryState>,
}

#[derive(Default)]
struct MemoryState {
    topics: BTreeMap<(String, String), TopicClusterState>,
    /// Drain calls a group needs before it reports drained.
    drain_rounds: BTreeMap<String, u32>,
    unreachable: bool,
}

impl MemoryAdmin {
    /// Topics the fake cluster at `endpoint` holds.
    pub fn topics(&self, endpoint: &str) -> Vec<TopicClusterState> {
        self.lock()
            .topics
            .iter()
            .filter(|((e, _), _)| e == endpoint)
            .map(|(_, t)| t.clone())
            .collect()
    }

    /// Makes `group` report `InProgress` for `rounds` more drain calls.
    pub fn set_drain_rounds(&self, group: &str, rounds: u32) {
        self.lock().drain_rounds.insert(group.to_string(), rounds);
    }

    /// Makes every call fail as if the cluster were down.
    pub fn set_unreachable(&self, unreachable: bool) {
        self.lock().unreachable = unreachable;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        // A poisoned lock only means another test thread panicked; the data is still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn check(&self, command: &str) -> Result<(), AdminError> {
        if self.lock().unreachable {
            Err(AdminError::Failed {
                command: command.to_string(),
                stderr: "connection refused".to_string(),
            })
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl ClusterAdmin for MemoryAdmin {
    async fn describe_topic(
        &self,
        endpoint: &str,
        name: &str,
    ) -> Result<Option<TopicClusterState>, AdminError> {
        self.check("topic describe")?;
        Ok(self
            .lock()
            .topics
            .get(&(endpoint.to_string(), name.to_string()))
            .cloned())
    }

    async fn upsert_topic(
        &self,
        endpoint: &str,
        topic: &TopicClusterState,
    ) -> Result<(), AdminError> {
        self.check("topic create")?;
        self.lock()
            .topics
            .insert((endpoint.to_string(), topic.name.clone()), topic.clone());
        Ok(())
    }

    async fn delete_topic(&self, endpoint: &str, name: &str) -> Result<(), AdminError> {
        self.check("topic delete")?;
        self.lock()
            .topics
            .remove(&(endpoint.to_string(), name.to_string()));
        Ok(())
    }

    async fn drain_group(&self, _endpoint: &str, group: &str) -> Result<DrainState, AdminError> {
        self.check("group drain")?;
        let mut st = self.lock();
        let rounds = st.drain_rounds.entry(group.to_string()).or_insert(0);
        if *rounds == 0 {
            Ok(DrainState::Drained)
        } else {
            *rounds -= 1;
            Ok(DrainState::InProgress {
                remaining_queues: *rounds + 1,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cli_topic_json() {
        let t = parse_topic(
            "d",
            br#"{"name":"orders","queues":8,"type":"fifo","perm":"rw","total_messages":3}"#,
        )
        .expect("parse");
        assert_eq!(
            t,
            TopicClusterState {
                name: "orders".into(),
                queues: 8,
                message_type: MessageType::Fifo,
                permission: Permission::ReadWrite
            }
        );
        let ro = parse_topic(
            "d",
            br#"{"name":"x","queues":1,"type":"normal","perm":"r"}"#,
        )
        .expect("parse");
        assert_eq!(ro.permission, Permission::ReadOnly);
        assert!(matches!(
            parse_topic("d", br#"{"name":"x","queues":1,"type":"odd"}"#),
            Err(AdminError::BadAnswer { .. })
        ));
    }

    #[tokio::test]
    async fn cli_admin_reports_missing_program() {
        let admin = CliAdmin::new("/nonexistent/ferromq");
        let err = admin.describe_topic("127.0.0.1:8081", "t").await.err();
        assert!(matches!(err, Some(AdminError::Spawn { .. })), "{err:?}");
    }

    #[tokio::test]
    async fn memory_admin_drains_after_scripted_rounds() {
        let a = MemoryAdmin::default();
        a.set_drain_rounds("g", 1);
        assert_eq!(
            a.drain_group("e", "g").await.ok(),
            Some(DrainState::InProgress {
                remaining_queues: 1
            })
        );
        assert_eq!(
            a.drain_group("e", "g").await.ok(),
            Some(DrainState::Drained)
        );
    }
}
