#!/usr/bin/env python3
"""Cluster suite: 2 name servers, 2 broker groups and 2 proxies as real `ferromq` processes on
loopback, driven by the OFFICIAL RocketMQ 5 Python client (rocketmq-python-client).

Scenarios (each prints `PASS|FAIL <name> <detail>`; the exit status is the number of failures):
  either_proxy        produce through each proxy, consume everything through the other; both groups hold messages
  parked_through_proxy  delay messages (one recalled) and transactions (one committed, one checked back)
                      sent through one proxy arrive once each, on time, through the other
  delay_outage        delay messages due while every broker group is down (kill -9) arrive once each after
                      the groups restart, none early
  proxy_kill9         kill -9 one proxy under load; clients configured with both endpoints carry on; no acked message lost
  nameserver_kill9    kill -9 one name server; sends, receives and new topics still work through the other
  add_group           start a third broker group under load, extend the topic to it, traffic reaches it
  drain_group         drain a group: no new messages land on it, consumers empty it, it retires cleanly
  nothing_lost        every message acknowledged to a producer during the whole run was received (no loss, bodies intact)

Clients: the Python client for most traffic, and the official Rust client (crate `rocketmq`, the
load mode of tests/clients/rust) for the producer that is configured with BOTH proxy endpoints:
the Python client joins several endpoints into one gRPC target whose :authority header
("127.0.0.1:a,127.0.0.1:b") is not a valid HTTP/2 authority, which our HTTP/2 server (h2)
refuses, while the Rust client opens one connection per endpoint and balances over them.

Environment: FERROMQ_BIN (the ferromq binary), FERROMQ_RUST_CLIENT (the Rust client program),
FERROMQ_CLUSTER_WORK (scratch directory, optional).
"""
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

from rocketmq import (ClientConfiguration, Credentials, FilterExpression, Message, Producer, SimpleConsumer,
                      TransactionChecker, TransactionResolution)

BIN = os.environ.get("FERROMQ_BIN", "target/debug/ferromq")
RUST_CLIENT = os.environ.get("FERROMQ_RUST_CLIENT", "")
WORK = os.environ.get("FERROMQ_CLUSTER_WORK") or tempfile.mkdtemp(prefix="ferromq-cluster.")
RUN = uuid.uuid4().hex[:8]
TOPIC = f"orders_{RUN}"
GROUP = f"cluster_check_{RUN}"
failures = []
procs = {}


def log(msg):
    print(f"[cluster {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def check(name, ok, detail=""):
    print(f"{'PASS' if ok else 'FAIL'} {name} {detail}".rstrip(), flush=True)
    if not ok:
        failures.append(name)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, secs=30):
    end = time.time() + secs
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


class Proc:
    def __init__(self, name, args, port):
        self.name, self.args, self.port = name, args, port
        self.start()

    def start(self):
        logf = open(os.path.join(WORK, f"{self.name}.log"), "ab")
        self.p = subprocess.Popen([BIN, *self.args], stdout=logf, stderr=subprocess.STDOUT)
        if not wait_port(self.port):
            raise RuntimeError(f"{self.name} did not start; see {WORK}/{self.name}.log")

    def kill9(self):
        self.p.send_signal(signal.SIGKILL)
        self.p.wait()

    def term(self, secs=15):
        self.p.send_signal(signal.SIGTERM)
        try:
            return self.p.wait(timeout=secs)
        except subprocess.TimeoutExpired:
            self.p.kill()
            return None

    def alive(self):
        return self.p.poll() is None


def nameserver(name):
    port = free_port()
    procs[name] = Proc(name, ["nameserver", "--addr", f"127.0.0.1:{port}", "--http-addr",
                              f"127.0.0.1:{free_port()}", "--broker-expiry", "3s"], port)
    return f"127.0.0.1:{port}"


def broker(group, nameservers):
    port = free_port()
    procs[group] = Proc(group, ["broker", "--group", group, "--nameservers", ",".join(nameservers),
                                "--addr", f"127.0.0.1:{port}", "--http-addr", f"127.0.0.1:{free_port()}",
                                "--data-dir", os.path.join(WORK, group), "--transaction-check-interval", "2s"], port)


