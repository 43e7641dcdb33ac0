#!/usr/bin/env bash
# What `--auth` costs on send throughput: `ferromq standalone` (release) with and without
# authentication, `ferromq bench produce` signing every call as the super user and as a normal
# user with a one-entry policy, runs alternated. A measurement (see BENCHMARKS.md), not a test.
#
#   tests/bench/auth-cost.sh                      # 4 clients, 15 s runs, 2 rounds
#   CLIENTS=32 DUR=10s ROUNDS="1 2 3" tests/bench/auth-cost.sh
# The data directory goes under $TMPDIR (a tmpfs keeps the disk out of the comparison).
set -u
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
(cd "$ROOT" && cargo build --release -q -p ferromq) || exit 1
F="${CARGO_TARGET_DIR:-$ROOT/target}/release/ferromq"
W="$(mktemp -d "${TMPDIR:-/tmp}/ferromq-auth-cost.XXXXXX")"
trap 'rm -rf "$W"' EXIT
umask 077
echo "admin-bench-secret" > "$W/admin.secret"
echo "app-bench-secret" > "$W/app.secret"
GRPC=127.0.0.1:28281
HTTP=127.0.0.1:28290
SPID=""

start() { # start on|off
  rm -rf "$W/data"
  local extra=()
  [[ $1 == on ]] && extra=(--auth --auth-super-user admin --auth-super-secret-file "$W/admin.secret")
  FERROMQ_SEGMENT_SIZE=256MiB "$F" standalone --data-dir "$W/data" --grpc-addr $GRPC --http-addr $HTTP \
    "${extra[@]}" > "$W/server-$1.log" 2>&1 &
  SPID=$!
  for _ in $(seq 100); do curl -sf "http://$HTTP/readyz" >/dev/null && break; sleep 0.1; done
  local creds=()
  [[ $1 == on ]] && creds=(--access-key admin --secret-file "$W/admin.secret")
  "$F" admin --server $GRPC "${creds[@]}" topic create bench --queues 8 >/dev/null
  if [[ $1 == on ]]; then
    "$F" admin --server $GRPC "${creds[@]}" user create app --user-secret-file "$W/app.secret" >/dev/null
    "$F" admin --server $GRPC "${creds[@]}" acl create --user app --resource 'topic:bench*' --actions publish >/dev/null
  fi
}

stop() { kill "$SPID"; wait "$SPID" 2>/dev/null; }

bench() { # bench LABEL [credential flags]
  local label=$1; shift
  "$F" bench produce --server $GRPC --topic bench --size 1024 --clients "${CLIENTS:-4}" --batch "${BATCH:-1}" \
    --duration "${DUR:-15s}" --json "$@" 2>/dev/null | python3 -c "
import json, sys
d = json.load(sys.stdin)
print('$label', round(d['msgs_per_sec']), 'msg/s', 'p50', d['latency_ms']['p50'], 'p99', d['latency_ms']['p99'], 'ms')"
}

for round in ${ROUNDS:-1 2}; do
  start off; bench "off-r$round"; stop
  start on
  bench "on-super-r$round" --access-key admin --secret-file "$W/admin.secret"
  bench "on-normal-r$round" --access-key app --secret-file "$W/app.secret"
  stop
done
