#!/usr/bin/env python3
"""Fault injection against replicated broker groups, on real processes on loopback.

Cluster: 3 name servers running the replication controller (Raft), 2 broker groups of 3 replicas
each (`ferromq broker --replica-id N`), 2 proxies. Load: the official Python client's producer
through one proxy and the official Rust client's producer (load mode of tests/clients/rust) with
both proxies, every message with a unique id and a body the checker can recompute; the official
Python client's SimpleConsumer reads along through the other proxy and acks.

Faults, one per round, drawn at random (seeded; FERROMQ_CHAOS_SEED) from:
  leader_kill9        kill -9 a group's leader; restart it 3-6 s later (it rejoins as a follower)
  controller_kill9    kill -9 the controller's Raft leader (a name server); restart it later
  leader_pause        SIGSTOP a group's leader for longer than its lease, then SIGCONT
  group_kill9         kill -9 every member of a group at once, then restart them all
  switchover          `ferromq admin cluster switchover` of a group to another in-sync member

Checker (Jepsen's vocabulary, ../shared/RELIABILITY.md): acknowledged; lost = acknowledged and
never consumed (or consumed with another body); duplicated = consumed more than once;
unexpected = consumed but never acknowledged, split into indeterminate (its send failed or timed
out: allowed) and unexplained (never sent: a bug); failover time = the longest gap between two
acknowledged sends after a fault; sends refused. In `sync` mode a lost message fails the run; in
`async` mode the loss window is reported.

Environment: FERROMQ_BIN, FERROMQ_RUST_CLIENT, FERROMQ_CHAOS_WORK, FERROMQ_CHAOS_ROUNDS (default 5:
each fault once), FERROMQ_CHAOS_MODE (sync|async, default sync), FERROMQ_CHAOS_SEED.
"""
import hashlib
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
import urllib.request

WORK = os.environ.get("FERROMQ_CHAOS_WORK") or tempfile.mkdtemp(prefix="ferromq-chaos.")
os.makedirs(WORK, exist_ok=True)
os.environ["FERROMQ_CLUSTER_WORK"] = WORK
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cluster"))
import cluster_test as ct  # noqa: E402  (processes, clients and the message body scheme)
from rocketmq import Message, Producer, SimpleConsumer, FilterExpression  # noqa: E402

MODE = os.environ.get("FERROMQ_CHAOS_MODE", "sync")
ROUNDS = int(os.environ.get("FERROMQ_CHAOS_ROUNDS", "5"))
SEED = int(os.environ.get("FERROMQ_CHAOS_SEED", str(int(time.time()))))
FAULTS = ["leader_kill9", "controller_kill9", "leader_pause", "group_kill9", "switchover"]
GROUPS = ["g1", "g2"]
REPLICAS = [1, 2, 3]
rng = random.Random(SEED)

send_log = []  # (time, ok) of every send, both producers
send_log_lock = threading.Lock()
failed_bodies = set()  # (tag, i) of sends that failed or timed out: their message may still appear
deliveries = {}  # message id -> number of deliveries
bodies = {}  # message id -> digest of the body consumed first
origin = {}  # message id -> (producer tag, index) read from the consumed body
http_ports = {}  # process name -> HTTP port
PROXIES = []