def proxy(name, nameservers, port=None):
    port = port or free_port()
    procs[name] = Proc(name, ["proxy", "--nameservers", ",".join(nameservers), "--grpc-addr", f"127.0.0.1:{port}",
                              "--http-addr", f"127.0.0.1:{free_port()}", "--route-refresh", "500ms",
                              "--remoting-addr", "off"], port)
    return port


def admin(port, *args):
    r = subprocess.run([BIN, "admin", "--server", f"127.0.0.1:{port}", "-o", "json", *args],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"admin {' '.join(args)}: {r.stderr.strip()}")
    return json.loads(r.stdout)


def wait_until(pred, secs, every=0.25):
    end = time.time() + secs
    while time.time() < end:
        try:
            if pred():
                return True
        except Exception:  # a process may be restarting; keep asking
            pass
        time.sleep(every)
    return False


def messages_per_group(port):
    d = admin(port, "topic", "describe", TOPIC)
    out = {}
    for q in d["queue_offsets"]:
        out[q["broker_group"]] = out.get(q["broker_group"], 0) + q["messages"]
    return out


# --------------------------------------------------------------------------------- clients

def config(*ports):
    return ClientConfiguration(";".join(f"127.0.0.1:{p}" for p in ports), Credentials(), request_timeout=5)


acked = {}  # message id -> body digest, for every send the server acknowledged
acked_lock = threading.Lock()
received = {}  # message id -> body digest
send_failures = [0]


def body(i, tag):
    return f"{tag}:{RUN}:{i}:".encode() + bytes((i * 31 + j) % 256 for j in range(200 + i % 800))


def send_many(producer, n, tag):
    ok = 0
    for i in range(n):
        m = Message()
        m.topic = TOPIC
        m.body = body(i, tag)
        try:
            r = producer.send(m)
            with acked_lock:
                acked[r.message_id] = hashlib.sha256(m.body).hexdigest()
            ok += 1
        except Exception:
            send_failures[0] += 1
    return ok


class Load:
    """Sends continuously from a thread until stopped."""

    def __init__(self, producer, tag):
        self.producer, self.tag, self.stop_flag, self.sent = producer, tag, False, 0
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        i = 0
        while not self.stop_flag:
            self.sent += send_many(self.producer, 1, f"{self.tag}{i}")
            i += 1

    def stop(self):
        self.stop_flag = True
        self.t.join(timeout=60)


class RustLoad:
    """The official Rust client's producer, configured with several proxy endpoints, sending one
    message at a time from a separate process until stopped."""

    def __init__(self, tag, ports):
        self.tag = tag
        self.stop_file = os.path.join(WORK, f"stop-{tag}")
        env = dict(os.environ, FERROMQ_MODE="load", FERROMQ_LOAD_TOPIC=TOPIC, FERROMQ_LOAD_TAG=tag,
                   FERROMQ_LOAD_RUN=RUN, FERROMQ_LOAD_STOP=self.stop_file,
                   FERROMQ_ENDPOINT=",".join(f"127.0.0.1:{p}" for p in ports))
        self.p = subprocess.Popen([RUST_CLIENT], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  text=True)
        self.sent, self.errors, self.last_error = 0, 0, ""
        self.t = threading.Thread(target=self.read, daemon=True)
        self.t.start()

    def read(self):
        for line in self.p.stdout:
            parts = line.split(" ", 2)
            if parts[0] == "ACK" and len(parts) == 3:
                i = int(parts[2])
                with acked_lock:
                    acked[parts[1]] = hashlib.sha256(body(i, self.tag)).hexdigest()
                self.sent += 1
            elif parts[0] == "ERR":
                self.errors += 1
                send_failures[0] += 1
                self.last_error = line.strip()[:200]
            elif parts[0] == "FATAL":
                self.last_error = line.strip()[:200]

    def stop(self):
        open(self.stop_file, "w").close()
        try:
            self.p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.p.kill()
        self.t.join(timeout=10)


def receive_batch(consumer):
    """One receive of up to 32 messages; a failed one is logged and answers nothing."""
    try:
        return consumer.receive(32, 15) or []
    except Exception as e:
        log(f"receive failed (retrying): {e}")
        time.sleep(0.5)
        return []


