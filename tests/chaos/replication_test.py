#!/usr/bin/env python3
"""Fault injection against replicated broker groups, on real processes on loopback.

Cluster: 3 name servers running the replication controller (Raft), 2 broker groups of 3 replicas
each (`ferromq broker --replica-id N`), 2 proxies. As root, every process runs in its own network
namespace with its own address on a private bridge (../cluster/netns.py), so partitions are
iptables DROP rules between two addresses; otherwise everything is on loopback and the partition
faults are left out (reported). Load: the official Python client's producer through one proxy,
the official Rust client's producer (load mode of tests/clients/rust) and the official Java
client's producer (io.ferromq.tests.Load of tests/clients/java) with both proxies, every message
with a unique id and a body the checker can recompute; the official Python client's
SimpleConsumer (through one proxy) and the Java client's SimpleConsumer (both proxies) read along
in one consumer group and ack.

Faults, one per round, drawn at random (seeded; FERROMQ_CHAOS_SEED) from:
  leader_kill9        kill -9 a group's leader; restart it 3-6 s later (it rejoins as a follower)
  controller_kill9    kill -9 the controller's Raft leader (a name server); restart it later
  leader_pause        SIGSTOP a group's leader for longer than its lease, then SIGCONT
  group_kill9         kill -9 every member of a group at once, then restart them all
  switchover          `ferromq admin cluster switchover` of a group to another in-sync member
  partition_followers cut a group's leader off from its followers (both directions, or one way)
                      for 3-8 s, longer than the 2 s lease (members run with --replica-lag 4s, so
                      a longer cut drops the followers from the in-sync set), then heal
  partition_controller cut a group's leader off from every controller (name server) the same way
                      (past the 3 s member expiry the controller elects another member): the old
                      leader must stop acknowledging when its lease ends

Checker (Jepsen's vocabulary, ../shared/RELIABILITY.md): acknowledged; lost = acknowledged and
never consumed (or consumed with another body); duplicated = consumed more than once;
unexpected = consumed but never acknowledged, split into indeterminate (its send failed or timed
out: allowed) and unexplained (never sent: a bug); failover time = the longest gap between two
acknowledged sends after a fault; sends refused. The same counts per fault kind: a message counts
for the round during which its send was answered (acknowledged, lost, unexpected) or, for a
duplicate, during which it was delivered again. In `sync` mode a lost message fails the run; in
`async` mode the loss window is reported.

Environment: FERROMQ_BIN, FERROMQ_RUST_CLIENT, FERROMQ_JAVA_CP (class path of tests/clients/java;
empty: no Java client), FERROMQ_CHAOS_WORK, FERROMQ_CHAOS_ROUNDS (default: each fault once),
FERROMQ_CHAOS_MODE (sync|async, default sync), FERROMQ_CHAOS_SEED, FERROMQ_CHAOS_FAULTS (comma
separated: only these kinds), FERROMQ_NETNS_TAG (names the
namespaces and the bridge, so the suite's trap can remove them; default: from the process id),
FERROMQ_CHAOS_NETNS=0 (stay on loopback even as root).

After the rounds every group must be back to 3 in-sync members with no member reporting
`ferromq_replication_rebuild_needed` (one that cannot follow its leader without cutting records it
already dispatched: the group would run on fewer members from then on).
"""
import concurrent.futures
import hashlib
import json
import os
import random
import signal
import subprocess
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
import netns  # noqa: E402  (a namespace per process, partitions as DROP rules)
from rocketmq import Message, Producer, SimpleConsumer, FilterExpression  # noqa: E402

MODE = os.environ.get("FERROMQ_CHAOS_MODE", "sync")
SEED = int(os.environ.get("FERROMQ_CHAOS_SEED", str(int(time.time()))))
JAVA_CP = os.environ.get("FERROMQ_JAVA_CP", "")
NET = None
if os.environ.get("FERROMQ_CHAOS_NETNS", "1") != "0" and netns.available():
    NET = netns.Net(os.environ.get("FERROMQ_NETNS_TAG") or f"{os.getpid() % 0xfffff:05x}")
