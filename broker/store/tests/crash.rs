//! Kill -9 under load: a writer runs in a child process and is killed with SIGKILL at random
//! moments, round after round. After each kill the parent reopens the store and checks that
//! every append the child saw acknowledged is present and intact, that no partial record is
//! visible, and that consume queues and indexes agree with the commit log.
//!
//! Out of scope here: power loss (unflushed pages lost). A SIGKILL leaves the page cache
//! intact, so this proves process-crash safety in both flush modes; sync mode's on-disk
//! promise would need a fault-injecting filesystem.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferromq_store::{FlushMode, Store};
use support::{body_for, message, small_config};

const QUEUES: u32 = 4;

/// The child: appends from several threads until killed, printing one line per acknowledged
/// append. Runs only when the parent sets FERROMQ_CRASH_DIR.
#[test]
#[ignore = "child process of acked_appends_survive_sigkill"]
fn crash_child_writer() {
    let Some(dir) = std::env::var_os("FERROMQ_CRASH_DIR") else {
        return;
    };
    let round: u32 = std::env::var("FERROMQ_CRASH_ROUND")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    let mut cfg = small_config(std::path::Path::new(&dir));
    cfg.flush = if round.is_multiple_of(2) {
        FlushMode::Async
    } else {
        FlushMode::Sync
    };
    let store = Store::open(cfg).expect("child open");
    println!("READY");
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let s = store.clone();
            std::thread::spawn(move || {
                let mut out = std::io::stdout();
                for i in 0u64.. {
                    let id = format!("r{round}-t{t}-{i}");
                    let q = (i % QUEUES as u64) as u32;
                    let keys = [format!("key-{}", i % 7)];
                    let m = message(
                        "crash",
                        q,
                        &id,
                        Some(if i % 2 == 0 { "even" } else { "odd" }),
                        &[&keys[0]],
                    );
                    let a = s.append(&m).expect("append");
                    use std::io::Write;
                    let _ = writeln!(out, "ACK {id} {q} {} {}", a.queue_offset, a.phys_offset);
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

struct Ack {
    id: String,
    queue: u32,
    queue_offset: u64,
    phys: u64,
}

#[test]
fn acked_appends_survive_sigkill() {
    let rounds: u32 = std::env::var("FERROMQ_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(12);
    let seed: u64 = std::env::var("FERROMQ_CRASH_SEED")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    println!("crash test seed {seed} ({rounds} rounds; rerun with FERROMQ_CRASH_SEED={seed})");
    let mut rng = seed | 1;
    let mut next_rand = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut all: Vec<Ack> = Vec::new();
    let (mut unacked_cut, mut total_acked) = (0u64, 0u64);
    for round in 0..rounds {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child_writer",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("FERROMQ_CRASH_DIR", dir.path())
            .env("FERROMQ_CRASH_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        // Start the clock once the child has the store open (it recovers first).
        let mut first = String::new();
        while stdout.read_line(&mut first).unwrap_or(0) > 0 && !first.contains("READY") {
            first.clear();
        }
        let kill_after = Duration::from_millis(50 + next_rand() % 400);
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                let mut p = line.split(' ');
                if p.next() != Some("ACK") {
                    continue;
                }
                let (Some(id), Some(q), Some(qo), Some(ph)) =
                    (p.next(), p.next(), p.next(), p.next())
                else {
                    continue;
                };
                let (Ok(q), Ok(qo), Ok(ph)) = (q.parse(), qo.parse(), ph.parse()) else {
                    continue;
                };
                acks.push(Ack {
                    id: id.to_string(),
                    queue: q,
                    queue_offset: qo,
                    phys: ph,
                });
            }
            acks
        });
        let started = Instant::now();
        while started.elapsed() < kill_after {
            std::thread::sleep(Duration::from_millis(5));
        }
        // SIGKILL: no destructor, no flush, no clean-shutdown marker.
        child.kill().unwrap();
        let _ = child.wait();
        let acks = reader.join().unwrap();
        total_acked += acks.len() as u64;
        all.extend(acks);

        let store = Store::open(small_config(dir.path())).unwrap();
        let s = store.stats();
        assert!(
            s.recovered_unclean || round == 0 && all.is_empty(),
            "round {round}: the kill must look unclean"
        );
        assert!(
            s.recovery_corrupt_records.is_empty(),
            "round {round}: interior damage after a kill: {:?}",
            s.recovery_corrupt_records
        );
        unacked_cut += s.recovery_truncated_bytes;
        assert!(store.wait_dispatched(s.log_write_offset, Duration::from_secs(30)));
        verify(&store, &all, round);
        store.close().unwrap();
    }
    assert!(
        total_acked >= 1000 * rounds as u64 / 4,
        "too few appends acknowledged ({total_acked}) for the test to mean anything"
    );
    println!("crash test: {rounds} SIGKILL rounds, {total_acked} acked, 0 lost, 0 altered, {unacked_cut} torn bytes cut");
}

fn verify(store: &Store, acks: &[Ack], round: u32) {
    let mut lost = vec![];
    for a in acks {
        match store.message_at(a.phys) {
            Ok(m)
                if m.msg_id() == Some(a.id.as_str())
                    && m.queue_id == a.queue
                    && m.queue_offset == a.queue_offset =>
            {
                assert_eq!(
                    m.body,
                    body_for(&a.id),
                    "round {round}: body of {} altered",
                    a.id
                );
            }
            other => lost.push(format!(
                "{} at {}: {:?}",
                a.id,
                a.phys,
                other.map(|m| m.msg_id().map(str::to_string))
            )),
        }
    }
    assert!(
        lost.is_empty(),
        "round {round}: {} acked appends lost, first: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    // Every queue is contiguous, every entry points at a valid record of that queue, and the
    // records the log holds are exactly those the queues list.
    let mut in_queues: HashMap<u64, ()> = HashMap::new();
    for q in 0..QUEUES {
        let (min, max) = store.queue_range("crash", q);
        let mut off = min;
        while off < max {
            let r = store.read("crash", q, off, 512, None).unwrap();
            assert!(
                r.corrupt.is_empty(),
                "round {round}: queue {q} serves damaged records {:?}",
                r.corrupt
            );
            for (i, m) in r.messages.iter().enumerate() {
                assert_eq!(
                    m.queue_offset,
                    off + i as u64,
                    "round {round}: queue {q} has a hole or a reorder"
                );
                assert_eq!(
                    m.body,
                    body_for(m.msg_id().unwrap()),
                    "round {round}: record altered"
                );
                in_queues.insert(m.phys_offset, ());
            }
            off += r.messages.len() as u64;
            assert!(
                !r.messages.is_empty(),
                "round {round}: queue {q} stuck at {off} < {max}"
            );
        }
    }
    for a in acks {
        assert!(
            in_queues.contains_key(&a.phys),
            "round {round}: {} is in the log but in no consume queue",
            a.id
        );
    }
    // The index agrees too (sampled: every 50th ack).
    for a in acks.iter().step_by(50) {
        let m = store
            .lookup_id("crash", &a.id)
            .unwrap_or_else(|| panic!("round {round}: index lost {}", a.id));
        assert_eq!(m.phys_offset, a.phys);
    }
}
