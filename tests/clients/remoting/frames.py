#!/usr/bin/env python3
"""Reads a packet capture of remoting traffic and prints every command, one line each, per TCP
connection in time order; optionally saves the first frame of each kind as a test fixture.

    tshark -i lo -f "tcp port 29876 or tcp port 29911" -w cap.pcapng   # while the harness runs
    frames.py cap.pcapng [--ports 29876,29911] [--fixtures DIR] > flow.txt

Used to write broker/remoting/README.md (what each client really sends) and to capture the
fixtures under broker/remoting/tests/fixtures/. Needs tshark on PATH.
"""
import argparse
import collections
import json
import os
import struct
import subprocess
import sys

REQUEST = {
    10: "SEND_MESSAGE", 11: "PULL_MESSAGE", 12: "QUERY_MESSAGE", 14: "QUERY_CONSUMER_OFFSET",
    15: "UPDATE_CONSUMER_OFFSET", 17: "UPDATE_AND_CREATE_TOPIC", 21: "GET_ALL_TOPIC_CONFIG",
    26: "GET_BROKER_CONFIG", 28: "GET_BROKER_RUNTIME_INFO", 29: "SEARCH_OFFSET_BY_TIMESTAMP",
    30: "GET_MAX_OFFSET", 31: "GET_MIN_OFFSET", 32: "GET_EARLIEST_MSG_STORETIME", 33: "VIEW_MESSAGE_BY_ID",
    34: "HEART_BEAT", 35: "UNREGISTER_CLIENT", 36: "CONSUMER_SEND_MSG_BACK", 37: "END_TRANSACTION",
    38: "GET_CONSUMER_LIST_BY_GROUP", 39: "CHECK_TRANSACTION_STATE", 40: "NOTIFY_CONSUMER_IDS_CHANGED",
    41: "LOCK_BATCH_MQ", 42: "UNLOCK_BATCH_MQ", 43: "GET_ALL_CONSUMER_OFFSET", 45: "GET_ALL_DELAY_OFFSET",
    46: "CHECK_CLIENT_CONFIG", 100: "PUT_KV_CONFIG", 101: "GET_KV_CONFIG", 102: "DELETE_KV_CONFIG",
    103: "REGISTER_BROKER", 104: "UNREGISTER_BROKER", 105: "GET_ROUTEINFO_BY_TOPIC",
    106: "GET_BROKER_CLUSTER_INFO", 200: "UPDATE_AND_CREATE_SUBSCRIPTIONGROUP",
    201: "GET_ALL_SUBSCRIPTIONGROUP_CONFIG", 202: "GET_TOPIC_STATS_INFO", 203: "GET_CONSUMER_CONNECTION_LIST",
    204: "GET_PRODUCER_CONNECTION_LIST", 206: "GET_ALL_TOPIC_LIST_FROM_NAMESERVER", 207: "DELETE_SUBSCRIPTIONGROUP",
    208: "GET_CONSUME_STATS", 215: "DELETE_TOPIC_IN_BROKER", 216: "DELETE_TOPIC_IN_NAMESRV",
    220: "RESET_CONSUMER_CLIENT_OFFSET", 221: "GET_CONSUMER_STATUS_FROM_CLIENT", 222: "INVOKE_BROKER_TO_RESET_OFFSET",
    223: "INVOKE_BROKER_TO_GET_CONSUMER_STATUS", 224: "GET_TOPICS_BY_CLUSTER", 300: "QUERY_TOPIC_CONSUME_BY_WHO",
    304: "GET_SYSTEM_TOPIC_LIST_FROM_NS", 307: "GET_CONSUMER_RUNNING_INFO", 310: "SEND_MESSAGE_V2",
    317: "GET_BROKER_CONSUME_STATS", 320: "SEND_BATCH_MESSAGE", 322: "QUERY_DATA_VERSION",
    351: "GET_TOPIC_CONFIG", 352: "GET_SUBSCRIPTIONGROUP_CONFIG", 904: "BROKER_HEARTBEAT",
}


def payloads(pcap, ports):
    """Yields (time, stream, src_port, dst_port, bytes) for each TCP segment with data."""
    out = subprocess.run(
        ["tshark", "-r", pcap, "-Y", "tcp.len > 0", "-T", "fields", "-e", "frame.time_epoch", "-e", "tcp.stream",
         "-e", "tcp.srcport", "-e", "tcp.dstport", "-e", "tcp.payload"],
        check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) != 5 or not parts[4]:
            continue
        src, dst = int(parts[2]), int(parts[3])
        if ports and src not in ports and dst not in ports:
            continue
        yield float(parts[0]), int(parts[1]), src, dst, bytes.fromhex(parts[4].replace(":", ""))


