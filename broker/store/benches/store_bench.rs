//! Store benchmark: append throughput with 1 KiB bodies in both flush modes, read throughput
//! from consume queues, memory while the log grows, and this machine's own limits on the same
//! filesystem (dd into the page cache, with fdatasync, and with O_DSYNC) measured in the same
//! run. Prints a Markdown report.
//!
//! `cargo bench -p ferromq-store --bench store_bench` (env: FERROMQ_BENCH_DIR, the directory to
//! write in, default ./target/store-bench; FERROMQ_BENCH_GIB, bytes to write in the async run,
//! default 4; FERROMQ_BENCH_SECS, seconds per sync run, default 5).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferromq_store::{FlushMode, NewMessage, Store, StoreConfig};
use hdrhistogram::Histogram;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn msg(body: &[u8], q: u32) -> NewMessage {
    let mut properties = BTreeMap::new();
    properties.insert("TAGS".to_string(), "bench".to_string());
    NewMessage {
        topic: "bench".into(),
        queue_id: q,
        properties,
        body: body.to_vec().into(),
        ..Default::default()
    }
}

/// Runs `dd` and returns bytes per second parsed from its summary line.
fn dd(args: &[&str]) -> Option<(f64, f64)> {
    let out = Command::new("dd").args(args).output().ok()?;
    let text = String::from_utf8_lossy(&out.stderr);
    let line = text.lines().find(|l| l.contains("copied"))?;
    // "N bytes (...) copied, S s, R MB/s"
    let bytes: f64 = line.split_whitespace().next()?.parse().ok()?;
    let after = &line[line.find("copied, ")? + 8..];
    let secs: f64 = after.split_whitespace().next()?.parse().ok()?;
    Some((bytes / secs, secs))
}

fn fresh(dir: &Path) -> PathBuf {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("bench dir");
    dir.to_path_buf()
}

