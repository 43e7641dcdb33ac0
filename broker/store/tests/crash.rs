//! Kill -9 under load: a writer runs in a child process and is killed with SIGKILL at random
//! moments, round after round. After each kill the parent reopens the store and checks that
//! every append the child saw acknowledged is present and intact, that no partial record is
//! visible, and that consume queues and indexes agree with the commit log.
//!
//! Out of scope here: power loss (unflushed pages lost). A SIGKILL leaves the page cache
//! intact, so this proves process-crash safety in both flush modes; sync mode's on-disk
//! promise would need a fault-injecting filesystem.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferromq_store::{FlushMode, Store};
use support::{body_for, message, small_config};

const QUEUES: u32 = 4;

/// The directory and round a child process was started with (`None` when the test runs on
/// its own: children run only when a parent sets `FERROMQ_CRASH_DIR`).
fn child_env() -> Option<(std::path::PathBuf, u32)> {
    let dir = std::env::var_os("FERROMQ_CRASH_DIR")?;
    let round = std::env::var("FERROMQ_CRASH_ROUND")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    Some((dir.into(), round))
}

/// The child: appends from several threads until killed, printing one line per acknowledged
/// append. Runs only when the parent sets FERROMQ_CRASH_DIR.
#[test]
#[ignore = "child process of acked_appends_survive_sigkill"]
fn crash_child_writer() {
    let Some((dir, round)) = child_env() else {
        return;
    };
    let mut cfg = small_config(&dir);
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
                    // Half the threads append the way the gRPC send path does (in memory
                    // on the caller when possible, then the async flush wait).
                    let a = if t % 2 == 0 {
                        support::append_quick(&s, &m).expect("append")
                    } else {
                        s.append(&m).expect("append")
                    };
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

/// Rounds and a seeded random source, from `FERROMQ_CRASH_ROUNDS` and `FERROMQ_CRASH_SEED`.
fn rounds_and_rng(name: &str) -> (u32, impl FnMut() -> u64) {
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
    println!("{name}: seed {seed} ({rounds} rounds; rerun with FERROMQ_CRASH_SEED={seed})");
    let mut rng = seed | 1;
    let next_rand = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    (rounds, next_rand)
}

/// Runs the ignored test `child` in a child process on `dir`, waits until it prints READY,
/// kills it with SIGKILL after `kill_after` and returns every line it printed after READY.
fn run_child_until_killed(
    child: &str,
    dir: &Path,
    round: u32,
    kill_after: Duration,
) -> Vec<String> {
    let exe = std::env::current_exe().unwrap();
    let mut proc = Command::new(&exe)
        .args([
            "--exact",
            child,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("FERROMQ_CRASH_DIR", dir)
        .env("FERROMQ_CRASH_ROUND", round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(proc.stdout.take().unwrap());
    let mut stderr = proc.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    // Start the clock once the child has the store open (it recovers first).
    let mut first = String::new();
    while stdout.read_line(&mut first).unwrap_or(0) > 0 && !first.contains("READY") {
        first.clear();
    }
    if !first.contains("READY") {
        // The child ended before it had the store open: a kill now would prove nothing, and
        // the parent's recovery would look clean. Say why the child ended.
        let _ = proc.wait();
        let text = errors.join().unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        panic!(
            "round {round}: the child {child} ended before it opened the store:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let reader = std::thread::spawn(move || stdout.lines().map_while(|l| l.ok()).collect());
    let started = Instant::now();
    while started.elapsed() < kill_after {
        std::thread::sleep(Duration::from_millis(5));
    }
    // SIGKILL: no destructor, no flush, no clean-shutdown marker.
    proc.kill().unwrap();
    let _ = proc.wait();
    reader.join().unwrap()
}

#[test]
fn acked_appends_survive_sigkill() {
    let (rounds, mut next_rand) = rounds_and_rng("crash test");
    let dir = tempfile::tempdir().unwrap();
    let mut all: Vec<Ack> = Vec::new();
    let (mut unacked_cut, mut total_acked) = (0u64, 0u64);
    for round in 0..rounds {
        let kill_after = Duration::from_millis(50 + next_rand() % 400);
        let lines = run_child_until_killed("crash_child_writer", dir.path(), round, kill_after);
        let acks: Vec<Ack> = lines
            .iter()
            .filter_map(|line| {
                let mut p = line.split(' ');
                if p.next() != Some("ACK") {
                    return None;
                }
                let (id, q, qo, ph) = (p.next()?, p.next()?, p.next()?, p.next()?);
                Some(Ack {
                    id: id.to_string(),
                    queue: q.parse().ok()?,
                    queue_offset: qo.parse().ok()?,
                    phys: ph.parse().ok()?,
                })
            })
            .collect();
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

/// Offsets committed per group by the metadata child; one key per queue id.
const META_QUEUES: u64 = 4;

fn meta_config(dir: &Path) -> ferromq_store::StoreConfig {
    let mut cfg = small_config(dir);
    // Compact often, so kills land inside compactions too.
    cfg.metadata_compact_bytes = 4096;
    cfg
}

/// The metadata child: one thread creates topics (committing an offset on each) and deletes
/// every third one; two threads commit growing offsets. It prints a line after each
/// acknowledged change, and `DELETING` before a delete it has not seen acknowledged yet.
#[test]
#[ignore = "child process of acked_metadata_survives_sigkill"]
fn crash_child_metadata() {
    let Some((dir, round)) = child_env() else {
        return;
    };
    let store = Store::open(meta_config(&dir)).expect("child open");
    println!("READY");
    let topics = {
        let s = store.clone();
        std::thread::spawn(move || {
            for i in 0u64.. {
                let name = format!("r{round}-{i}");
                let t = ferromq_store::TopicConfig {
                    name: name.clone(),
                    queues: 1 + (i % 4) as u32,
                    message_type: ferromq_store::MessageType::Normal,
                    permission: ferromq_store::Permission::ReadWrite,
                    retention_ms: None,
                };
                s.topics().create(t).expect("create");
                println!("CREATED {name}");
                s.offsets().commit("gt", &name, 0, i + 1).expect("commit");
                println!("OFFT {name} {}", i + 1);
                if i % 3 == 2 {
                    let victim = format!("r{round}-{}", i - 2);
                    println!("DELETING {victim}");
                    s.topics().delete(&victim).expect("delete");
                    println!("DELETED {victim}");
                }
            }
        })
    };
    let committers: Vec<_> = (0..2)
        .map(|t| {
            let s = store.clone();
            std::thread::spawn(move || {
                let group = format!("g{t}");
                let start = (0..META_QUEUES as u32)
                    .filter_map(|q| s.offsets().get(&group, "t", q))
                    .max()
                    .map_or(0, |m| m + 1);
                for i in start.. {
                    let q = (i % META_QUEUES) as u32;
                    s.offsets().commit(&group, "t", q, i).expect("commit");
                    println!("OFF {group} {q} {i}");
                }
            })
        })
        .collect();
    let _ = topics.join();
    for c in committers {
        let _ = c.join();
    }
}

/// What the parent knows of one topic the child touched.
#[derive(Debug, Default, Clone, Copy)]
struct TopicFate {
    created: bool,
    offset: Option<u64>,
    deleting: bool,
    deleted: bool,
}

#[test]
fn acked_metadata_survives_sigkill() {
    let (rounds, mut next_rand) = rounds_and_rng("metadata crash test");
    let dir = tempfile::tempdir().unwrap();
    let mut topics: BTreeMap<String, TopicFate> = BTreeMap::new();
    // Last acknowledged offset per (group, queue), and the highest acknowledged per group.
    let mut offsets: BTreeMap<(String, u32), u64> = BTreeMap::new();
    let mut group_max: BTreeMap<String, u64> = BTreeMap::new();
    let (mut acked_changes, mut torn_tails) = (0u64, 0u32);
    for round in 0..rounds {
        let kill_after = Duration::from_millis(50 + next_rand() % 400);
        let lines = run_child_until_killed("crash_child_metadata", dir.path(), round, kill_after);
        for line in &lines {
            let p: Vec<&str> = line.split(' ').collect();
            match p[..] {
                ["CREATED", name] => topics.entry(name.into()).or_default().created = true,
                ["OFFT", name, v] => {
                    topics.entry(name.into()).or_default().offset = v.parse().ok();
                }
                ["DELETING", name] => topics.entry(name.into()).or_default().deleting = true,
                ["DELETED", name] => topics.entry(name.into()).or_default().deleted = true,
                ["OFF", g, q, i] => {
                    let (Ok(q), Ok(i)) = (q.parse::<u32>(), i.parse::<u64>()) else {
                        continue; // a line cut by the kill
                    };
                    offsets.insert((g.to_string(), q), i);
                    let m = group_max.entry(g.to_string()).or_default();
                    *m = (*m).max(i);
                }
                _ => continue,
            }
            acked_changes += 1;
        }
        if round % 2 == 1 {
            // A torn append: the start of a frame whose rest never reached the file.
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(dir.path().join("config/metadata.log"))
                .unwrap();
            f.write_all(&ferromq_store::metadata_log::MAGIC.to_le_bytes())
                .unwrap();
            f.write_all(&[200, 0, 0, 0, 0xAB, 0xCD, 0x01]).unwrap();
            torn_tails += 1;
        }

        let store = Store::open(meta_config(dir.path()))
            .unwrap_or_else(|e| panic!("round {round}: the store does not open after a kill: {e}"));
        let (ts, os) = (store.topics(), store.offsets());
        let mut lost = vec![];
        for (name, fate) in topics.iter_mut() {
            let exists = ts.get(name).is_some();
            let offset = os.get("gt", name, 0);
            if fate.deleted {
                if exists || offset.is_some() {
                    lost.push(format!(
                        "{name}: deleted (acked) but back: {exists} {offset:?}"
                    ));
                }
            } else if fate.deleting {
                // Cut by the kill: either state, but whole (no offsets without the topic).
                if !exists && offset.is_some() {
                    lost.push(format!("{name}: half deleted, offset {offset:?} kept"));
                }
                fate.deleted = !exists;
                fate.deleting = false;
            } else if fate.created {
                if !exists {
                    lost.push(format!("{name}: created (acked) but missing"));
                } else if fate.offset.is_some() && offset != fate.offset {
                    lost.push(format!(
                        "{name}: offset {offset:?}, acked {:?}",
                        fate.offset
                    ));
                }
                fate.offset = offset;
            } else {
                fate.created = exists;
                fate.offset = offset;
            }
        }
        for ((g, q), acked) in offsets.iter_mut() {
            let got = os.get(g, "t", *q).unwrap_or(0);
            // At most the one commit in flight per group may also have landed.
            let bound = group_max[g] + 1;
            if got < *acked || got > bound {
                lost.push(format!(
                    "{g}/{q}: offset {got}, acked {acked}, at most {bound}"
                ));
            }
            *acked = got;
        }
        assert!(
            lost.is_empty(),
            "round {round}: {} acknowledged metadata changes lost or altered: {:?}",
            lost.len(),
            &lost[..lost.len().min(10)]
        );
        for (g, m) in group_max.iter_mut() {
            *m = (0..META_QUEUES as u32)
                .filter_map(|q| os.get(g, "t", q))
                .max()
                .unwrap_or(*m);
        }
        store.close().unwrap();
    }
    assert!(
        acked_changes >= 50 * rounds as u64,
        "too few metadata changes acknowledged ({acked_changes}) for the test to mean anything"
    );
    let log = std::fs::metadata(dir.path().join("config/metadata.log"))
        .unwrap()
        .len();
    println!(
        "metadata crash test: {rounds} SIGKILL rounds, {acked_changes} acknowledged changes, 0 lost, \
         {torn_tails} torn tails cut; {} topics, metadata log {log} bytes",
        topics.values().filter(|t| t.created && !t.deleted).count()
    );
}
