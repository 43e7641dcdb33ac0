//! RocketMQ's classic TCP "remoting" protocol, as wire types: what 4.x clients
//! (`rocketmq-client` 4.9.x, `rocketmq-client-go/v2`, the C++ and Python 4.x clients), `mqadmin`
//! and `DefaultMQAdminExt` (rocketmq-dashboard, rocketmq-exporter) speak.
//!
//! This crate only encodes and decodes; it owns no socket and no delivery policy, so the name
//! server, broker and proxy roles can share it. Layers, outermost first:
//! - [`frame`]: length-prefixed frames on a byte stream ([`frame::RemotingCodec`], a
//!   `tokio_util` codec with a frame-size cap);
//! - [`header`]: a frame's header in either serialization (fastjson text or the binary
//!   `ROCKETMQ` layout) into a [`command::Command`];
//! - [`code`]: request, response and language codes;
//! - [`custom`]: each request's typed parameters (`extFields` as structs);
//! - [`body`]: the JSON bodies (routes, heartbeats, stats, ...) via [`fastjson`], which handles
//!   fastjson's non-string map keys;
//! - [`message`]: the properties string, the stored-message encoding pulls deliver, batch-send
//!   bodies and message ids.
//!
//! See README.md beside this crate for how each client uses the protocol.

pub mod body;
pub mod code;
pub mod command;
pub mod custom;
pub mod fastjson;
pub mod frame;
pub mod header;
pub mod message;

pub use command::{Command, ExtFields, SerializeType};
pub use frame::{FrameError, RemotingCodec};