def receive_each(consumer, want, secs):
    """Receives and acks until every message id in `want` arrived, then 3 s more (a duplicate would
    show up then), or until `secs` pass. Returns ({id: deliveries}, {id: time of the first})."""
    got, first_seen = {}, {}
    end = time.time() + secs
    quiet_until = None
    while time.time() < end and (quiet_until is None or time.time() < quiet_until):
        msgs = receive_batch(consumer)
        for m in msgs:
            first_seen.setdefault(m.message_id, time.time())
            got[m.message_id] = got.get(m.message_id, 0) + 1
            consumer.ack(m)
        if quiet_until is None and want <= set(got):
            quiet_until = time.time() + 3
    return got, first_seen


class CommitChecker(TransactionChecker):
    """Commits every transaction it is asked about, and remembers which."""

    def __init__(self):
        self.asked = []

    def check(self, message):
        self.asked.append(message.message_id)
        return TransactionResolution.COMMIT


def parked_through_proxy(p1, p2):
    """Delay and transactional messages sent through p1 (their recall handles and transaction ids name the
    broker group that parked them) are consumed through p2; a check-back reaches the producer through p1."""
    delay_t, tx_t = f"later_{RUN}", f"pay_{RUN}"
    admin(p1, "topic", "create", delay_t, "--type", "delay", "--queues", "2")
    admin(p1, "topic", "create", tx_t, "--type", "transaction", "--queues", "2")
    wait_until(lambda: all(g["topics"] >= 3 for g in admin(p2, "cluster", "list")), 10)
    checker = CommitChecker()
    prod = Producer(config(p1), (delay_t, tx_t), checker=checker)
    prod.startup()
    consumer = SimpleConsumer(config(p2), f"parked_{RUN}",
                              {delay_t: FilterExpression("*"), tx_t: FilterExpression("*")}, await_duration=5)
    consumer.startup()
    try:
        at = int(time.time()) + 3  # the Python client sends whole seconds
        delayed, recalled = [], None
        for i in range(6):
            m = Message()
            m.topic, m.body, m.delivery_timestamp = delay_t, f"delay {i}".encode(), at
            r = prod.send(m)
            if i == 0:
                recalled = r.message_id
                prod.recall_message(delay_t, r.recall_handle)
            else:
                delayed.append(r.message_id)
        tx = prod.begin_transaction()
        m = Message()
        m.topic, m.body = tx_t, b"committed by the producer"
        committed = prod.send(m, tx).message_id
        tx.commit()
        tx2 = prod.begin_transaction()
        m = Message()
        m.topic, m.body = tx_t, b"left for the check-back"
        orphan = prod.send(m, tx2).message_id
        want = set(delayed) | {committed, orphan}
        got, first_seen = receive_each(consumer, want, 45)
        early = sum(1 for i in delayed if i in first_seen and first_seen[i] < at - 0.005)
        twice = [i for i, n in got.items() if n > 1]
        check("parked_through_proxy",
              want <= set(got) and recalled not in got and not twice and early == 0 and orphan in checker.asked,
              f"{len(set(delayed) & set(got))}/5 delay messages, {early} early, recalled one delivered: {recalled in got}; "
              f"committed: {committed in got}; checked back ({len(checker.asked)} checks) and committed: {orphan in got}; "
              f"delivered twice: {len(twice)}")
    finally:
        prod.shutdown()
        consumer.shutdown()


