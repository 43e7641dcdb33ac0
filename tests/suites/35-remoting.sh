#!/usr/bin/env bash
# Remoting suite: FerroMQ's classic RocketMQ remoting protocol driven by the real classic clients
# and tools (tests/clients/remoting/run.sh: rocketmq-client 4.9.8 scenarios, rocketmq-client-go/v2,
# DefaultMQAdminExt calls of the dashboard and exporter, mqadmin commands, and 4.x <-> 5.x gRPC
# mixed scenarios with the official 5.x Java client), twice:
#   standalone  `ferromq standalone`, remoting and gRPC on their own ports
#   cluster     a name server, two broker groups and a proxy (as tests/suites/50-cluster.sh starts
#               them); clients and tools use the proxy's remoting port, the mixed scenarios its
#               gRPC port
# Prints one line per target and scenario (PASS/FAIL/SKIP) and fails on any FAIL, or when a target
# does not stop cleanly on SIGTERM.
#
#   tests/suites/35-remoting.sh [--only java4,go,admin,mqadmin,mixed] [--targets standalone,cluster]
#
# Installs what it needs on a fresh machine (JDK, Maven, Go from Debian; the RocketMQ tools jars,
# Maven and Go caches under $FERROMQ_TEST_CACHE/clients); the Java and Go programs are built once
# for both targets.
set -uo pipefail
ROOT="${FERROMQ_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}"
export FERROMQ_ROOT="$ROOT"
export FERROMQ_TEST_CACHE="${FERROMQ_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ferromq-tests}"
# shellcheck source=../clients/lib.sh
source "$ROOT/tests/clients/lib.sh"

ONLY="java4,go,admin,mqadmin,mixed"
TARGETS="standalone,cluster"
while (($#)); do
  case "$1" in
    --only) ONLY="$2"; shift 2 ;;
    --targets) TARGETS="$2"; shift 2 ;;
    *) echo "usage: $0 [--only java4,go,admin,mqadmin,mixed] [--targets standalone,cluster]" >&2; exit 2 ;;
  esac
done

T0=$(date +%s)
WORK="$(mktemp -d /tmp/ferromq-remoting-suite.XXXXXX)"
RESULTS="$WORK/results.txt"
: > "$RESULTS"
export FERROMQ_REMOTING_BUILD="$WORK/build"
PIDS=()
rc=0

need cargo
log "building ferromq (cargo build --release -p ferromq)"
if ! (cd "$ROOT" && cargo build --release --locked -p ferromq -q) > "$WORK/build-ferromq.log" 2>&1; then
  tail -30 "$WORK/build-ferromq.log" >&2
  echo "suite build FAIL cargo build --release -p ferromq failed" >> "$RESULTS"
  cat "$RESULTS"
  exit 1
fi
FERROMQ="${CARGO_TARGET_DIR:-$ROOT/target}/release/ferromq"

# Small segments: the suite stores a few MiB. A 2 s check interval: the transaction scenario waits
# for the broker to ask the producer about an unresolved half message.
NODE_FLAGS=(--segment-size 64MiB --transaction-check-interval 2s)

start() { # start NAME ARGS...: a ferromq process in the background, logging to $WORK/NAME.log
  local name="$1"
  shift
  FERROMQ_LOG="${FERROMQ_LOG:-info}" "$FERROMQ" "$@" > "$WORK/$name.log" 2>&1 &
  PIDS+=("$!:$name")
}

ready() { # ready HTTP_PORT NAME: /readyz answers 200 within 60 s
  local i
  for ((i = 0; i < 240; i++)); do
    if curl -sf "http://127.0.0.1:$1/readyz" >/dev/null 2>&1; then return 0; fi
    sleep 0.25
  done
  log "$2 not ready within 60 s (see $WORK/$2.log)"
  return 1
}

stop_all() { # SIGTERM every process started, in reverse; a target that does not exit 0 in 15 s fails
  local target="$1" i entry pid name
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    entry="${PIDS[$i]}"
    pid="${entry%%:*}"
    name="${entry#*:}"
    kill -TERM "$pid" 2>/dev/null || continue
    local waited=0
    while kill -0 "$pid" 2>/dev/null && ((waited < 150)); do sleep 0.1; waited=$((waited + 1)); done
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL "$pid" 2>/dev/null
      echo "$target server shutdown_$name FAIL did not exit within 15 s of SIGTERM" >> "$RESULTS"
    else
      wait "$pid" 2>/dev/null
      local code=$?
      if ((code != 0)); then
        echo "$target server shutdown_$name FAIL exit status $code after SIGTERM" >> "$RESULTS"
      fi
    fi
  done
  PIDS=()
}