FAULTS = ["leader_kill9", "controller_kill9", "leader_pause", "group_kill9", "switchover"]
if NET:
    FAULTS += ["partition_followers", "partition_controller"]
if os.environ.get("FERROMQ_CHAOS_FAULTS"):  # a subset, e.g. to chase one fault
    FAULTS = [f for f in os.environ["FERROMQ_CHAOS_FAULTS"].split(",") if f in FAULTS]
if os.environ.get("FERROMQ_CHAOS_FULL") == "1" and "leader_kill9" in FAULTS:
    FAULTS.append("leader_kill9")  # the full mode weighs leader kills double (>= 50 in all)
ROUNDS = int(os.environ.get("FERROMQ_CHAOS_ROUNDS") or len(FAULTS))
GROUPS = ["g1", "g2"]
REPLICAS = [1, 2, 3]
rng = random.Random(SEED)

send_log = []  # (time, ok) of every send, every producer
send_log_lock = threading.Lock()
failed_bodies = {}  # (tag, i) of sends that failed or timed out (their message may still appear) -> time
acked_at = {}  # message id -> time its send was acknowledged
deliveries = {}  # message id -> number of deliveries
redelivered_at = {}  # message id -> time of its second delivery
first_at = {}  # message id -> time of its first delivery
deliveries_lock = threading.Lock()
bodies = {}  # message id -> digest of the body consumed first
origin = {}  # message id -> (producer tag, index) read from the consumed body
http_addrs = {}  # process name -> HTTP host:port
PROXIES = []
ELECTIONS = []  # (fault kind, seconds from the fault until another member led)
PAUSED = set()  # processes stopped with SIGSTOP (asking them would only time out)


def log(msg):
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def http_get(name, path):
    with urllib.request.urlopen(f"http://{http_addrs[name]}{path}", timeout=2) as r:
        return r.read().decode()


