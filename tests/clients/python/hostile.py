"""Issue 14 checks driven by the official RocketMQ 5 Python client (`rocketmq-python-client`), which
never sets `queue_id` on a send. Run by tests/suites/45-hostile.sh against a real `ferromq standalone`.

  hostile.py spread ENDPOINT ADMIN_CMD NORMAL_TOPIC(4 queues) FIFO_TOPIC(16 queues)
      sends without a queue spread over every queue; 200 FIFO message groups over many queues.
  hostile.py fill ENDPOINT HTTP_PORT TOPIC ACKED_FILE
      fills the volume until sends are refused; checks readiness and the disk-full metric.
  hostile.py drain-and-recover ENDPOINT HTTP_PORT TOPIC ACKED_FILE BALLAST
      consumes every acknowledged message, frees the ballast, checks that sends are accepted again.

Faults are reported in the Jepsen vocabulary: acknowledged, lost (acknowledged, never consumed),
duplicated (consumed more than once by one group), unexpected (consumed, never acknowledged).
Prints one `RESULT name PASS|FAIL detail` line per check; exits 1 if any failed.
"""
import json
import os
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

from rocketmq import ClientConfiguration, Credentials, FilterExpression, Message, Producer, SimpleConsumer

RUN = uuid.uuid4().hex[:8]
failed = []


def result(name, ok, detail):
    print(f"RESULT {name} {'PASS' if ok else 'FAIL'} {detail}", flush=True)
    if not ok:
        failed.append(name)


def config(endpoint):
    return ClientConfiguration(endpoint, Credentials(), request_timeout=10)


def message(topic, body, group=None):
    m = Message()
    m.topic = topic
    m.body = body
    if group:
        m.message_group = group
    return m


def per_queue(admin, topic):
    out = subprocess.run(shlex.split(admin) + ["topic", "describe", topic, "-o", "json"],
                         check=True, capture_output=True, text=True).stdout
    return [q["messages"] for q in json.loads(out)["queue_offsets"]]


def consume_all(endpoint, group, topic, quiet_secs=6, deadline_secs=180):
    """Receives and acks until nothing arrives for `quiet_secs`; returns message ids in order."""
    c = SimpleConsumer(config(endpoint), group, {topic: FilterExpression("*")}, await_duration=2)
    c.startup()
    time.sleep(1.5)  # the client's startup does not wait for its settings round trip
    ids = []
    last = time.time()
    end = time.time() + deadline_secs
    try:
        while time.time() - last < quiet_secs and time.time() < end:
            for m in c.receive(32, 30) or []:
                ids.append(m.body.split(b"|", 1)[0].decode())
                c.ack(m)
                last = time.time()
    finally:
        c.shutdown()
    return ids


def jepsen(acked, consumed):
    seen = set()
    dup = 0
    for i in consumed:
        if i in seen:
            dup += 1
        seen.add(i)
    lost = len(set(acked) - seen)
    unexpected = len(seen - set(acked))
    return lost, dup, unexpected, f"acknowledged={len(acked)} lost={lost} duplicated={dup} unexpected={unexpected}"


def spread(endpoint, admin, normal, fifo):
    p = Producer(config(endpoint), (normal, fifo))
    p.startup()
    try:
        for i in range(40):
            p.send(message(normal, f"n{i}|".encode()))
        counts = per_queue(admin, normal)
        result("python_sends_spread_over_queues", counts == [10, 10, 10, 10],
               f"40 sends without queue_id on a 4-queue topic: per queue {counts}")
        groups = 200
        for s in range(2):
            for g in range(groups):
                p.send(message(fifo, f"f{g}-{s}|".encode(), group=f"group-{g}"))
        counts = per_queue(admin, fifo)
        used = sum(1 for n in counts if n > 0)
        result("python_fifo_groups_over_queues", used == 16 and sum(counts) == 2 * groups,
               f"{groups} message groups on a 16-queue FIFO topic use {used} queues: {counts}")
    finally:
        p.shutdown()
    got = consume_all(endpoint, f"spread_{RUN}", normal)
    lost, dup, unexpected, counts = jepsen([f"n{i}" for i in range(40)], got)
    result("python_spread_consumed", lost == 0 and dup == 0 and unexpected == 0, counts)