def delay_outage(p1, p2):
    """Delay messages sent through p1 fall due while both broker groups are killed (kill -9); after the
    groups restart on the same data, every one arrives exactly once through p2, none before its time."""
    topic = f"outage_{RUN}"
    admin(p1, "topic", "create", topic, "--type", "delay", "--queues", "2")
    wait_until(lambda: all(g["topics"] >= 4 for g in admin(p2, "cluster", "list")), 10)
    prod = Producer(config(p1), (topic,))
    prod.startup()
    consumer = SimpleConsumer(config(p2), f"outage_{RUN}", {topic: FilterExpression("*")}, await_duration=5)
    consumer.startup()
    try:
        at = int(time.time()) + 2  # whole seconds: the Python client's unit
        sent = set()
        for i in range(30):
            m = Message()
            m.topic, m.body, m.delivery_timestamp = topic, f"outage {i}".encode(), at
            sent.add(prod.send(m).message_id)
        for g in ("g1", "g2"):
            procs[g].kill9()
        log("killed g1 and g2 (kill -9) with 30 delay messages pending")
        time.sleep(max(0.0, at - time.time()) + 2)  # they fall due while nothing runs
        down_until = time.time()
        for g in ("g1", "g2"):
            procs[g].start()
        back = wait_until(lambda: len(admin(p2, "cluster", "list")) == 2, 20)
        got, first_seen = receive_each(consumer, sent, 40)
        early = sum(1 for t in first_seen.values() if t < at - 0.005)
        last_new = max(first_seen.values(), default=down_until)
        twice = [i for i, n in got.items() if n > 1]
        check("delay_outage", back and sent <= set(got) and not twice and early == 0,
              f"groups back: {back}; {len(sent & set(got))}/30 delivered after the outage, the last "
              f"{last_new - down_until:.1f} s after the restart began; {early} early, {len(twice)} twice")
    finally:
        prod.shutdown()
        consumer.shutdown()


def consume_all(consumer, secs):
    """Receives and acks until every acknowledged send has been received or `secs` pass."""
    end = time.time() + secs
    while time.time() < end:
        with acked_lock:
            missing = set(acked) - set(received)
        if not missing:
            return True
        msgs = receive_batch(consumer)
        for m in msgs:
            received[m.message_id] = hashlib.sha256(m.body).hexdigest()
            try:
                consumer.ack(m)
            except Exception as e:
                log(f"ack failed (message will come back): {e}")
    with acked_lock:
        return not (set(acked) - set(received))


