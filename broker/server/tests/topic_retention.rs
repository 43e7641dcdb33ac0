//! Per-topic retention end to end (issue 20), on a real `ferromq standalone` with its own data
//! directory: a topic whose retention is shorter than its messages' age stops delivering them
//! while another topic keeps its own, the setting and the expiry survive restarts, and bad
//! values are refused without changing anything.
//!
//! No clock is faked here: a retention of one millisecond makes a message sent before it
//! "old" as soon as a millisecond has passed, which a short sleep makes sure of.

mod support;

use std::time::Duration;

use support::*;

fn admin_ok(s: &Server, args: &[&str]) -> serde_json::Value {
    s.admin_json(args)
}

/// Runs an admin command that must fail with `code`, its stderr naming `needle`.
fn refused(s: &Server, args: &[&str], code: i32, needle: &str) {
    let out = s.admin(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "admin {args:?}: {err}");
    assert!(
        err.contains(needle),
        "admin {args:?}: {err:?} lacks {needle:?}"
    );
}

#[tokio::test]
async fn a_short_topic_retention_stops_old_messages_while_another_topic_keeps_them() {
    let mut s = Server::start(&[]);
    let t = admin_ok(
        &s,
        &[
            "topic",
            "create",
            "short",
            "--queues",
            "1",
            "--retention",
            "1h",
        ],
    );
    assert_eq!(
        (
            &t["retention"],
            &t["node_retention"],
            &t["effective_retention"]
        ),
        (
            &serde_json::json!("1h"),
            &serde_json::json!("3d"),
            &serde_json::json!("1h")
        ),
        "{t}"
    );
    s.create_topic("keep", "normal", 1);
    let mut c = s.client().await;
    send_ok(&mut c, message("short", "old-short", b"old-short")).await;
    send_ok(&mut c, message("keep", "old-keep", b"old-keep")).await;
    // Younger than an hour: delivered.
    assert_eq!(drain_all(&mut c, "before", "short").await, ["old-short"]);

    // Shortened below the message's age: a group that has not read it never gets it, while
    // the other topic, on the node's retention, still delivers its message of the same age.
    let t = admin_ok(&s, &["topic", "update", "short", "--retention", "1ms"]);
    assert_eq!(t["retention"], "1ms", "{t}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(drain_all(&mut c, "after", "short").await.is_empty());
    assert_eq!(drain_all(&mut c, "after", "keep").await, ["old-keep"]);
    let listed = admin_ok(&s, &["topic", "list"]);
    let short = listed
        .as_array()
        .and_then(|l| l.iter().find(|t| t["name"] == "short"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(short["retention"], "1ms", "{listed}");

    // After a restart the setting holds, and the expired message is behind the queue's start.
    assert!(s.terminate().success());
    s.spawn();
    let d = admin_ok(&s, &["topic", "describe", "short"]);
    assert_eq!(d["retention"], "1ms", "{d}");
    assert_eq!(d["queue_offsets"][0]["min_offset"], 1, "{d}");
    assert_eq!(d["queue_offsets"][0]["max_offset"], 1, "{d}");
    assert_eq!(d["total_messages"], 0, "{d}");
    let d = admin_ok(&s, &["topic", "describe", "keep"]);
    assert_eq!(d["retention"], serde_json::Value::Null, "{d}");
    assert_eq!(d["queue_offsets"][0]["min_offset"], 0, "{d}");
    assert_eq!(d["total_messages"], 1, "{d}");
    let mut c = s.client().await;
    assert!(drain_all(&mut c, "late", "short").await.is_empty());
    assert_eq!(drain_all(&mut c, "late", "keep").await, ["old-keep"]);

    // Back to the node's retention: what expired stays expired (also after another
    // restart), new messages are served.
    let t = admin_ok(&s, &["topic", "update", "short", "--retention", "default"]);
    assert_eq!(t["retention"], serde_json::Value::Null, "{t}");
    assert_eq!(t["effective_retention"], "3d", "{t}");
    send_ok(&mut c, message("short", "new-short", b"new-short")).await;
    assert_eq!(drain_all(&mut c, "after2", "short").await, ["new-short"]);
    assert!(s.terminate().success());
    s.spawn();
    let d = admin_ok(&s, &["topic", "describe", "short"]);
    assert_eq!(d["retention"], serde_json::Value::Null, "{d}");
    assert_eq!(d["queue_offsets"][0]["min_offset"], 1, "{d}");
    let mut c = s.client().await;
    assert_eq!(drain_all(&mut c, "later", "short").await, ["new-short"]);
}

#[test]
fn bad_retentions_are_refused_and_change_nothing() {
    let s = Server::start(&["--retention", "48h"]);
    let t = admin_ok(&s, &["topic", "create", "t", "--retention", "1h"]);
    assert_eq!(t["node_retention"], "2d", "{t}");
    // Refused by the CLI (exit 2, naming the argument) or by the broker (exit 1).
    for (args, code, needle) in [
        (
            &["topic", "create", "x", "--retention", "0"][..],
            2,
            "--retention",
        ),
        (
            &["topic", "create", "x", "--retention", "-1h"],
            2,
            "--retention",
        ),
        (
            &["topic", "create", "x", "--retention", "soon"],
            2,
            "not a duration",
        ),
        (
            &["topic", "create", "x", "--retention", "3d"],
            1,
            "longer than this broker's retention (2d)",
        ),
        (
            &["topic", "update", "t", "--retention", "0"],
            2,
            "more than zero",
        ),
        (
            &["topic", "update", "t", "--retention", "500us"],
            2,
            "millisecond",
        ),
        (
            &["topic", "update", "t", "--retention", "100d"],
            1,
            "retention_ms",
        ),
        (&["topic", "update", "nope", "--retention", "1h"], 1, "nope"),
    ] {
        refused(&s, args, code, needle);
    }
    let listed = admin_ok(&s, &["topic", "list"]);
    let names: Vec<&str> = listed
        .as_array()
        .map(|l| l.iter().filter_map(|t| t["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["t"], "{listed}");
    assert_eq!(listed[0]["retention"], "1h", "{listed}");
}
