"""Authentication and authorization scenarios with the official Python client (rocketmq-python-client).

Run by tests/suites/35-auth.sh against `ferromq standalone --auth`. Env: FERROMQ_ENDPOINT, FERROMQ_AUTH_AK /
FERROMQ_AUTH_SK (a normal user), FERROMQ_AUTH_TOPIC_{OK,DENIED,OTHER}, FERROMQ_AUTH_GROUP_{OK,OTHER},
FERROMQ_RESULTS_FILE. Prints `SCENARIO python <name> PASS|FAIL <detail>` per scenario.

Python 5.1.2 turns a refused route lookup into a plain Exception("failed to fetch topic ... route") and logs
the server's error (with its code) on the `rocketmq-python-client` logger: the code is read from that log.
"""
import datetime
import hashlib
import hmac
import logging
import os
import time

import grpc

from rocketmq import ClientConfiguration, Credentials, FilterExpression, Message, Producer, SimpleConsumer
from rocketmq.grpc_protocol import MessagingServiceStub, QueryRouteRequest, Resource
from rocketmq.v5.exception import ClientException

ENDPOINT = os.environ["FERROMQ_ENDPOINT"]
AK, SK = os.environ["FERROMQ_AUTH_AK"], os.environ["FERROMQ_AUTH_SK"]
T = {k: os.environ[f"FERROMQ_AUTH_TOPIC_{k.upper()}"] for k in ("ok", "denied", "other")}
G = {k: os.environ[f"FERROMQ_AUTH_GROUP_{k.upper()}"] for k in ("ok", "other")}
UNAUTHORIZED, FORBIDDEN = 40100, 40300
SENT_OK = 3


class Captured(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


LOG = Captured()
logging.getLogger("rocketmq-python-client").addHandler(LOG)


def report(name, ok, detail=""):
    line = f"python {name} {'PASS' if ok else 'FAIL'} {' '.join(str(detail).split())[:300]}".rstrip()
    print(f"SCENARIO {line}", flush=True)
    path = os.environ.get("FERROMQ_RESULTS_FILE")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def config(ak=AK, sk=SK):
    creds = Credentials(ak, sk) if ak else Credentials()
    return ClientConfiguration(ENDPOINT, creds, request_timeout=10)


def message(topic, body):
    m = Message()
    m.topic = topic
    m.body = body
    m.tag = "auth"
    return m


def refused_code(fn):
    """Runs a call that must be refused; answers the RocketMQ code it was refused with (None: not refused)."""
    LOG.lines.clear()
    try:
        fn()
    except ClientException as e:
        return int(e.code)
    except Exception as e:  # route lookup failures: the code is in the client's log
        for line in LOG.lines:
            for code in (UNAUTHORIZED, FORBIDDEN):
                if str(code) in line:
                    return code
        return f"uncoded {type(e).__name__}: {e}"
    return None


def send_with(cfg, topic):
    p = Producer(cfg, (topic,))
    p.startup()
    try:
        return p.send(message(topic, b"should not be stored"))
    finally:
        p.shutdown()


def scenario(name, fn):
    try:
        ok, detail = fn()
    except Exception as e:  # noqa: BLE001 - a scenario's failure is its verdict
        ok, detail = False, f"{type(e).__name__}: {e}"
    report(name, ok, detail)


def right_credentials():
    p = Producer(config(), (T["ok"],))
    p.startup()
    try:
        ids = {p.send(message(T["ok"], f"auth {i}".encode())).message_id for i in range(SENT_OK)}
    finally:
        p.shutdown()
    c = SimpleConsumer(config(), G["ok"], {T["ok"]: FilterExpression("*")}, await_duration=5)
    c.startup()
    time.sleep(1.5)
    got = set()
    try:
        end = time.time() + 20
        while got != ids and time.time() < end:
            for m in c.receive(16, 30) or []:
                c.ack(m)
                got.add(m.message_id)
    finally:
        c.shutdown()
    return got == ids, f"sent {len(ids)}, received and acked {len(got & ids)}"


def expect(code, fn):
    got = refused_code(fn)
    return got == code, f"refused with {got} (want {code})"


def consume_forbidden_group():
    def receive():
        c = SimpleConsumer(config(), G["other"], {T["ok"]: FilterExpression("*")}, await_duration=5)
        c.startup()
        try:
            time.sleep(1.5)
            c.receive(16, 30)
        finally:
            c.shutdown()
    return expect(FORBIDDEN, receive)


def raw_query_route(headers):
    """QueryRoute through the package's own gRPC stubs with hand-made headers: the status code answered."""
    with grpc.insecure_channel(ENDPOINT) as ch:
        resp = MessagingServiceStub(ch).QueryRoute(
            QueryRouteRequest(topic=Resource(name=T["ok"])),
            metadata=[("x-mq-client-id", "auth-raw")] + headers, timeout=10)
    return resp.status.code


def signed(at, secret=SK):
    """The headers the client signs, for a chosen instant (a replay of a captured header, when old)."""
    dt = at.astimezone(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    sig = hmac.new(secret.encode(), dt.encode(), hashlib.sha1).hexdigest()
    return [("authorization", f"MQv2-HMAC-SHA1 Credential={AK}, SignedHeaders=x-mq-date-time, Signature={sig}"),
            ("x-mq-date-time", dt)]


def raw(headers, want):
    got = raw_query_route(headers)
    return got == want, f"QueryRoute answered {got} (want {want})"


NOW = lambda: datetime.datetime.now(datetime.timezone.utc)  # noqa: E731

scenario("auth_right_credentials", right_credentials)
scenario("auth_signed_by_hand", lambda: raw(signed(NOW()), 20000))
scenario("auth_replayed_header", lambda: raw(signed(NOW() - datetime.timedelta(minutes=10)), UNAUTHORIZED))
scenario("auth_future_header", lambda: raw(signed(NOW() + datetime.timedelta(minutes=10)), UNAUTHORIZED))
scenario("auth_malformed_header", lambda: raw([("authorization", "MQv2-HMAC-SHA1 Credential"),
                                               ("x-mq-date-time", signed(NOW())[1][1])], UNAUTHORIZED))
scenario("auth_huge_header", lambda: raw([("authorization", "MQv2-HMAC-SHA1 Credential=" + "a" * 8000),
                                          ("x-mq-date-time", signed(NOW())[1][1])], UNAUTHORIZED))
scenario("auth_wrong_secret", lambda: expect(UNAUTHORIZED, lambda: send_with(config(AK, SK + "x"), T["ok"])))
scenario("auth_unknown_user", lambda: expect(UNAUTHORIZED, lambda: send_with(config("nobody", SK), T["ok"])))
scenario("auth_no_credentials", lambda: expect(UNAUTHORIZED, lambda: send_with(config(None, None), T["ok"])))
scenario("auth_forbidden_topic", lambda: expect(FORBIDDEN, lambda: send_with(config(), T["other"])))
scenario("auth_deny_beats_allow", lambda: expect(FORBIDDEN, lambda: send_with(config(), T["denied"])))
scenario("auth_forbidden_group", consume_forbidden_group)
