//! Acknowledged changes to the auth store survive kill -9.
//!
//! The test re-runs its own binary as a child (`writer_child`, which only acts when
//! `FERROMQ_AUTH_KILL9_DIR` is set): the child creates users one by one and prints `acked N`
//! after each `create_user` returned. The parent SIGKILLs it at a different moment each round,
//! reopens the store and checks that every acknowledged user is there, whole, with its policy.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use ferromq_auth::{AuthStore, PolicyEntry, Secret, UserKind};

const DIR_ENV: &str = "FERROMQ_AUTH_KILL9_DIR";

fn user_name(i: u64) -> String {
    format!("user-{i}")
}

#[test]
fn writer_child() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return; // Run directly by the test harness: nothing to do.
    };
    let store = AuthStore::open(&dir).unwrap();
    let first = store.list_users().len() as u64;
    let mut out = std::io::stdout().lock();
    for i in first.. {
        let name = user_name(i);
        store
            .create_user(
                &name,
                Secret::new(format!("secret-of-{i}")).unwrap(),
                UserKind::Normal,
            )
            .unwrap();
        store
            .put_entry(
                &name,
                PolicyEntry::parse(&format!("topic:t{i}"), "publish", "allow", &[]).unwrap(),
            )
            .unwrap();
        writeln!(out, "acked {i}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn acknowledged_users_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked = std::collections::BTreeSet::new();
    for (round, kill_after) in [1u64, 7, 23, 3, 40].into_iter().enumerate() {
        let mut child = Command::new(&exe)
            .args(["--exact", "writer_child", "--nocapture", "--test-threads=1"])
            .env(DIR_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut seen = 0;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(n) = line.strip_prefix("acked ") {
                acked.insert(n.trim().parse::<u64>().unwrap());
                seen += 1;
                if seen == kill_after {
                    child.kill().unwrap(); // SIGKILL
                    break;
                }
            }
        }
        child.wait().unwrap();
        assert_eq!(
            seen, kill_after,
            "round {round}: child stopped before it was killed"
        );

        let store = AuthStore::open(dir.path())
            .unwrap_or_else(|e| panic!("round {round}: store unreadable after kill -9: {e}"));
        let snapshot = store.snapshot();
        for &i in &acked {
            let name = user_name(i);
            let user = snapshot
                .user(&name)
                .unwrap_or_else(|| panic!("round {round}: acknowledged {name} lost"));
            assert!(user
                .secret
                .ct_eq(&Secret::new(format!("secret-of-{i}")).unwrap()));
            // A user killed between its two changes may lack its policy; an acknowledged one
            // has it.
            assert_eq!(
                snapshot.policy_entries(&name).len(),
                1,
                "round {round}: policy of {name} lost"
            );
        }
    }
    // Guard against a vacuous pass: every round's acknowledgements were counted.
    assert_eq!(acked.len(), 1 + 7 + 23 + 3 + 40);
}
