//! End to end with the real binary: `ferromq config check`, and the retention and disk flags
//! taking effect in a running server.

mod support;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use ferromq_proto::v2::Code;
use support::*;

fn ferromq(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("FERROMQ_CONFIG")
        .output()
        .expect("run ferromq")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn config_check_prints_ok_or_the_field_and_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("broker.toml");
    let path = file.to_str().expect("utf-8 path");
    std::fs::write(
        &file,
        "nameservers = [\"ns-0:9876\"]\nretention = \"7d\"\nretention-bytes = \"8GiB\"\n\
         disk-high-water = \"85\"\ntls = \"off\"\n",
    )
    .expect("write");
    let out = ferromq(&[
        "config", "check", "--role", "broker", path, "--", "--group", "g1",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("OK: "),
        "{}",
        text(&out.stdout)
    );

    // The group is a flag at start-up: without it the broker would not start either.
    let out = ferromq(&["config", "check", "--role", "broker", path]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("group"), "{}", text(&out.stderr));

    for (body, field) in [
        ("retention = \"forever\"\n", "retention:"),
        ("retention-bytes = \"1KiB\"\n", "retention-bytes:"),
        ("disk-high-water = \"150\"\n", "disk-high-water:"),
        ("max-dealy = \"1d\"\n", "\"max-dealy\""),
        ("grpc-addr = 8081\n", "grpc-addr:"),
    ] {
        std::fs::write(&file, body).expect("write");
        let out = ferromq(&["config", "check", path]);
        assert_eq!(out.status.code(), Some(2), "{body}: {}", text(&out.stdout));
        let err = text(&out.stderr);
        assert!(err.contains(field), "{body}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
    let out = ferromq(&["config", "check", "/nonexistent/ferromq.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("cannot read"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn bad_retention_flags_stop_start_up_naming_the_flag() {
    for (flag, value) in [
        ("--retention", "0s"),
        ("--retention-bytes", "100"),
        ("--disk-high-water", "0"),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = ferromq(&[
            "standalone",
            "--data-dir",
            dir.path().to_str().expect("utf-8"),
            flag,
            value,
        ]);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        let err = text(&out.stderr);
        assert!(err.contains(flag.trim_start_matches('-')), "{flag}: {err}");
    }
}

/// A high-water mark below what the test machine's disk already uses makes the server refuse
/// sends while staying ready, and says so on /readyz; the default mark lets them through.
#[tokio::test]
async fn the_disk_high_water_flag_refuses_appends_above_it() {
    let s = Server::start(&["--disk-high-water", "1"]);
    s.create_topic("t", "normal", 1);
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let (code, body) = http_get(s.http_port, "/readyz").expect("readyz");
        assert_eq!(code, 200, "a full disk keeps the server ready");
        if body.contains("disk full") || Instant::now() > deadline {
            break body;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(body.contains("high-water mark of 1%"), "{body}");
    let mut c = s.client().await;
    let (code, r) = send(&mut c, message("t", "01A", b"x")).await;
    assert_ne!(code, Code::Ok, "a send above the mark is refused: {r:?}");

    let s = Server::start(&[]);
    s.create_topic("t", "normal", 1);
    let mut c = s.client().await;
    send_ok(&mut c, message("t", "01B", b"x")).await;
}
