//! End to end on the binary: a last commit log segment cut short in the middle of a record is
//! repaired at start-up (issue 14, item 6), and a record damaged inside the log is counted in
//! `/metrics` and named corrupt by `admin message get` (item 7).

mod support;

use std::path::PathBuf;

use support::*;

/// The newest commit log segment and its base offset (its name).
fn last_segment(s: &Server) -> (PathBuf, u64) {
    let mut segs: Vec<(u64, PathBuf)> = std::fs::read_dir(data_dir(s).join("commitlog"))
        .expect("commitlog dir")
        .filter_map(|e| {
            let p = e.ok()?.path();
            let base = p.file_name()?.to_str()?.parse().ok()?;
            Some((base, p))
        })
        .collect();
    segs.sort();
    let (base, p) = segs.pop().expect("a segment");
    (p, base)
}

/// The commit log offset of a message, from `admin message get`.
fn commit_log_offset(s: &Server, topic: &str, id: &str) -> u64 {
    let m = s.admin_json(&["message", "get", "--topic", topic, "--id", id]);
    m["commit_log_offset"].as_u64().expect("commit_log_offset")
}

fn bodies(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("body-{i}")).collect()
}

/// A server with topic `t` holding `n` messages `m<i>` with bodies `body-<i>`.
async fn server_with(n: usize) -> Server {
    let s = Server::start(&[]);
    s.create_topic("t", "normal", 1);
    let mut c = s.client().await;
    for i in 0..n {
        send_ok(
            &mut c,
            message("t", &format!("m{i}"), format!("body-{i}").as_bytes()),
        )
        .await;
    }
    s
}

#[tokio::test]
async fn a_last_segment_cut_mid_record_is_repaired_at_start_up() {
    let mut s = server_with(20).await;
    let torn_at = commit_log_offset(&s, "t", "m19");
    assert!(s.terminate().success());

    // Cut the last segment ten bytes into the last record, as a copy or a filesystem that lost
    // the file's tail would.
    let (seg, base) = last_segment(&s);
    let len = torn_at - base + 10;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open segment")
        .set_len(len)
        .expect("truncate");

    s.spawn(); // panics if the broker does not start
    let log = s.log();
    let name = seg.file_name().and_then(|n| n.to_str()).expect("name");
    let line = log
        .lines()
        .find(|l| l.contains("cut short"))
        .unwrap_or_else(|| panic!("no log line about the cut segment: {log}"));
    assert!(
        line.contains(name) && line.contains("bytes_dropped="),
        "{line}"
    );

    let mut c = s.client().await;
    assert_eq!(
        drain_all(&mut c, "g", "t").await,
        bodies(0..19),
        "everything but the torn record"
    );
    send_ok(&mut c, message("t", "after", b"after")).await;
    assert_eq!(drain_all(&mut c, "g", "t").await, ["after"]);
    // And it survives another restart as it is.
    assert!(s.terminate().success());
    s.spawn();
    let mut c = s.client().await;
    let mut all = bodies(0..19);
    all.push("after".into());
    assert_eq!(drain_all(&mut c, "fresh", "t").await, all);
}

#[tokio::test]
async fn a_damaged_record_is_counted_in_metrics_and_named_corrupt_by_message_get() {
    let mut s = server_with(10).await;
    let victim = commit_log_offset(&s, "t", "m4");
    assert!(s.terminate().success());

    // Flip a byte of m4's body: damage inside the log, below the checkpoint.
    let (seg, base) = last_segment(&s);
    let mut bytes = std::fs::read(&seg).expect("segment");
    let at = (victim - base) as usize;
    let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
    bytes[at + len - 2] ^= 0x5a;
    std::fs::write(&seg, &bytes).expect("write segment");

    s.spawn();
    assert_eq!(s.metric("ferromq_store_corrupt_records_total"), Some(0.0));
    let mut c = s.client().await;
    let mut got = drain_all(&mut c, "g", "t").await;
    got.sort();
    let mut want = bodies(0..10);
    want.retain(|b| b != "body-4");
    assert_eq!(got, want, "the damaged record is never served");
    // Read again by another group: still counted once.
    assert_eq!(drain_all(&mut c, "g2", "t").await.len(), 9);
    assert_eq!(s.metric("ferromq_store_corrupt_records_total"), Some(1.0));

    let out = s.admin(&["message", "get", "--topic", "t", "--id", "m4"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("m4 is corrupt") && err.contains(&format!("offset {victim}")),
        "{err}"
    );
    let out = s.admin(&["message", "get", "--topic", "t", "--id", "never-sent"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no message with this id"));
    let ok = s.admin_json(&["message", "get", "--topic", "t", "--id", "m5"]);
    assert_eq!(ok["body"], "body-5");
}
