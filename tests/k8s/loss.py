#!/usr/bin/env python3
"""Sends and receives through a FerroMQ proxy with the official RocketMQ 5 Python client while
something is done to the cluster, then says what happened to every message, in the Jepsen queue
vocabulary (see /work/shared/RELIABILITY.md):

  acknowledged  sends the server confirmed (a send receipt came back)
  failed        sends that raised; they may or may not be stored (Jepsen's "info": indeterminate)
  lost          acknowledged, never received
  duplicated    received more than once by the one consumer group (each copy was acked)
  unexpected    received with this run's prefix but never sent (an altered body shows as lost)
  recovered     failed sends that were received anyway (allowed: the outcome was unknown)

    loss.py --endpoint HOST:PORT --topic T --group G --stop FILE [--report FILE.json]
            [--rate 20] [--consume-after-stop] [--deadline 120] [--min-acked 20]

It produces from one thread (one message in flight, unique bodies "<run>:<seq>", --rate per
second) until FILE exists. Its consumer group (fresh; it starts from the first message) receives
and acks from a second thread the whole time, or, with --consume-after-stop, only once the
producer has stopped (so what is read back was stored before the fault, e.g. on a volume that
outlived its pod). After the stop it receives until every acknowledged message arrived and then
3 s more (a late duplicate would show), or until --deadline seconds passed. Exit status 0 when
nothing was lost or unexpected and at least --min-acked sends were acknowledged (a run that
sent too little proves nothing); duplicates are reported, not failed (at-least-once delivery).
The verdict also gives the longest wait between two acknowledged sends: across a leader
failover, how long producers were stalled (1/--rate when nothing happened).
"""
import argparse
import json
import os
import sys
import threading
import time
import uuid

from rocketmq import ClientConfiguration, Credentials, FilterExpression, Message, Producer, SimpleConsumer