def log(msg):
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def http_get(name, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{http_ports[name]}{path}", timeout=2) as r:
        return r.read().decode()


def gauge(name, family):
    for line in http_get(name, "/metrics").splitlines():
        if line.startswith(family + " ") or line.startswith(family + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def start(name, args, port, http):
    http_ports[name] = http
    ct.procs[name] = ct.Proc(name, args, port)


def nameservers():
    ports = [ct.free_port() for _ in range(3)]
    peers = ",".join(f"127.0.0.1:{p}" for p in ports)
    for i, p in enumerate(ports, 1):
        http = ct.free_port()
        start(f"ns{i}", ["nameserver", "--addr", f"127.0.0.1:{p}", "--http-addr", f"127.0.0.1:{http}",
                         "--broker-expiry", "3s", "--controller-peers", peers,
                         "--data-dir", os.path.join(WORK, f"ns{i}")], p, http)
    return [f"127.0.0.1:{p}" for p in ports]


def member(group, rid, ns):
    port, http = ct.free_port(), ct.free_port()
    start(f"{group}-{rid}", ["broker", "--group", group, "--replica-id", str(rid), "--replication", MODE,
                             "--nameservers", ",".join(ns), "--addr", f"127.0.0.1:{port}",
                             "--http-addr", f"127.0.0.1:{http}", "--segment-size", "64MiB",
                             "--data-dir", os.path.join(WORK, f"{group}-{rid}")], port, http)


def leader_of(group):
    for rid in REPLICAS:
        name = f"{group}-{rid}"
        if not ct.procs[name].alive():
            continue
        try:
            if gauge(name, "ferromq_replication_leader") == 1.0:
                return name
        except Exception:
            pass
    return None


def in_sync(group):
    name = leader_of(group)
    return int(gauge(name, "ferromq_replication_in_sync_members") or 0) if name else 0


def controller_leader():
    for i in range(1, 4):
        name = f"ns{i}"
        try:
            if ct.procs[name].alive() and gauge(name, "ferromq_controller_is_leader") == 1.0:
                return name
        except Exception:
            pass
    return None


def note_send(ok):
    with send_log_lock:
        send_log.append((time.time(), ok))


class PyLoad:
    """The Python client's producer, one message at a time, recording every outcome."""

    def __init__(self, port, tag):
        self.tag, self.stop_flag, self.sent = tag, False, 0
        self.producer = Producer(ct.config(port), (ct.TOPIC,))
        self.producer.startup()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        i = 0
        while not self.stop_flag:
            m = Message()
            m.topic = ct.TOPIC
            m.body = ct.body(i, self.tag)
            try:
                r = self.producer.send(m)
                with ct.acked_lock:
                    ct.acked[r.message_id] = hashlib.sha256(m.body).hexdigest()
                self.sent += 1
                note_send(True)
            except Exception:
                ct.send_failures[0] += 1
                failed_bodies.add((self.tag, i))
                note_send(False)
                time.sleep(0.05)
            i += 1

    def stop(self):
        self.stop_flag = True
        self.t.join(timeout=60)
        self.producer.shutdown()


class RustLoad(ct.RustLoad):
    """The Rust client's load mode with both proxies, recording outcomes with their times."""

    def read(self):
        for line in self.p.stdout:
            parts = line.split(" ", 2)
            if parts[0] == "ACK" and len(parts) == 3:
                i = int(parts[2])
                with ct.acked_lock:
                    ct.acked[parts[1]] = hashlib.sha256(ct.body(i, self.tag)).hexdigest()
                self.sent += 1
                note_send(True)
            elif parts[0] == "ERR":
                self.errors += 1
                ct.send_failures[0] += 1
                failed_bodies.add((self.tag, int(parts[1])))
                note_send(False)
                self.last_error = line.strip()[:200]


class Consumer:
    """Reads along through a proxy, acking everything, recording deliveries."""

    def __init__(self, port):
        self.stop_flag = False
        self.c = SimpleConsumer(ct.config(port), f"chaos_{ct.RUN}", {ct.TOPIC: FilterExpression("*")},
                                await_duration=5)
        self.c.startup()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop_flag:
            for m in ct.receive_batch(self.c):
                digest = hashlib.sha256(m.body).hexdigest()
                deliveries[m.message_id] = deliveries.get(m.message_id, 0) + 1
                bodies.setdefault(m.message_id, digest)
                origin.setdefault(m.message_id, parse_tag(m.body))
                try:
                    self.c.ack(m)
                except Exception:
                    pass  # the message comes back: at-least-once

    def stop(self):
        self.stop_flag = True
        self.t.join(timeout=60)
        self.c.shutdown()


def wait_leaders(secs=30):
    return ct.wait_until(lambda: all(leader_of(g) for g in GROUPS), secs)


def restart(name):
    p = ct.procs[name]
    if p.alive():
        return
    p.start()


def fault(kind):
    """Injects one fault and heals it; returns a description."""
    group = rng.choice(GROUPS)
    if kind == "leader_kill9":
        victim = leader_of(group)
        ct.procs[victim].kill9()
        t0 = time.time()
        ok = ct.wait_until(lambda: leader_of(group) not in (None, victim), 30, 0.1)
        took = time.time() - t0
        time.sleep(rng.uniform(3, 6))
        restart(victim)
        return f"killed {victim}; new leader {leader_of(group)} after {took:.1f} s" if ok else \
            f"killed {victim}; NO new leader within 30 s"
    if kind == "controller_kill9":
        victim = controller_leader()
        if victim is None:
            return "no controller leader found"
        ct.procs[victim].kill9()
        ct.wait_until(lambda: controller_leader() not in (None, victim), 30, 0.2)
        new = controller_leader()
        time.sleep(rng.uniform(2, 4))
        restart(victim)
        return f"killed controller leader {victim}; new controller leader {new}"
    if kind == "leader_pause":
        victim = leader_of(group)
        p = ct.procs[victim].p
        p.send_signal(signal.SIGSTOP)
        paused = rng.uniform(4, 7)  # longer than the 2 s lease and the 3 s member expiry
        time.sleep(paused)
        p.send_signal(signal.SIGCONT)
        ct.wait_until(lambda: leader_of(group) is not None, 30, 0.2)
        return f"paused {victim} for {paused:.1f} s; leader now {leader_of(group)}"
    if kind == "group_kill9":
        names = [f"{group}-{r}" for r in REPLICAS]
        for n in names:
            ct.procs[n].kill9()
        time.sleep(rng.uniform(1, 3))
        for n in names:
            restart(n)
        ok = ct.wait_until(lambda: leader_of(group) is not None, 60, 0.2)
        return f"killed every member of {group}; restarted; leader {leader_of(group)}" if ok else \
            f"killed every member of {group}; NO leader within 60 s after restart"
    if kind == "switchover":
        before = leader_of(group)
        t0 = time.time()
        try:
            r = ct.admin(PROXIES[0], "cluster", "switchover", group)
        except Exception as e:
            return f"switchover of {group} FAILED: {e}"
        took = time.time() - t0
        return f"switchover of {group} from {before} to replica {r.get('leader')} (epoch {r.get('epoch')}) in {took:.1f} s"
    raise ValueError(kind)


def gaps(since, until):
    """Longest gap between acknowledged sends in [since, until]."""
    with send_log_lock:
        oks = [t for t, ok in send_log if ok and since <= t <= until]
    if len(oks) < 2:
        return until - since
    return max(b - a for a, b in zip(oks, oks[1:]))


def parse_tag(body):
    parts = body.split(b":", 3)
    try:
        return parts[0].decode(), int(parts[2])
    except (IndexError, ValueError, UnicodeDecodeError):
        return None, None


def main():
    log(f"work directory {WORK}; mode {MODE}; {ROUNDS} rounds; seed {SEED}")
    ns = nameservers()
    time.sleep(1)
    for g in GROUPS:
        for r in REPLICAS:
            member(g, r, ns)
    p1 = ct.proxy("p1", ns)
    p2 = ct.proxy("p2", ns)
    PROXIES.extend([p1, p2])
    if not wait_leaders(40) or not ct.wait_until(lambda: len(ct.admin(p1, "cluster", "list")) == 2, 20):
        ct.check("cluster_up", False, "no leader for every group, or the proxy does not see both")
        return
    ct.wait_until(lambda: all(in_sync(g) == 3 for g in GROUPS), 30)
    ct.check("cluster_up", True, f"leaders {[leader_of(g) for g in GROUPS]}, in-sync {[in_sync(g) for g in GROUPS]}")
    ct.admin(p1, "topic", "create", ct.TOPIC, "--queues", "8")
    ct.wait_until(lambda: all(g["topics"] >= 1 for g in ct.admin(p2, "cluster", "list")), 10)

    py = PyLoad(p1, "py")
    rust = RustLoad("rust", [p1, p2])
    consumer = Consumer(p2)
    time.sleep(5)
    order = [FAULTS[i % len(FAULTS)] for i in range(ROUNDS)]
    rng.shuffle(order)
    failover = []
    for n, kind in enumerate(order, 1):
        t0 = time.time()
        what = fault(kind)
        wait_leaders(60)
        time.sleep(4)
        gap = gaps(t0, time.time())
        failover.append(gap)
        log(f"round {n}/{len(order)} {kind}: {what}; longest gap in acknowledged sends {gap:.1f} s")
    time.sleep(3)
    py.stop()
    rust.stop()
    with ct.acked_lock:
        acked = dict(ct.acked)
    log(f"producers stopped: {len(acked)} acknowledged, {ct.send_failures[0]} sends failed; draining the consumer")
    ct.wait_until(lambda: set(acked) <= set(deliveries), 120, 1)
    time.sleep(5)
    consumer.stop()

    lost = [m for m in acked if m not in deliveries]
    altered = [m for m in acked if m in bodies and bodies[m] != acked[m]]
    duplicated = {m: n for m, n in deliveries.items() if n > 1}
    unexpected = [m for m in deliveries if m not in acked]
    unexplained = [m for m in unexpected if origin.get(m) not in failed_bodies]
    failover.sort()
    p50 = failover[len(failover) // 2] if failover else 0
    report = {
        "mode": MODE, "rounds": len(order), "seed": SEED, "faults": order,
        "acknowledged": len(acked), "lost": len(lost), "altered": len(altered),
        "duplicated": len(duplicated), "duplicate_deliveries": sum(n - 1 for n in duplicated.values()),
        "unexpected": len(unexpected), "unexpected_unexplained": len(unexplained),
        "sends_refused": ct.send_failures[0],
        "failover_gap_p50_s": round(p50, 2), "failover_gap_max_s": round(max(failover, default=0), 2),
    }
    with open(os.path.join(WORK, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    log("report " + json.dumps(report))
    detail = (f"{len(acked)} acknowledged, {len(lost)} lost, {len(altered)} altered, {len(duplicated)} duplicated, "
              f"{len(unexpected)} unexpected ({len(unexplained)} unexplained; sends failed: {ct.send_failures[0]}), failover gap p50 {p50:.1f} s "
              f"max {max(failover, default=0):.1f} s")
    if MODE == "sync":
        ct.check("nothing_lost", not lost and not altered, detail + (f"; lost e.g. {lost[:3]}" if lost else ""))
    else:
        ct.check("async_loss_window_reported", not altered, detail)
    ct.check("no_unexplained_messages", not unexplained,
             f"{len(unexpected)} consumed but never acknowledged, all from sends that failed or timed out"
             if not unexplained else f"{len(unexplained)} consumed that no failed send explains, e.g. {unexplained[:3]}")
    ct.check("every_round_recovered", all(leader_of(g) for g in GROUPS), f"leaders {[leader_of(g) for g in GROUPS]}")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # a crash of the driver is a failure, never a pass
        import traceback
        traceback.print_exc()
        ct.check("driver", False, repr(e))
    finally:
        for p in ct.procs.values():
            try:
                if p.alive():
                    p.p.send_signal(signal.SIGCONT)
                    p.term(10)
            except Exception:
                pass
    sys.exit(len(ct.failures))