fn main() {
    let root = PathBuf::from(
        std::env::var("FERROMQ_BENCH_DIR").unwrap_or_else(|_| "target/store-bench".into()),
    );
    let gib: u64 = env_or("FERROMQ_BENCH_GIB", 4);
    let secs: u64 = env_or("FERROMQ_BENCH_SECS", 5);
    std::fs::create_dir_all(&root).expect("bench dir");
    let body = vec![0xABu8; 1024];

    // --- Machine limits on the same filesystem.
    let ddfile = root.join("dd.tmp");
    let of = format!("of={}", ddfile.display());
    let _ = Command::new("sync").status();
    // The same number of bytes as the async run, best of two: on a VM the first pass also
    // pays for the host backing fresh guest pages, which says nothing about either program.
    let mut dd_cache: f64 = 0.0;
    let count = format!("count={}", gib * 1024);
    for _ in 0..2 {
        dd_cache = dd_cache.max(
            dd(&["if=/dev/zero", &of, "bs=1M", &count])
                .map(|r| r.0)
                .unwrap_or(0.0),
        );
        let _ = std::fs::remove_file(&ddfile);
    }
    let dd_fdatasync = dd(&["if=/dev/zero", &of, "bs=1M", "count=1024", "conv=fdatasync"])
        .map(|r| r.0)
        .unwrap_or(0.0);
    let _ = std::fs::remove_file(&ddfile);
    let dd_dsync_1k = dd(&["if=/dev/zero", &of, "bs=1k", "count=2000", "oflag=dsync"])
        .map(|(bw, s)| (bw / 1024.0, s / 2000.0));
    let _ = std::fs::remove_file(&ddfile);

    // --- Async appends: 1 KiB bodies; one writer for `gib` GiB with RSS sampled per GiB,
    // then two concurrent writers for 1 GiB.
    let mut async_rows = vec![];
    let mut rss = vec![];
    let dir = fresh(&root.join("async"));
    let mut kept_store = None;
    for (writers_n, size_gib) in [(1u32, gib), (2, 1)] {
        let d = fresh(&root.join(format!("async{writers_n}")));
        let mut cfg = StoreConfig::new(&d);
        cfg.segment_size = 1 << 30;
        let store = Store::open(cfg).expect("open");
        let total_msgs = size_gib * (1 << 30) / 1200;
        let written = Arc::new(AtomicU64::new(0));
        let t0 = Instant::now();
        let writers: Vec<_> = (0..writers_n)
            .map(|w| {
                let (s, b, written) = (store.clone(), body.clone(), written.clone());
                std::thread::spawn(move || {
                    let m = msg(&b, w);
                    loop {
                        let n = written.fetch_add(1, Ordering::Relaxed);
                        if n >= total_msgs {
                            break;
                        }
                        s.append(&m).expect("append");
                    }
                })
            })
            .collect();
        let mut next_gib = 1;
        while written.load(Ordering::Relaxed) < total_msgs {
            std::thread::sleep(Duration::from_millis(20));
            let bytes = store.stats().append_bytes_total;
            if writers_n == 1 && bytes >= next_gib << 30 {
                rss.push((next_gib, status_kib("RssAnon:"), status_kib("RssFile:")));
                next_gib += 1;
            }
        }
        for w in writers {
            let _ = w.join();
        }
        let secs = t0.elapsed().as_secs_f64();
        let st = store.stats();
        async_rows.push((
            writers_n,
            st.appends_total as f64 / secs,
            st.append_bytes_total as f64 / secs,
        ));
        if writers_n == 1 {
            rss.push((gib, status_kib("RssAnon:"), status_kib("RssFile:")));
            kept_store = Some((store, d));
        } else {
            store.close().expect("close");
            drop(store);
            let _ = std::fs::remove_dir_all(&d);
        }
    }
    let _ = dir;
    let Some((store, dir)) = kept_store else {
        return;
    };
    let st = store.stats();

    // --- Reads from consume queues.
    store.wait_dispatched(st.log_write_offset, Duration::from_secs(120));
    let t1 = Instant::now();
    let mut read = 0u64;
    for q in 0..2 {
        let mut off = 0;
        loop {
            let r = store.read("bench", q, off, 256, None).expect("read");
            if r.messages.is_empty() {
                break;
            }
            read += r.messages.len() as u64;
            off = r.next_offset;
        }
    }
    let read_rate = read as f64 / t1.elapsed().as_secs_f64();
    store.close().expect("close");
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);

    // --- Sync appends: 1 writer vs 16 writers, latency histogram.
    let mut sync_rows = vec![];
    for writers_n in [1usize, 16] {
        let dir = fresh(&root.join(format!("sync{writers_n}")));
        let mut cfg = StoreConfig::new(&dir);
        cfg.segment_size = 256 << 20;
        cfg.flush = FlushMode::Sync;
        let store = Store::open(cfg).expect("open");
        let stop = Arc::new(AtomicBool::new(false));
        let handles: Vec<_> = (0..writers_n)
            .map(|w| {
                let (s, b, stop) = (store.clone(), body.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut h = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).expect("hist");
                    let m = msg(&b, w as u32 % 4);
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        s.append(&m).expect("append");
                        let _ = h.record(t.elapsed().as_micros() as u64);
                    }
                    h
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(secs));
        stop.store(true, Ordering::Relaxed);
        let mut hist = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).expect("hist");
        for h in handles {
            if let Ok(h) = h.join() {
                let _ = hist.add(h);
            }
        }
        let st = store.stats();
        let rate = st.appends_total as f64 / secs as f64;
        let flush_cost_us = st.flush_seconds_total * 1e6 / st.flushes_total.max(1) as f64;
        let bytes_per_flush = st.append_bytes_total as f64 / st.flushes_total.max(1) as f64;
        sync_rows.push((
            writers_n,
            rate,
            st.flushes_total,
            bytes_per_flush,
            flush_cost_us,
            hist,
        ));
        store.close().expect("close");
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
    // dd with O_DSYNC writing the same bytes as one group commit of the 16-writer run.
    let bpf = sync_rows.last().map(|r| r.3).unwrap_or(1024.0).max(512.0) as u64;
    let bs = format!("bs={}", bpf.div_ceil(512) * 512);
    let dd_dsync_group =
        dd(&["if=/dev/zero", &of, &bs, "count=1000", "oflag=dsync"]).map(|(_, s)| s / 1000.0 * 1e6);
    let _ = std::fs::remove_file(&ddfile);

    // --- Report.
    let mb = |b: f64| b / (1024.0 * 1024.0);
    println!("## ferromq-store benchmark\n");
    println!(
        "directory: {} ; {gib} GiB async run; {secs} s per sync run; 1 KiB bodies\n",
        root.display()
    );
    println!("| measure | value |\n|---|---|");
    println!(
        "| dd bs=1M into page cache, {gib} GiB (best of 2) | {:.0} MiB/s |",
        mb(dd_cache)
    );
    println!(
        "| dd bs=1M conv=fdatasync | {:.0} MiB/s |",
        mb(dd_fdatasync)
    );
    if let Some((rate, lat)) = dd_dsync_1k {
        println!(
            "| dd bs=1k oflag=dsync | {:.0} writes/s ({:.0} us each) |",
            rate,
            lat * 1e6
        );
    }
    for (n, rate, bw) in &async_rows {
        println!(
            "| async append, {n} writer(s) | {:.0} msg/s, {:.0} MiB/s ({:.2} of dd page cache) |",
            rate,
            mb(*bw),
            bw / dd_cache.max(1.0)
        );
    }
    println!("| consume queue read | {:.0} msg/s |", read_rate);
    for (n, rate, flushes, bpf, cost, h) in &sync_rows {
        println!(
            "| sync append, {n} writer(s) | {:.0} msg/s; {flushes} flushes, {:.1} KiB per flush, {:.0} us per msync; append p50 {} us p99 {} us p999 {} us |",
            rate,
            bpf / 1024.0,
            cost,
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999)
        );
    }
    if sync_rows.len() == 2 {
        println!(
            "| group commit gain, 16 vs 1 writer | {:.1}x |",
            sync_rows[1].1 / sync_rows[0].1.max(1.0)
        );
    }
    if let Some(us) = dd_dsync_group {
        println!(
            "| dd oflag=dsync {bs} (one group commit's bytes) | {:.0} us per write |",
            us
        );
    }
    for (g, anon, file) in &rss {
        println!(
            "| RSS after {g} GiB appended | anon {anon} KiB, file-backed {} MiB |",
            file / 1024
        );
    }
}
