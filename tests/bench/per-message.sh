#!/bin/bash
# Server CPU and context switches per message: ferromq standalone, then a fixed-rate produce run.
# usage: tests/bench/per-message.sh BIN FLUSH LABEL [RATE] [SECONDS] [CLIENTS]
# (BIN: a ferromq binary, e.g. target/release/ferromq; FLUSH: async or sync). Machine-shared runs
# move in msg/s; CPU and context switches per message move much less.
set -u
BIN=$1; FLUSH=${2:-async}; LABEL=${3:-run}; RATE=${4:-5000}; SECS=${5:-10}; CLIENTS=${6:-32}
D=$(mktemp -d /tmp/ferromq-per-message.XXXX)
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
P=$(port); H=$(port); R=$(port)
"$BIN" standalone --data-dir "$D/data" --grpc-addr 127.0.0.1:$P --http-addr 127.0.0.1:$H --flush "$FLUSH" \
  --segment-size 256MiB --remoting-addr 127.0.0.1:$R >"$D/server.log" 2>&1 &
PID=$!
for i in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$P) 2>/dev/null && break; sleep 0.1; done
"$BIN" admin --server 127.0.0.1:$P topic create bench --queues 16 >/dev/null
"$BIN" bench produce --server 127.0.0.1:$P --topic bench --size 1024 --rate $RATE --clients $CLIENTS --queues 16 --duration 3s --json >/dev/null
snap() {
  local t; t=$(awk '{print $14+$15}' /proc/$PID/stat)
  local v=0 n=0
  for s in /proc/$PID/task/*/status; do
    v=$((v + $(awk '/^voluntary_ctxt_switches/{print $2}' $s 2>/dev/null || echo 0)))
    n=$((n + $(awk '/^nonvoluntary_ctxt_switches/{print $2}' $s 2>/dev/null || echo 0)))
  done
  echo "$t $v $n $(ls /proc/$PID/task | wc -l)"
}
read T0 V0 N0 TH0 < <(snap)
OUT=$("$BIN" bench produce --server 127.0.0.1:$P --topic bench --size 1024 --rate $RATE --clients $CLIENTS --queues 16 --duration ${SECS}s --json | tail -1)
read T1 V1 N1 TH1 < <(snap)
kill $PID; wait $PID 2>/dev/null
python3 - "$LABEL" "$FLUSH" "$OUT" $T0 $V0 $N0 $T1 $V1 $N1 $TH0 $TH1 <<'PY'
import json, os, sys
label, flush, out = sys.argv[1:4]
t0, v0, n0, t1, v1, n1, th0, th1 = map(int, sys.argv[4:])
r = json.loads(out)
m = r["messages"]
tck = os.sysconf("SC_CLK_TCK")
cpu = (t1 - t0) / tck
print(f"{label} flush={flush}: {m} msgs ({r.get('msgs_per_sec',0):.0f}/s), server CPU {cpu:.2f} s = {cpu/m*1e6:.1f} us/msg, "
      f"ctxt switches vol {v1-v0} + nonvol {n1-n0} = {(v1-v0+n1-n0)/m:.2f}/msg, threads {th0}->{th1}, "
      f"p50 {r.get('latency_ms',{}).get('p50','?')} p99 {r.get('latency_ms',{}).get('p99','?')}")
PY
rm -rf "$D"