def http(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metric(port, name):
    _, text = http(port, "/metrics")
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def send_until_refused(p, topic, prefix, acked, refused_in_a_row=5, limit=20000):
    """Sends 16 KiB messages until `refused_in_a_row` consecutive refusals; returns the last error."""
    body = bytes(16 * 1024 - 64)
    streak, last_error = 0, None
    for i in range(limit):
        mid = f"{prefix}{i}"
        try:
            p.send(message(topic, f"{mid}|".encode() + body))
            acked.append(mid)
            streak = 0
        except Exception as e:  # the client raises its own exception types with the status
            streak += 1
            last_error = e
            if streak >= refused_in_a_row:
                break
    return last_error


def fill(endpoint, http_port, topic, acked_file):
    """Sends until the disk-full refusal; writes the acknowledged ids to `acked_file`."""
    p = Producer(config(endpoint), (topic,))
    p.startup()
    acked = []
    try:
        t0 = time.time()
        err = send_until_refused(p, topic, "a", acked)
    finally:
        p.shutdown()
        with open(acked_file, "w") as f:
            f.write("\n".join(acked))
    full = metric(http_port, "ferromq_store_disk_full")
    ready, ready_body = http(http_port, "/readyz")
    result("small_disk_refuses_cleanly", err is not None and "disk full" in str(err).lower(),
           f"{len(acked)} acknowledged in {time.time() - t0:.0f} s, then refused: {str(err)[:200]!r}")
    result("small_disk_metric_and_readiness", full == 1.0 and ready == 200 and "disk full" in ready_body.lower(),
           f"ferromq_store_disk_full={full}, /readyz {ready} {ready_body.strip()[:120]!r}")


def drain_and_recover(endpoint, http_port, topic, acked_file, ballast):
    """Consumes every acknowledged message (the disk still full), frees the ballast, and checks
    that sends are accepted again and consumed."""
    with open(acked_file) as f:
        acked = [line for line in f.read().splitlines() if line]
    group = f"small_{RUN}"
    got = consume_all(endpoint, group, topic)
    lost, dup, unexpected, counts = jepsen(acked, got)
    result("small_disk_every_acknowledged_consumed", lost == 0 and dup == 0 and unexpected == 0, counts)

    os.remove(ballast)
    t1 = time.time()
    back = None
    while time.time() - t1 < 60:
        if metric(http_port, "ferromq_store_disk_full") == 0.0:
            back = time.time() - t1
            break
        time.sleep(0.5)
    p = Producer(config(endpoint), (topic,))
    p.startup()
    more = []
    try:
        for i in range(50):
            try:
                p.send(message(topic, f"b{i}|".encode() + bytes(1024)))
                more.append(f"b{i}")
            except Exception as e:
                print(f"send after freeing space failed: {e}", flush=True)
    finally:
        p.shutdown()
    ready, ready_body = http(http_port, "/readyz")
    result("small_disk_recovers_when_space_returns", back is not None and len(more) == 50 and ready_body.strip() == "ready",
           f"disk-full cleared {back if back is None else round(back, 1)} s after the ballast was removed; "
           f"{len(more)}/50 sends accepted afterwards; /readyz {ready} {ready_body.strip()!r}")
    got = consume_all(endpoint, group, topic)
    lost, dup, unexpected, counts = jepsen(more, got)
    result("small_disk_after_recovery_consumed", lost == 0 and dup == 0 and unexpected == 0, counts)


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "spread":
        spread(*args)
    elif mode == "fill":
        fill(args[0], int(args[1]), args[2], args[3])
    elif mode == "drain-and-recover":
        drain_and_recover(args[0], int(args[1]), args[2], args[3], args[4])
    else:
        sys.exit(f"unknown mode {mode}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
