//! `--log-format json` makes every role's stderr one JSON object per line (what log
//! collectors parse), with the level, the message and the span's fields; `--log-level` takes
//! tracing directives and a bad one exits 2 naming the flag.

mod support;

use std::process::Command;

use support::{Server, BIN};

#[test]
fn json_logs_are_one_object_per_line() {
    let mut s = Server::start(&["--log-format", "json", "--log-level", "warn,ferromq=info"]);
    s.create_topic("orders", "normal", 1);
    assert!(s.terminate().success());
    let log = s.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 2, "some lines: {log}");
    for l in &lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{l}");
        assert!(
            v["fields"]["message"].is_string() || v["fields"].is_object(),
            "{l}"
        );
    }
    assert!(
        lines.iter().any(|l| l.contains("\"target\":\"ferromq")),
        "ferromq logs at info: {log}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("\"level\":\"INFO\"") && !l.contains("\"target\":\"ferromq")),
        "other crates only warn: {log}"
    );
}

#[test]
fn the_log_format_is_text_by_default() {
    let mut s = Server::start(&[]);
    assert!(s.terminate().success());
    assert!(
        !s.log().trim_start().starts_with('{'),
        "text by default: {}",
        s.log()
    );
}

#[test]
fn a_bad_log_level_exits_2_naming_the_flag() {
    let out = Command::new(BIN)
        .args(["nameserver", "--log-level", "info,ferromq=loud"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("log-level"), "{err}");
    let out = Command::new(BIN)
        .args(["--log-format", "yaml", "proxy"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "clap refuses an unknown format");
}