finish() {
  trap - EXIT INT TERM
  ((${#PIDS[@]})) && stop_all "${CURRENT:-suite}"
  log "results (target client scenario verdict detail), logs in $WORK:"
  sort -s -k1,1 "$RESULTS" | sed 's/^/    /' >&2
  local p f s
  p=$(awk '$4 == "PASS"' "$RESULTS" | wc -l)
  f=$(awk '$4 == "FAIL"' "$RESULTS" | wc -l)
  s=$(awk '$4 == "SKIP"' "$RESULTS" | wc -l)
  log "took $(($(date +%s) - T0)) s"
  echo "remoting suite: $p passed, $f failed, $s skipped"
  if ((f > 0 || rc != 0)); then
    log "kept $WORK for inspection"
    exit 1
  fi
  rm -rf "$WORK"
  exit 0
}
trap finish EXIT
trap 'exit 130' INT TERM

harness() { # harness TARGET NAMESRV GRPC: run.sh against one target, its lines prefixed with TARGET
  local target="$1" logs="$WORK/$1"
  mkdir -p "$logs"
  FERROMQ_CLIENT_LOGS="$logs" bash "$ROOT/tests/clients/remoting/run.sh" --namesrv "$2" --grpc "$3" --only "$ONLY" \
    > "$WORK/run-$target.out" 2>&1
  local code=$?
  if [[ -s "$logs/results.txt" ]]; then
    sed "s/^/$target /" "$logs/results.txt" >> "$RESULTS"
  fi
  if ((code != 0)) && ! grep -q ' FAIL ' "$logs/results.txt" 2>/dev/null; then
    echo "$target harness run FAIL run.sh exited $code without a failed scenario (see $WORK/run-$target.out)" >> "$RESULTS"
  fi
  grep -E '^SCENARIO|remoting:' "$WORK/run-$target.out" | sed "s/^/[$target] /" >&2
}

if [[ ",$TARGETS," == *",standalone,"* ]]; then
  CURRENT=standalone
  grpc=$(free_port); http=$(free_port); remoting=$(free_port)
  log "standalone: gRPC 127.0.0.1:$grpc, remoting 127.0.0.1:$remoting"
  start standalone standalone --data-dir "$WORK/standalone-data" --grpc-addr "127.0.0.1:$grpc" \
    --http-addr "127.0.0.1:$http" --remoting-addr "127.0.0.1:$remoting" "${NODE_FLAGS[@]}"
  if ready "$http" standalone; then
    harness standalone "127.0.0.1:$remoting" "127.0.0.1:$grpc"
  else
    echo "standalone server startup FAIL not ready (see $WORK/standalone.log)" >> "$RESULTS"
  fi
  stop_all standalone
fi

if [[ ",$TARGETS," == *",cluster,"* ]]; then
  CURRENT=cluster
  ns=$(free_port)
  log "cluster: name server 127.0.0.1:$ns, broker groups g1 and g2, one proxy"
  start nameserver nameserver --addr "127.0.0.1:$ns" --http-addr "127.0.0.1:$(free_port)" --broker-expiry 3s
  cluster_ok=1
  for g in g1 g2; do
    bhttp=$(free_port)
    start "broker-$g" broker --group "$g" --nameservers "127.0.0.1:$ns" --addr "127.0.0.1:$(free_port)" \
      --http-addr "127.0.0.1:$bhttp" --data-dir "$WORK/$g-data" "${NODE_FLAGS[@]}"
    ready "$bhttp" "broker-$g" || cluster_ok=0
  done
  pgrpc=$(free_port); phttp=$(free_port); premoting=$(free_port)
  start proxy proxy --nameservers "127.0.0.1:$ns" --grpc-addr "127.0.0.1:$pgrpc" --http-addr "127.0.0.1:$phttp" \
    --route-refresh 500ms --remoting-addr "127.0.0.1:$premoting"
  ready "$phttp" proxy || cluster_ok=0
  # Ready once the proxy sees both groups.
  for ((i = 0; i < 120; i++)); do
    n=$("$FERROMQ" admin --server "127.0.0.1:$pgrpc" -o json cluster list 2>/dev/null \
      | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' 2>/dev/null || echo 0)
    [[ "$n" == 2 ]] && break
    sleep 0.5
  done
  [[ "${n:-0}" == 2 ]] || cluster_ok=0
  if ((cluster_ok)); then
    harness cluster "127.0.0.1:$premoting" "127.0.0.1:$pgrpc"
  else
    echo "cluster server startup FAIL the proxy never saw both broker groups (see $WORK/*.log)" >> "$RESULTS"
  fi
  stop_all cluster
fi