def gauge(name, family):
    for line in http_get(name, "/metrics").splitlines():
        if line.startswith(family + " ") or line.startswith(family + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def place(name):
    """Where process `name` runs: (host, gRPC port, HTTP port, command prefix); its own network
    namespace when there is one (fixed ports: the address is its own), loopback otherwise."""
    if NET:
        return NET.add(name), 7000, 7001, NET.prefix(name)
    return "127.0.0.1", ct.free_port(), ct.free_port(), []


def start(name, args, host, port, http, prefix):
    http_addrs[name] = f"{host}:{http}"
    ct.procs[name] = ct.Proc(name, args, port, prefix, host)


def nameservers():
    where = [place(f"ns{i}") for i in range(1, 4)]
    peers = ",".join(f"{h}:{p}" for h, p, _, _ in where)
    for i, (h, p, http, prefix) in enumerate(where, 1):
        start(f"ns{i}", ["nameserver", "--addr", f"{h}:{p}", "--http-addr", f"{h}:{http}",
                         "--broker-expiry", "3s", "--controller-peers", peers,
                         "--data-dir", os.path.join(WORK, f"ns{i}")], h, p, http, prefix)
    return [f"{h}:{p}" for h, p, _, _ in where]


def member(group, rid, ns):
    name = f"{group}-{rid}"
    h, port, http, prefix = place(name)
    start(name, ["broker", "--group", group, "--replica-id", str(rid), "--replication", MODE,
                 "--nameservers", ",".join(ns), "--addr", f"{h}:{port}",
                 "--http-addr", f"{h}:{http}", "--segment-size", "64MiB", "--replica-lag", "4s",
                 "--data-dir", os.path.join(WORK, name)], h, port, http, prefix)


def proxy(name, ns):
    h, port, http, prefix = place(name)
    start(name, ["proxy", "--nameservers", ",".join(ns), "--grpc-addr", f"{h}:{port}",
                 "--http-addr", f"{h}:{http}", "--route-refresh", "500ms", "--remoting-addr", "off"],
          h, port, http, prefix)
    return f"{h}:{port}"


def leader_of(group):
    """The member that leads `group` at the highest epoch (a deposed leader cut off from the
    controller may still believe it leads, at an older epoch)."""
    best = None
    for rid in REPLICAS:
        name = f"{group}-{rid}"
        if not ct.procs[name].alive() or name in PAUSED:
            continue
        try:
            if gauge(name, "ferromq_replication_leader") == 1.0:
                epoch = gauge(name, "ferromq_replication_epoch") or 0
                if best is None or epoch > best[0]:
                    best = (epoch, name)
        except Exception:
            pass
    return best[1] if best else None


def in_sync(group):
    name = leader_of(group)
    return int(gauge(name, "ferromq_replication_in_sync_members") or 0) if name else 0


def needs_rebuild(group):
    """Members of `group` that cannot follow their leader without cutting what they dispatched."""
    out = []
    for rid in REPLICAS:
        name = f"{group}-{rid}"
        if not ct.procs[name].alive() or name in PAUSED:
            continue
        try:
            if gauge(name, "ferromq_replication_rebuild_needed") == 1.0:
                out.append(name)
        except Exception:
            pass
    return out


def rebuild_note(group):
    bad = needs_rebuild(group)
    return f"; MUST BE REBUILT: {', '.join(bad)}" if bad else ""


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


def note_ack(mid, digest):
    with ct.acked_lock:
        ct.acked[mid] = digest
        acked_at[mid] = time.time()
    note_send(True)


def note_failure(tag, i):
    ct.send_failures[0] += 1
    failed_bodies[(tag, i)] = time.time()
    note_send(False)


def note_delivery(mid, digest, tag_i):
    with deliveries_lock:
        n = deliveries.get(mid, 0) + 1
        deliveries[mid] = n
        first_at.setdefault(mid, time.time())
        if n == 2:
            redelivered_at[mid] = time.time()
        bodies.setdefault(mid, digest)
        origin.setdefault(mid, tag_i)


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
                note_ack(r.message_id, hashlib.sha256(m.body).hexdigest())
                self.sent += 1
            except Exception:
                note_failure(self.tag, i)
                time.sleep(0.05)
            i += 1

    def stop(self):
        self.stop_flag = True
        self.t.join(timeout=60)
        self.producer.shutdown()


class ProcLoad:
    """A client program in its own process (the Rust client's load mode, the Java client's Load)
    reporting one line per outcome: `ACK <id> <i>` / `ERR <i> <error>` for a producer, `GOT <id>
    <body sha-256> <tag> <i>` for a consumer. It stops once the file `stop-<tag>` exists."""

    def __init__(self, tag, argv, env):
        self.tag, self.sent, self.errors, self.last_error = tag, 0, 0, ""
        self.stop_file = os.path.join(WORK, f"stop-{tag}")
        env = dict(os.environ, FERROMQ_LOAD_TOPIC=ct.TOPIC, FERROMQ_LOAD_TAG=tag, FERROMQ_LOAD_RUN=ct.RUN,
                   FERROMQ_LOAD_STOP=self.stop_file, **env)
        self.err = open(os.path.join(WORK, f"client-{tag}.log"), "ab")
        self.p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=self.err, text=True)
        self.t = threading.Thread(target=self.read, daemon=True)
        self.t.start()

    def read(self):
        for line in self.p.stdout:
            parts = line.split(" ", 2)
            if parts[0] == "ACK" and len(parts) == 3:
                note_ack(parts[1], hashlib.sha256(ct.body(int(parts[2]), self.tag)).hexdigest())
                self.sent += 1
            elif parts[0] == "ERR":
                self.errors += 1
                note_failure(self.tag, int(parts[1]))
                self.last_error = line.strip()[:200]
            elif parts[0] == "GOT":
                f = line.split()
                if len(f) == 5:
                    note_delivery(f[1], f[2], (f[3], int(f[4])))
                    self.sent += 1
            elif parts[0] in ("FATAL",):
                self.last_error = line.strip()[:200]

    def stop(self):
        open(self.stop_file, "w").close()
        try:
            self.p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.p.kill()
        self.t.join(timeout=10)


