#!/usr/bin/env bash
# Issue 14 on the real binary with the OFFICIAL Python client (rocketmq-python-client, which never sets
# queue_id), against `ferromq standalone` on loopback:
#   1. queue choice: sends without queue_id spread over a 4-queue topic; 200 FIFO message groups over the
#      16 queues of a FIFO topic; everything sent is consumed.
#   2. a 48 MiB volume (tmpfs with size=48m, mounted by this script; needs root): with 8 MiB segments the
#      store preallocates little, sends are acknowledged until the disk-full refusal (50001 "disk full"),
#      /readyz and ferromq_store_disk_full say so, SIGTERM exits 0 while full, a restart on the full
#      volume serves every acknowledged message (Jepsen counts), and removing a ballast file lets sends
#      in again without a restart.
#
#   tests/suites/45-hostile.sh             # builds ferromq (release) unless FERROMQ_BIN names a binary
# Prints `hostile: N passed, M failed` and exits non-zero if any check failed. Without root (no mount)
# part 2 is reported as SKIP, never as passed.
set -uo pipefail
ROOT="${FERROMQ_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}"
export FERROMQ_ROOT="$ROOT"
export FERROMQ_TEST_CACHE="${FERROMQ_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ferromq-tests}"
# shellcheck source=../clients/lib.sh
source "$ROOT/tests/clients/lib.sh"

WORK="$(mktemp -d /tmp/ferromq-hostile.XXXXXX)"
RESULTS="$WORK/results.txt"
: > "$RESULTS"
PID=""
VOL="$WORK/vol"

cleanup() {
  [[ -n "$PID" ]] && kill -KILL "$PID" 2>/dev/null
  mountpoint -q "$VOL" 2>/dev/null && umount "$VOL"
}
trap cleanup EXIT

note() { echo "RESULT $1 $2 $3" | tee -a "$RESULTS" >&2; }

if [[ -n "${FERROMQ_BIN:-}" ]]; then
  FERROMQ="$FERROMQ_BIN"
else
  log "building ferromq (cargo build --release -p ferromq)"
  if ! (cd "$ROOT" && cargo build --release -p ferromq -q) > "$WORK/build.log" 2>&1; then
    tail -30 "$WORK/build.log" >&2
    echo "hostile: 0 passed, 1 failed (build)"
    exit 1
  fi
  FERROMQ="${CARGO_TARGET_DIR:-$ROOT/target}/release/ferromq"
fi
if ! build_python > "$WORK/build-python.log" 2>&1; then
  tail -30 "$WORK/build-python.log" >&2
  echo "hostile: 0 passed, 1 failed (python client)"
  exit 1
fi
PY="$VENV/bin/python"
HOSTILE="$ROOT/tests/clients/python/hostile.py"

GRPC_PORT=$(free_port)
HTTP_PORT=$(free_port)
while [[ "$HTTP_PORT" == "$GRPC_PORT" ]]; do HTTP_PORT=$(free_port); done
ENDPOINT="127.0.0.1:$GRPC_PORT"
ADMIN="$FERROMQ admin --server $ENDPOINT"

# start DATA_DIR SEGMENT_SIZE LOG: starts ferromq standalone, waits for /readyz.
start() {
  "$FERROMQ" standalone --data-dir "$1" --segment-size "$2" \
    --grpc-addr "$ENDPOINT" --http-addr "127.0.0.1:$HTTP_PORT" >> "$3" 2>&1 &
  PID=$!
  local i
  for ((i = 0; i < 120; i++)); do
    kill -0 "$PID" 2>/dev/null || return 1
    curl -sf "http://127.0.0.1:$HTTP_PORT/readyz" > /dev/null 2>&1 && return 0
    sleep 0.25
  done
  return 1
}

# stop NAME: SIGTERM, then a result line for the exit status (a graceful stop exits 0 within 20 s).
stop() {
  kill -TERM "$PID"
  local i
  for ((i = 0; i < 200; i++)); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$PID" 2>/dev/null; then
    kill -KILL "$PID"
    note "$1" FAIL "did not exit within 20 s of SIGTERM"
  else
    wait "$PID"
    local code=$?
    if ((code == 0)); then note "$1" PASS "exit 0 after SIGTERM"; else note "$1" FAIL "exit status $code after SIGTERM"; fi
  fi
  PID=""
}

run_py() { "$PY" "$HOSTILE" "$@" 2>> "$WORK/python.log" | tee -a "$RESULTS" >&2; }

# 1. Queue choice.
log "part 1: queue choice with the Python client"
if start "$WORK/data" 64MiB "$WORK/ferromq-1.log"; then
  $ADMIN topic create py_spread --type normal --queues 4 >> "$WORK/admin.log" 2>&1
  $ADMIN topic create py_spread_fifo --type fifo --queues 16 >> "$WORK/admin.log" 2>&1
  run_py spread "$ENDPOINT" "$ADMIN" py_spread py_spread_fifo
  stop spread_graceful_stop
else
  note spread_start FAIL "ferromq did not become ready (log $WORK/ferromq-1.log)"
fi

# 2. A 48 MiB volume.
log "part 2: a 48 MiB volume"
mkdir -p "$VOL"
if ! mount -t tmpfs -o size=48m tmpfs "$VOL" 2> "$WORK/mount.log"; then
  note small_disk SKIP "cannot mount a 48 MiB tmpfs (needs root): $(head -1 "$WORK/mount.log")"
else
  dd if=/dev/zero of="$VOL/ballast" bs=1M count=10 status=none
  LOG2="$WORK/ferromq-2.log"
  if start "$VOL/data" 8MiB "$LOG2"; then
    $ADMIN topic create small --type normal --queues 4 >> "$WORK/admin.log" 2>&1
    kib=$(du -sk "$VOL/data" | cut -f1)
    if ((kib <= 12 * 1024)); then
      note small_disk_preallocation PASS "an empty store with 8 MiB segments takes ${kib} KiB of the 48 MiB volume"
    else
      note small_disk_preallocation FAIL "an empty store with 8 MiB segments takes ${kib} KiB of the 48 MiB volume"
    fi
    run_py fill "$ENDPOINT" "$HTTP_PORT" small "$WORK/acked.txt"
    stop small_disk_graceful_stop_while_full
    if start "$VOL/data" 8MiB "$LOG2"; then
      note small_disk_restart_while_full PASS "ready again on the full volume"
      run_py drain-and-recover "$ENDPOINT" "$HTTP_PORT" small "$WORK/acked.txt" "$VOL/ballast"
      stop small_disk_graceful_stop
    else
      note small_disk_restart_while_full FAIL "ferromq did not become ready on the full volume (log $LOG2)"
    fi
    lines=$(grep -c . "$LOG2")
    note small_disk_log_lines PASS "$lines log lines in all (disk-full warnings are rate-limited)"
  else
    note small_disk_start FAIL "ferromq did not become ready on the 48 MiB volume (log $LOG2)"
  fi
  umount "$VOL"
fi

passed=$(grep -c ' PASS ' "$RESULTS")
failures=$(grep -c ' FAIL ' "$RESULTS")
skipped=$(grep -c ' SKIP ' "$RESULTS")
if ((failures > 0)); then
  log "kept $WORK for inspection"
  tail -20 "$WORK/python.log" >&2
else
  rm -rf "$WORK"
fi
echo "hostile: $passed passed, $failures failed, $skipped skipped"
((failures == 0))