def log(msg):
    print(f"[loss {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class History:
    """What the producer did and the consumer saw, shared by both threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.acked = {}  # seq -> message id
        self.failed = {}  # seq -> error text
        self.received = {}  # body -> deliveries
        self.errors = {"send": 0, "receive": 0}
        self.last_error = {}
        self.last_ack_at = None  # when the latest acknowledgement came back (monotonic)
        self.max_ack_gap = 0.0  # longest wait between two acknowledgements: a failover's pause


def produce(args, run, history, stop):
    producer = Producer(ClientConfiguration(args.endpoint, Credentials(), request_timeout=5), (args.topic,))
    producer.startup()
    seq = 0
    period = 1.0 / args.rate
    try:
        while not stop.is_set():
            started = time.time()
            m = Message()
            m.topic = args.topic
            m.body = f"{run}:{seq}".encode()
            try:
                receipt = producer.send(m)
                now = time.monotonic()
                with history.lock:
                    history.acked[seq] = receipt.message_id
                    if history.last_ack_at is not None:
                        history.max_ack_gap = max(history.max_ack_gap, now - history.last_ack_at)
                    history.last_ack_at = now
            except Exception as e:  # the outcome of this send is unknown
                with history.lock:
                    history.failed[seq] = str(e)[:200]
                    history.errors["send"] += 1
                    history.last_error["send"] = str(e)[:200]
            seq += 1
            time.sleep(max(0.0, period - (time.time() - started)))
    finally:
        producer.shutdown()


def consume(args, run, history, until):
    consumer = SimpleConsumer(ClientConfiguration(args.endpoint, Credentials(), request_timeout=10), args.group,
                              {args.topic: FilterExpression("*")}, await_duration=5)
    consumer.startup()
    # The Python client's startup() does not wait for the settings round trip (tests/clients/README.md).
    time.sleep(1.5)
    try:
        while not until():
            try:
                messages = consumer.receive(32, 20) or []
            except Exception as e:  # a proxy or broker may be restarting: ask again
                with history.lock:
                    history.errors["receive"] += 1
                    history.last_error["receive"] = str(e)[:200]
                time.sleep(0.5)
                continue
            for m in messages:
                body = bytes(m.body or b"").decode(errors="replace")
                with history.lock:
                    history.received[body] = history.received.get(body, 0) + 1
                try:
                    consumer.ack(m)
                except Exception as e:  # it comes back after its invisible time: counted again
                    with history.lock:
                        history.errors["receive"] += 1
                        history.last_error["receive"] = f"ack: {str(e)[:180]}"
    finally:
        consumer.shutdown()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--stop", required=True, help="the producer stops when this file exists")
    ap.add_argument("--report", help="write the counts here as JSON")
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--consume-after-stop", action="store_true")
    ap.add_argument("--deadline", type=float, default=120.0)
    ap.add_argument("--min-acked", type=int, default=20)
    args = ap.parse_args()
    run = uuid.uuid4().hex[:10]
    history = History()
    stop = threading.Event()
    finished = threading.Event()

    log(f"run {run}: producing to {args.topic} through {args.endpoint} until {args.stop} exists")
    producer = threading.Thread(target=produce, args=(args, run, history, stop), daemon=True)
    producer.start()

    def all_received():
        with history.lock:
            wanted = {f"{run}:{seq}" for seq in history.acked}
            return wanted <= set(history.received)

    consumer = None

    def start_consumer():
        t = threading.Thread(target=consume, args=(args, run, history, finished.is_set), daemon=True)
        t.start()
        return t

    if not args.consume_after_stop:
        consumer = start_consumer()
    while not os.path.exists(args.stop):
        time.sleep(0.2)
        if not producer.is_alive():
            break
    stop.set()
    producer.join(timeout=30)
    with history.lock:
        log(f"producer stopped: {len(history.acked)} acknowledged, {len(history.failed)} failed; receiving the rest")
    if consumer is None:
        consumer = start_consumer()
    deadline = time.time() + args.deadline
    while time.time() < deadline and not all_received():
        time.sleep(0.5)
    time.sleep(3)  # a duplicate delivered late shows up now
    finished.set()
    consumer.join(timeout=40)

    with history.lock:
        acked = {f"{run}:{s}" for s in history.acked}
        failed = {f"{run}:{s}" for s in history.failed}
        received = dict(history.received)
        errors = dict(history.errors)
        last_error = dict(history.last_error)
        max_ack_gap = history.max_ack_gap
    # Bodies of other runs on the same topic (earlier phases) are someone else's history.
    foreign = sum(1 for b in received if not b.startswith(f"{run}:"))
    received = {b: n for b, n in received.items() if b.startswith(f"{run}:")}
    lost = sorted(acked - set(received), key=lambda b: int(b.split(":")[1]))
    unexpected = sorted(b for b in received if b not in acked and b not in failed)
    duplicated = sorted(b for b, n in received.items() if n > 1)
    recovered = sorted(failed & set(received))
    report = {
        "topic": args.topic, "run": run,
        "acknowledged": len(acked), "failed": len(failed), "lost": len(lost), "duplicated": len(duplicated),
        "unexpected": len(unexpected), "recovered": len(recovered), "received": len(received),
        "other_runs": foreign,
        "send_errors": errors["send"], "receive_errors": errors["receive"],
        "max_ack_gap_s": round(max_ack_gap, 2),
        "lost_first": lost[:20], "unexpected_first": unexpected[:20], "duplicated_first": duplicated[:20],
        "last_error": last_error,
    }
    if args.report:
        with open(args.report, "w", encoding="utf-8") as f:
            json.dump(report, f)
    ok = not lost and not unexpected and len(acked) >= args.min_acked
    print(f"{'PASS' if ok else 'FAIL'} acknowledged {len(acked)}, lost {len(lost)}, duplicated {len(duplicated)}, "
          f"unexpected {len(unexpected)}; failed (indeterminate) {len(failed)}, of which received {len(recovered)}; "
          f"longest gap between acknowledged sends {max_ack_gap:.1f} s"
          + (f"; lost ids (first 20): {' '.join(lost[:20])}" if lost else "")
          + (f"; unexpected (first 20): {' '.join(unexpected[:20])}" if unexpected else "")
          + (f"; fewer than {args.min_acked} acknowledged" if len(acked) < args.min_acked else "")
          + (f"; last errors: {last_error}" if last_error else ""), flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