def decode(frame):
    """Decodes one frame (without its length prefix) into a dict."""
    word = struct.unpack(">I", frame[:4])[0]
    stype, hlen = word >> 24, word & 0xFFFFFF
    header, body = frame[4:4 + hlen], frame[4 + hlen:]
    if stype == 0:
        h = json.loads(header.decode("utf-8", "replace"))
    else:
        code, lang, version, opaque, flag = struct.unpack(">hBhii", header[:13])
        pos = 13
        (rlen,) = struct.unpack(">i", header[pos:pos + 4])
        pos += 4
        remark = header[pos:pos + rlen].decode() if rlen else None
        pos += rlen
        (mlen,) = struct.unpack(">i", header[pos:pos + 4])
        pos += 4
        end = pos + mlen
        ext = {}
        while pos < end:
            (kl,) = struct.unpack(">h", header[pos:pos + 2])
            k = header[pos + 2:pos + 2 + kl].decode()
            pos += 2 + kl
            (vl,) = struct.unpack(">i", header[pos:pos + 4])
            ext[k] = header[pos + 4:pos + 4 + vl].decode("utf-8", "replace")
            pos += 4 + vl
        h = {"code": code, "language": lang, "version": version, "opaque": opaque, "flag": flag, "remark": remark,
             "extFields": ext}
    h["_stype"] = "JSON" if stype == 0 else "ROCKETMQ"
    return h, body


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("pcap")
    ap.add_argument("--ports", default="29876,29911,28080", help="server ports (requests go to these)")
    ap.add_argument("--fixtures", help="save the first frame of each (code, direction, serialization, language)")
    ap.add_argument("--body-chars", type=int, default=300)
    args = ap.parse_args()
    ports = {int(p) for p in args.ports.split(",")}
    bufs = collections.defaultdict(bytearray)
    events = []
    for t, stream, src, dst, data in payloads(args.pcap, ports):
        key = (stream, src, dst)
        buf = bufs[key]
        buf.extend(data)
        while len(buf) >= 4:
            (n,) = struct.unpack(">i", buf[:4])
            if n < 4 or len(buf) < 4 + n:
                break
            frame = bytes(buf[4:4 + n])
            del buf[:4 + n]
            events.append((t, stream, src, dst, frame))
    saved = set()
    requests = {}
    codes = {}
    for t, stream, src, dst, frame in events:
        try:
            h, body = decode(frame)
        except Exception as e:  # noqa: BLE001 - a tool: show and go on
            print(f"{t:.3f} s{stream} {src}->{dst} undecodable frame ({e}) {frame[:64].hex()}")
            continue
        is_resp = h.get("flag", 0) & 1
        oneway = h.get("flag", 0) & 2
        server_side = src in ports
        if is_resp:
            req = requests.get((stream, h.get("opaque")), "?")
            kind = f"RESP to {req} code={h['code']}"
        else:
            name = REQUEST.get(h["code"], str(h["code"]))
            requests[(stream, h.get("opaque"))] = name
            codes[(stream, h.get("opaque"))] = (h["code"], str(h.get("language")))
            kind = ("PUSH " if server_side else "REQ ") + name + ("(oneway)" if oneway else "")
        text = body.decode("utf-8", "replace") if body else ""
        printable = body and sum(32 <= b < 127 for b in body[:200]) > 0.9 * min(len(body), 200)
        shown = text[:args.body_chars] if printable else (body[:48].hex() + ("..." if len(body) > 48 else ""))
        ext = h.get("extFields") or {}
        remark = f" remark={h['remark']!r}" if h.get("remark") else ""
        print(f"{t:.3f} s{stream} {src}->{dst} {kind} [{h['_stype']} lang={h.get('language')} v={h.get('version')} "
              f"opaque={h.get('opaque')}]{remark} ext={json.dumps(ext, ensure_ascii=False)} body[{len(body)}]={shown}")
        if args.fixtures:
            # responses are named after their request (code and the requesting client's language)
            req_code, lang = codes.get((stream, h.get("opaque")), ("x", "x")) if is_resp else (h["code"], str(h.get("language")))
            kind = f"resp{req_code}-code{h['code']}" if is_resp else f"req{req_code}"
            tag = (kind, h["_stype"], lang, server_side)
            if tag not in saved:
                saved.add(tag)
                os.makedirs(args.fixtures, exist_ok=True)
                name = f"{kind}-{h['_stype'].lower()}-{lang.lower()}-{'from-server' if server_side else 'from-client'}.bin"
                with open(os.path.join(args.fixtures, name), "wb") as f:
                    f.write(struct.pack(">i", len(frame)) + frame)


if __name__ == "__main__":
    sys.exit(main())