def rust_load(tag, endpoints):
    return ProcLoad(tag, [ct.RUST_CLIENT], {"FERROMQ_MODE": "load", "FERROMQ_ENDPOINT": ",".join(endpoints)})


def java(tag, endpoints, role):
    argv = ["java", "-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            f"-Drocketmq.log.root={WORK}/java-client-{tag}", "-Dmq.consoleAppender.enabled=false",
            "-cp", JAVA_CP, "io.ferromq.tests.Load"]
    return ProcLoad(tag, argv, {"FERROMQ_LOAD_ROLE": role, "FERROMQ_ENDPOINT": ",".join(endpoints),
                                "FERROMQ_LOAD_GROUP": f"chaos_{ct.RUN}"})


class Consumer:
    """Reads along through a proxy, recording deliveries and acking everything. The acks of a
    batch go out in parallel: one at a time, the consumer acks ~150 messages/s here, slower than
    the producers send, and the backlog built during the faults then takes long to drain."""

    def __init__(self, port):
        self.stop_flag = False
        self.c = SimpleConsumer(ct.config(port), f"chaos_{ct.RUN}", {ct.TOPIC: FilterExpression("*")},
                                await_duration=5)
        self.c.startup()
        self.acks = concurrent.futures.ThreadPoolExecutor(8)
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def ack(self, m):
        try:
            self.c.ack(m)
        except Exception:
            pass  # the message comes back: at-least-once

    def run(self):
        while not self.stop_flag:
            batch = ct.receive_batch(self.c)
            for m in batch:
                note_delivery(m.message_id, hashlib.sha256(m.body).hexdigest(), parse_tag(m.body))
            list(self.acks.map(self.ack, batch))

    def stop(self):
        self.stop_flag = True
        self.t.join(timeout=60)
        self.acks.shutdown()
        self.c.shutdown()


def wait_leaders(secs=30):
    return ct.wait_until(lambda: all(leader_of(g) for g in GROUPS), secs)


def restart(name):
    p = ct.procs[name]
    if p.alive():
        return
    p.start()


def watch(group, victim, secs):
    """Waits `secs`, noting how long it took until a member other than `victim` led `group`."""
    t0, elected = time.time(), None
    while time.time() < t0 + secs:
        if elected is None and leader_of(group) not in (None, victim):
            elected = time.time() - t0
        time.sleep(0.1)
    return elected


