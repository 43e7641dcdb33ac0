//! Helpers shared by the store's integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use ferromq_store::{NewMessage, StoreConfig, PROP_KEYS, PROP_MSG_ID, PROP_TAGS};

/// A configuration with small files so tests roll segments and queue files quickly.
pub fn small_config(dir: &Path) -> StoreConfig {
    let mut c = StoreConfig::new(dir);
    c.segment_size = 256 * 1024;
    c.max_body_size = 64 * 1024;
    c.cq_entries_per_file = 1000;
    c.index_slots = 1024;
    c.index_entries = 4096;
    c.flush_interval = Duration::from_millis(20);
    c.disk_high_water = 0.999;
    c
}

/// A message whose body is derived from its id, so a reader can check it is intact.
pub fn message(
    topic: &str,
    queue_id: u32,
    id: &str,
    tag: Option<&str>,
    keys: &[&str],
) -> NewMessage {
    let mut properties = BTreeMap::new();
    properties.insert(PROP_MSG_ID.to_string(), id.to_string());
    if let Some(t) = tag {
        properties.insert(PROP_TAGS.to_string(), t.to_string());
    }
    if !keys.is_empty() {
        properties.insert(PROP_KEYS.to_string(), keys.join(" "));
    }
    properties.insert("user-prop".to_string(), format!("v-{id}"));
    NewMessage {
        topic: topic.to_string(),
        queue_id,
        born_timestamp_ms: 1_700_000_000_000,
        born_host: Some("127.0.0.1:5555".parse().expect("addr")),
        properties,
        body: body_for(id),
        ..Default::default()
    }
}

/// The body every test writes for message `id`: variable length, content tied to the id.
pub fn body_for(id: &str) -> Vec<u8> {
    let n = 100 + (crc32c::crc32c(id.as_bytes()) % 900) as usize;
    id.as_bytes().iter().cycle().take(n).copied().collect()
}
