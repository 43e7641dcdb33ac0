#!/usr/bin/env bash
# Suite 80: a short smoke run of the benchmark tools (never timed, never compared): `ferromq
# bench produce` against the null sink and against `ferromq standalone`, `ferromq bench
# consume` reading back, and the side-by-side script's own checks. The full comparison
# (tests/bench/compare) is run by hand; see BENCHMARKS.md.
set -euo pipefail
ROOT="${FERROMQ_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}"
cd "$ROOT"
state="$(mktemp -d)"
# shellcheck source=../k8s/checks.sh
source "$ROOT/tests/k8s/checks.sh"
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do stop_proc "$p" || true; done
  rm -rf "$state"
}
trap cleanup EXIT

cargo build -p ferromq --locked --quiet
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/ferromq"

# json_ok FILE: the last line of FILE is a bench report with messages sent and none failed.
json_ok() {
  python3 - "$1" <<'PY'
import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
print(r)
assert r["messages"] > 0, "nothing sent"
assert r["failed"] == 0, "failures"
for k in ("p50", "p99", "p999"):
    assert r["latency_ms"][k] > 0
assert [q for q, _ in r["quantiles_ms"]] == sorted(q for q, _ in r["quantiles_ms"])
PY
}

sink_port="$(free_port)"
"$BIN" bench sink --addr "127.0.0.1:$sink_port" >"$state/sink.log" 2>&1 &
pids+=($!)
check "null sink starts" wait_for 30 bash -c "exec 3<>/dev/tcp/127.0.0.1/$sink_port"
produce_sink() {
  "$BIN" bench produce --server "127.0.0.1:$sink_port" --topic smoke --clients 2 --rate 500 --duration 2s --json >"$state/p1.json"
  json_ok "$state/p1.json"
}
check "bench produce against the null sink" produce_sink
check "bench produce --batch against the null sink" bash -c \
  "'$BIN' bench produce --server 127.0.0.1:$sink_port --topic smoke --clients 2 --batch 8 --duration 1s --json | tail -1 | grep -q '\"failed\":0'"
check "bad bench flags are refused" refused "0 is not in 1..=1024" \
  "$BIN" bench produce --server "127.0.0.1:$sink_port" --topic smoke --batch 0 --duration 1s

grpc="$(free_port)"; http="$(free_port)"; remoting="$(free_port)"
"$BIN" standalone --data-dir "$state/data" --grpc-addr "127.0.0.1:$grpc" --http-addr "127.0.0.1:$http" --remoting-addr "127.0.0.1:$remoting" >"$state/standalone.log" 2>&1 &
pids+=($!)
check "standalone becomes ready" wait_for 60 curl -sf "http://127.0.0.1:$http/readyz"
"$BIN" admin --server "127.0.0.1:$grpc" topic create smoke --queues 4 >/dev/null
produce_standalone() {
  "$BIN" bench produce --server "127.0.0.1:$grpc" --topic smoke --clients 2 --queues 4 --rate 500 --duration 2s --json >"$state/p2.json"
  json_ok "$state/p2.json"
}
check "bench produce against standalone" produce_standalone
consume_back() {
  local sent got
  sent="$(python3 -c "import json; print(json.loads(open('$state/p2.json').read().strip().splitlines()[-1])['messages'])")"
  "$BIN" bench consume --server "127.0.0.1:$grpc" --topic smoke --group smoke --clients 2 --duration 4s --json >"$state/c.json"
  got="$(python3 -c "import json; print(json.loads(open('$state/c.json').read().strip().splitlines()[-1])['messages'])")"
  echo "sent $sent, received $got"
  [[ "$got" -eq "$sent" ]]
}
check "bench consume receives every message produced" consume_back
# bench pull (the classic remoting read) reads the same messages by offset, and commits: the same
# group's next run starts where it ended and finds nothing new.
pull_back() {
  local sent got again
  sent="$(python3 -c "import json; print(json.loads(open('$state/p2.json').read().strip().splitlines()[-1])['messages'])")"
  "$BIN" bench pull --namesrv "127.0.0.1:$remoting" --topic smoke --group smoke-pull --clients 3 --batch 16 --duration 3s --json >"$state/pull1.json"
  got="$(python3 -c "import json; r=json.loads(open('$state/pull1.json').read().strip().splitlines()[-1]); assert r['failed'] == 0, r; print(r['messages'])")"
  "$BIN" bench pull --namesrv "127.0.0.1:$remoting" --topic smoke --group smoke-pull --clients 1 --duration 1s --json >"$state/pull2.json"
  again="$(python3 -c "import json; r=json.loads(open('$state/pull2.json').read().strip().splitlines()[-1]); assert r['failed'] == 0, r; print(r['messages'])")"
  echo "sent $sent, pulled $got, pulled again $again"
  [[ "$got" -eq "$sent" && "$again" -eq 0 ]]
}
check "bench pull reads every message produced and commits the group's offsets" pull_back
check "bench pull names a topic without a route" refused "no route for" \
  "$BIN" bench pull --namesrv "127.0.0.1:$remoting" --topic no_such_topic --duration 1s
timers_smoke() {
  python3 "$ROOT/tests/bench/timers" --bin "$BIN" --pending 2000 --rate 200 --load-seconds 3 \
    --delays 500ms..1500ms --out "$state/timers" >"$state/timers.txt" 2>&1 || { cat "$state/timers.txt"; return 1; }
  python3 - "$state"/timers/*-timers.json <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
lt, ou, rs, mem = r["lateness"], r["outage"], r["restart"], r["memory"]
print({"lateness": lt["lateness_ms"], "early": lt["early"], "outage": ou, "pending": mem["pending_timers"]})
assert lt["sent"] > 0 and lt["received"] == lt["sent"], "every delayed message arrives"
assert lt["early"] == 0 and ou["early"] == 0, "nothing before its delivery time"
assert ou["received_after_restart"] == ou["sent"], "timers due during the outage arrive after it"
assert rs["pending_after"] == mem["pending_timers"], "pending timers survive kill -9"
PY
}
check "delay messages: on time, none early, through kill -9 (tests/bench/timers, short)" timers_smoke
check "the compare script parses and documents itself" bash -c "python3 '$ROOT/tests/bench/compare' --help | grep -q -- '--quick'"
check "the compare script refuses an unknown system" refused "unknown system" python3 "$ROOT/tests/bench/compare" --systems bogus

echo "bench-smoke: $passed passed, $failed failed"
((failed == 0))