def fault(kind):
    """Injects one fault and heals it; returns a description."""
    group = rng.choice(GROUPS)
    if kind in ("leader_kill9", "leader_pause"):
        # Right after a switchover or an election the group's leader may still be opening its
        # term (no member reports leading yet): wait for it rather than pick no victim.
        ct.wait_until(lambda: leader_of(group) is not None, 10, 0.1)
    if kind == "leader_kill9":
        victim = leader_of(group)
        if victim is None:
            return f"no leader of {group} to kill within 10 s"
        ct.procs[victim].kill9()
        t0 = time.time()
        ok = ct.wait_until(lambda: leader_of(group) not in (None, victim), 30, 0.1)
        took = time.time() - t0
        if ok:
            ELECTIONS.append((kind, took))
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
        if victim is None:
            return f"no leader of {group} to pause within 10 s"
        p = ct.procs[victim].p
        p.send_signal(signal.SIGSTOP)
        PAUSED.add(victim)
        paused = rng.uniform(4, 7)  # longer than the 2 s lease and the 3 s member expiry
        elected = watch(group, victim, paused)
        if elected is not None:
            ELECTIONS.append((kind, elected))
        p.send_signal(signal.SIGCONT)
        PAUSED.discard(victim)
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
        if not ok:
            return f"killed every member of {group}; NO leader within 60 s after restart"
        # Every member must follow the new leader again: one whose log was dispatched past the
        # new leader's history could not (it would need a rebuild) and the group would run on
        # fewer members.
        healed = ct.wait_until(lambda: in_sync(group) == 3, 30, 0.2)
        return (f"killed every member of {group}; restarted; leader {leader_of(group)}, in-sync "
                f"{in_sync(group) if healed else 'NOT back to 3 within 30 s'}{rebuild_note(group)}")
    if kind in ("partition_followers", "partition_controller"):
        victim = leader_of(group)
        if victim is None:
            return f"no leader of {group} to cut off"
        if kind == "partition_followers":
            peers = [f"{group}-{r}" for r in REPLICAS if f"{group}-{r}" != victim]
        else:
            peers = ["ns1", "ns2", "ns3"]
        direction = rng.choice(["both", "both", "in", "out"])
        secs = rng.uniform(3, 8)  # longer than the 2 s lease; the 3 s member expiry and 4 s replica lag too, mostly
        for peer in peers:
            NET.cut(victim, peer, direction)
        elected = watch(group, victim, secs)
        if elected is not None:
            ELECTIONS.append((kind, elected))
        during = leader_of(group)
        NET.heal()
        healed = ct.wait_until(lambda: leader_of(group) is not None and in_sync(group) == 3, 30, 0.2)
        return (f"cut {victim} off from {', '.join(peers)} ({direction}) for {secs:.1f} s; leader before the heal "
                f"{during}; after it {leader_of(group)}, in-sync {in_sync(group) if healed else 'NOT back to 3 within 30 s'}"
                f"{rebuild_note(group)}")
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


def window_of(windows, t):
    """The fault kind of the round during which time `t` fell ("before" the first fault)."""
    kind = "before"
    for k, start in windows:
        if t >= start:
            kind = k
    return kind


def per_kind(windows, acked, lost, duplicated, unexpected, unexplained, failover, elections):
    """The checker's counts split by the fault kind of the round each event belongs to."""
    kinds = {}

    def row(k):
        return kinds.setdefault(k, {"rounds": 0, "acknowledged": 0, "lost": 0, "duplicated": 0, "unexpected": 0,
                                    "unexpected_unexplained": 0, "sends_failed": 0, "failover_gaps_s": [],
                                    "election_s": []})
    for k, _ in windows:
        row(k)["rounds"] += 1
    for (k, _), gap in zip(windows, failover):
        row(k)["failover_gaps_s"].append(round(gap, 2))
    for k, t in elections:
        row(k)["election_s"].append(round(t, 2))
    for m in acked:
        row(window_of(windows, acked_at[m]))["acknowledged"] += 1
    for m in lost:
        row(window_of(windows, acked_at[m]))["lost"] += 1
    for m in duplicated:
        row(window_of(windows, redelivered_at.get(m, 0)))["duplicated"] += 1
    for m in unexpected:
        t = failed_bodies.get(origin.get(m))
        row(window_of(windows, t) if t else "never sent")["unexpected"] += 1
    for m in unexplained:
        row(window_of(windows, failed_bodies.get(origin.get(m)) or 0))["unexpected_unexplained"] += 1
    for t in failed_bodies.values():
        row(window_of(windows, t))["sends_failed"] += 1
    return kinds


def queues_behind():
    """The consumer group's queues that still have messages to deliver or settle (diagnostics)."""
    try:
        d = ct.admin(PROXIES[0], "group", "describe", f"chaos_{ct.RUN}")
        return [f"{q['broker_group']}/{q['queue']} committed {q['committed']} max {q['max_offset']} in flight {q['inflight']}"
                for q in d.get("queues", []) if q["lag"] or q["inflight"]]
    except Exception as e:
        return str(e)[:200]


