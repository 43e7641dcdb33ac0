//! Appends 1 KiB messages from one thread as fast as it can, for profiling the append path:
//! `cargo run --release -p ferromq-store --example append_profile -- DIR COUNT`
//! (env `FLUSH=sync` for sync flushing, `WITH_ID=1` to give every message a message id and a key, as brokers do, so the index is
//! written too).
use std::collections::BTreeMap;
use std::time::Instant;

use ferromq_store::{NewMessage, Store, StoreConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .unwrap_or_else(|| "target/append-profile".into());
    let count: u64 = args
        .next()
        .and_then(|c| c.parse().ok())
        .unwrap_or(1_000_000);
    let _ = std::fs::remove_dir_all(&dir);
    let mut cfg = StoreConfig::new(&dir);
    if std::env::var("FLUSH").is_ok_and(|f| f == "sync") {
        cfg.flush = ferromq_store::FlushMode::Sync;
    }
    let store = Store::open(cfg)?;
    let mut properties = BTreeMap::new();
    properties.insert("TAGS".to_string(), "bench".to_string());
    let mut m = NewMessage {
        topic: "bench".into(),
        properties,
        body: vec![7u8; 1024].into(),
        ..Default::default()
    };
    let with_id = std::env::var("WITH_ID").is_ok_and(|v| v == "1");
    let t = Instant::now();
    for i in 0..count {
        if with_id {
            m.properties
                .insert(ferromq_store::PROP_MSG_ID.into(), format!("{i:032x}"));
            m.properties.insert(
                ferromq_store::PROP_KEYS.into(),
                format!("order-{}", i % 1000),
            );
        }
        store.append(&m)?;
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{count} appends in {secs:.2} s: {:.0} msg/s, {:.0} MiB/s",
        count as f64 / secs,
        count as f64 * 1.2 / 1024.0 / secs
    );
    store.close()?;
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
