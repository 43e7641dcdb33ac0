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
    c.checkpoint_interval = Duration::from_millis(20);
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
        body: body_for(id).into(),
        ..Default::default()
    }
}

/// The body every test writes for message `id`: variable length, content tied to the id.
pub fn body_for(id: &str) -> Vec<u8> {
    let n = 100 + (crc32c::crc32c(id.as_bytes()) % 900) as usize;
    id.as_bytes().iter().cycle().take(n).copied().collect()
}

/// Waits until everything appended so far is dispatched (readable by queue).
pub fn wait_dispatched(store: &ferromq_store::Store) {
    assert!(
        store.wait_dispatched(store.stats().log_write_offset, Duration::from_secs(30)),
        "dispatch did not catch up"
    );
}

/// A small tmpfs mounted on a temporary directory, so the disk really fills. Unmounted on
/// drop.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (for example `48m`). Needs root (CI runs as root); elsewhere
    /// the caller says loudly that the test did not run, and it fails under CI.
    pub fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("tempdir");
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must be able to mount a tmpfs for the disk-full tests"
            );
            eprintln!("NOT RUN: disk-full test needs permission to mount a tmpfs");
            return None;
        }
        Some(Tmpfs { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

/// Runs a future to completion on this thread (the store's async waits need no runtime).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

/// Appends `m` the way an async server does: in memory when [`ferromq_store::Store::try_append`]
/// can, then waits for [`ferromq_store::Store::durable`]; otherwise with the blocking append.
pub fn append_quick(
    store: &ferromq_store::Store,
    m: &NewMessage,
) -> ferromq_store::Result<ferromq_store::AppendResult> {
    match store.try_append(m)? {
        Some(a) => {
            block_on(store.durable(a.phys_offset + u64::from(a.size)))?;
            Ok(a)
        }
        None => store.append(m),
    }
}