def backlog():
    with deliveries_lock, ct.acked_lock:
        return sum(1 for m in ct.acked if m not in deliveries)


def pct(xs, q):
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(len(xs) * q))], 2) if xs else None


def main():
    log(f"work directory {WORK}; mode {MODE}; {ROUNDS} rounds; seed {SEED}; "
        + (f"network namespaces on {NET.subnet}.0/24 (bridge {NET.bridge})" if NET else
           "loopback (not root, or FERROMQ_CHAOS_NETNS=0): no partition faults"))
    ns = nameservers()
    time.sleep(1)
    for g in GROUPS:
        for r in REPLICAS:
            member(g, r, ns)
    p1 = proxy("p1", ns)
    p2 = proxy("p2", ns)
    PROXIES.extend([p1, p2])
    if not wait_leaders(40) or not ct.wait_until(lambda: len(ct.admin(p1, "cluster", "list")) == 2, 20):
        ct.check("cluster_up", False, "no leader for every group, or the proxy does not see both")
        return
    ct.wait_until(lambda: all(in_sync(g) == 3 for g in GROUPS), 30)
    ct.check("cluster_up", True, f"leaders {[leader_of(g) for g in GROUPS]}, in-sync {[in_sync(g) for g in GROUPS]}")
    ct.admin(p1, "topic", "create", ct.TOPIC, "--queues", "8")
    ct.wait_until(lambda: all(g["topics"] >= 1 for g in ct.admin(p2, "cluster", "list")), 10)

    producers = [PyLoad(p1, "py"), rust_load("rust", [p1, p2])]
    consumers = [Consumer(p2)]
    if JAVA_CP:
        producers.append(java("java", [p1, p2], "producer"))
        consumers.append(java("javac", [p1, p2], "consumer"))
    time.sleep(5)
    order = [FAULTS[i % len(FAULTS)] for i in range(ROUNDS)]
    rng.shuffle(order)
    failover, windows = [], []
    for n, kind in enumerate(order, 1):
        t0 = time.time()
        windows.append((kind, t0))
        what = fault(kind)
        wait_leaders(60)
        time.sleep(4)
        gap = gaps(t0, time.time())
        failover.append(gap)
        log(f"round {n}/{len(order)} {kind}: {what}; longest gap in acknowledged sends {gap:.1f} s; "
            f"{backlog()} acknowledged not consumed yet")
    time.sleep(3)
    for p in producers:
        p.stop()
    t_end = time.time()
    with ct.acked_lock:
        acked = dict(ct.acked)
    by_client = {p.tag: p.sent for p in producers}
    log(f"producers stopped: {len(acked)} acknowledged {by_client}, {ct.send_failures[0]} sends failed; draining the consumers")

    def unseen():
        with deliveries_lock:
            return [m for m in acked if m not in deliveries]
    # Until every acknowledged message was consumed, for at most 120 s; or until nothing moved
    # for 30 s while the group has nothing left to deliver (what is still unseen then is lost).
    drained, next_note, last_move, last_left = False, time.time() + 10, time.time(), None
    while time.time() < t_end + 120:
        left = unseen()
        if not left:
            drained = True
            break
        if len(left) != last_left:
            last_move, last_left = time.time(), len(left)
        if time.time() >= next_note:
            next_note = time.time() + 10
            behind = queues_behind()
            log(f"draining: {len(left)} unseen, acknowledged in rounds "
                f"{sorted(set(window_of(windows, acked_at[m]) for m in left))}; queues with lag or in flight: "
                f"{behind}")
            if behind == [] and time.time() - last_move >= 30:
                break
        time.sleep(1)
    drain_s = time.time() - t_end
    late = sorted(m for m in acked if first_at.get(m, 0) > t_end)
    log((f"drained in {drain_s:.1f} s" if drained else f"NOT drained after {drain_s:.1f} s: {len(unseen())} unseen")
        + f"; {len(late)} first delivered after the producers stopped, "
        f"acknowledged in rounds {sorted(set(window_of(windows, acked_at[m]) for m in late))}")
    time.sleep(5)
    for c in consumers:
        c.stop()

    # Every group back to all 3 members in sync, none needing a rebuild.
    ct.wait_until(lambda: all(in_sync(g) == 3 for g in GROUPS), 30, 0.5)
    in_sync_end = {g: in_sync(g) for g in GROUPS}
    rebuild = [n for g in GROUPS for n in needs_rebuild(g)]
    lost = [m for m in acked if m not in deliveries]
    altered = [m for m in acked if m in bodies and bodies[m] != acked[m]]
    duplicated = {m: n for m, n in deliveries.items() if n > 1}
    unexpected = [m for m in deliveries if m not in acked]
    unexplained = [m for m in unexpected if origin.get(m) not in failed_bodies]
    kinds = per_kind(windows, acked, lost, duplicated, unexpected, unexplained, failover, ELECTIONS)
    report = {
        "mode": MODE, "rounds": len(order), "seed": SEED, "faults": order,
        "network": "namespaces" if NET else "loopback",
        "clients": {"producers": by_client, "consumers": [getattr(c, "tag", "py") for c in consumers]},
        "leader_kills": sum(1 for k in order if k in ("leader_kill9", "group_kill9")),
        "acknowledged": len(acked), "lost": len(lost), "altered": len(altered),
        "duplicated": len(duplicated), "duplicate_deliveries": sum(n - 1 for n in duplicated.values()),
        "unexpected": len(unexpected), "unexpected_unexplained": len(unexplained),
        "sends_refused": ct.send_failures[0],
        "failover_gap_p50_s": pct(failover, 0.5), "failover_gap_max_s": round(max(failover, default=0), 2),
        "election_p50_s": pct([t for _, t in ELECTIONS], 0.5),
        "election_max_s": round(max((t for _, t in ELECTIONS), default=0), 2),
        "drain_s": round(drain_s, 1),
        "in_sync_at_end": in_sync_end, "members_needing_rebuild": rebuild,
        "per_fault": kinds,
    }
    with open(os.path.join(WORK, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    log("report " + json.dumps({k: v for k, v in report.items() if k != "per_fault"}))
    for k, r in sorted(kinds.items()):
        log(f"  {k:21} rounds {r['rounds']:2}  acknowledged {r['acknowledged']:6}  lost {r['lost']}  duplicated "
            f"{r['duplicated']}  unexpected {r['unexpected']} ({r['unexpected_unexplained']} unexplained)  sends failed "
            f"{r['sends_failed']}  gap max {max(r['failover_gaps_s'], default=0):.1f} s  election p50 "
            f"{pct(r['election_s'], 0.5)} s")
    p50 = report["failover_gap_p50_s"] or 0
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
    ct.check("every_member_follows", not rebuild,
             "no member needs a rebuild" if not rebuild else f"members that cannot follow their leader: {rebuild}")
    ct.check("in_sync_restored", all(n == 3 for n in in_sync_end.values()), f"in-sync members at the end {in_sync_end}")
    if JAVA_CP:
        ct.check("java_client", all(p.sent > 0 for p in producers + consumers[1:]),
                 f"Java producer {producers[-1].sent} acknowledged, Java consumer {consumers[-1].sent} deliveries")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up (finally below) when stopped
    try:
        main()
    except Exception as e:  # a crash of the driver is a failure, never a pass
        import traceback
        traceback.print_exc()
        ct.check("driver", False, repr(e))
    finally:
        if NET:
            NET.heal()
        for p in ct.procs.values():
            try:
                if p.alive():
                    p.p.send_signal(signal.SIGCONT)
                    p.term(10)
            except Exception:
                pass
        if NET:
            NET.close()
    sys.exit(len(ct.failures))