def main():
    log(f"work directory {WORK}")
    ns = [nameserver("ns1"), nameserver("ns2")]
    broker("g1", ns)
    broker("g2", ns)
    p1 = proxy("p1", ns)
    p2 = proxy("p2", ns)
    if not wait_until(lambda: len(admin(p1, "cluster", "list")) == 2 and len(admin(p2, "cluster", "list")) == 2, 20):
        check("cluster_up", False, "the proxies did not see both broker groups")
        return
    admin(p1, "topic", "create", TOPIC, "--queues", "4")
    wait_until(lambda: all(g["topics"] >= 1 for g in admin(p2, "cluster", "list")), 10)

    # either_proxy ------------------------------------------------------------------------
    prod1 = Producer(config(p1), (TOPIC,))
    prod1.startup()
    prod2 = Producer(config(p2), (TOPIC,))
    prod2.startup()
    n1 = send_many(prod1, 100, "via-p1")
    n2 = send_many(prod2, 100, "via-p2")
    consumer = SimpleConsumer(config(p2), GROUP, {TOPIC: FilterExpression("*")}, await_duration=5)
    consumer.startup()
    time.sleep(1.5)
    got_all = consume_all(consumer, 60)
    per_group = messages_per_group(p2)
    check("either_proxy", n1 == 100 and n2 == 100 and got_all and all(per_group.get(g, 0) > 0 for g in ("g1", "g2")),
          f"sent {n1}+{n2}, received {len(received)}/{len(acked)}, per group {per_group}")
    prod1.shutdown()
    prod2.shutdown()

    # parked_through_proxy, delay_outage ---------------------------------------------------
    parked_through_proxy(p1, p2)
    delay_outage(p1, p2)

    # proxy_kill9 -------------------------------------------------------------------------
    both = Producer(config(p2), (TOPIC,))  # Python traffic for the later scenarios
    both.startup()
    load = RustLoad("kill9", (p1, p2))
    wait_until(lambda: load.sent >= 200 or load.p.poll() is not None, 30)
    before = load.sent
    procs["p1"].kill9()
    log(f"killed p1 (kill -9) after {before} acknowledged sends from the Rust client")
    time.sleep(4)
    after_kill = load.sent - before
    load.stop()
    got_all = consume_all(consumer, 90)
    check("proxy_kill9", before > 0 and after_kill > 0 and got_all,
          f"Rust producer on both proxies: {before} acked before the kill, {after_kill} after it, {load.errors} "
          f"sends failed (never acked) {load.last_error}; received {len(received)}/{len(acked)} acked")
    p1 = proxy("p1", ns, port=p1)  # a replacement on the same address: nothing to restore
    check("proxy_restart", wait_until(lambda: len(admin(p1, "cluster", "list")) == 2, 10),
          "a new proxy serves at once with routes from the name servers")

    # nameserver_kill9 --------------------------------------------------------------------
    procs["ns1"].kill9()
    log("killed ns1 (kill -9)")
    time.sleep(4)  # past the broker expiry: a proxy relying on ns1 alone would have lost the groups
    groups_seen = [len(admin(p, "cluster", "list")) for p in (p1, p2)]
    other = f"other_{RUN}"
    admin(p2, "topic", "create", other, "--queues", "2")
    pr = Producer(config(p1), (other,))
    pr.startup()
    m = Message()
    m.topic = other
    m.body = b"after ns1 died"
    try:
        sent_other = bool(pr.send(m).message_id)
    except Exception as e:
        log(f"send to the new topic failed: {e}")
        sent_other = False
    pr.shutdown()
    n = send_many(both, 50, "ns-down-")
    got_all = consume_all(consumer, 60)
    check("nameserver_kill9", groups_seen == [2, 2] and sent_other and n == 50 and got_all,
          f"proxies see {groups_seen} groups; new topic usable through the other proxy: {sent_other}; "
          f"{n}/50 sends; received {len(received)}/{len(acked)}")

    # add_group ---------------------------------------------------------------------------
    load = RustLoad("grow", (p1, p2))
    time.sleep(1)
    broker("g3", ns)
    joined = wait_until(lambda: len(admin(p2, "cluster", "list")) == 3, 15)
    admin(p2, "topic", "update", TOPIC, "--queues", "4")
    reached = wait_until(lambda: messages_per_group(p2).get("g3", 0) > 0, 20)
    time.sleep(1)
    load.stop()
    got_all = consume_all(consumer, 90)
    check("add_group", joined and reached and got_all and load.sent > 0,
          f"g3 joined: {joined}; {load.sent} sends under load; messages on g3: {messages_per_group(p2).get('g3', 0)}; "
          f"received {len(received)}/{len(acked)}")

    # drain_group -------------------------------------------------------------------------
    d = admin(p2, "cluster", "drain", "g1")
    on_g1 = messages_per_group(p2).get("g1", 0)
    load = Load(both, "drain-")
    time.sleep(3)
    load.stop()
    on_g1_after = messages_per_group(p2).get("g1", 0)
    got_all = consume_all(consumer, 90)
    emptied = wait_until(lambda: admin(p2, "cluster", "drain", "g1")["remaining_queues"] == 0, 30, every=1)
    code = procs["g1"].term()
    gone = wait_until(lambda: [g["name"] for g in admin(p2, "cluster", "list")] == ["g2", "g3"], 10)
    check("drain_group", d["state"] == "read-only" and on_g1_after == on_g1 and load.sent > 0 and got_all
          and emptied and code == 0 and gone,
          f"g1 held {on_g1} before the drain and {on_g1_after} after {load.sent} more sends; emptied: {emptied}; "
          f"exit {code}; left the routes: {gone}")

    # nothing_lost ------------------------------------------------------------------------
    with acked_lock:
        missing = set(acked) - set(received)
        altered = [i for i in acked if i in received and received[i] != acked[i]]
    check("nothing_lost", not missing and not altered,
          f"{len(acked)} acked, {len(missing)} missing, {len(altered)} altered, {send_failures[0]} sends failed "
          f"(never acked)")
    both.shutdown()
    consumer.shutdown()


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # a crash of the driver is a failure, never a pass
        check("suite", False, f"{type(e).__name__}: {e}")
    finally:
        for p in procs.values():
            if p.alive():
                p.p.kill()
        print(f"cluster: {len(failures)} failed: {' '.join(failures)}" if failures else "cluster: all passed",
              flush=True)
    sys.exit(min(len(failures), 100))
