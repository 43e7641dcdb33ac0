#!/usr/bin/env bash
# Developer tool (not CI): runs the official-client protocol suites (python, java, rust) against the
# reference implementation, Apache RocketMQ 5 (namesrv + broker + gRPC proxy, resolved from Maven
# Central), to prove that the harness itself is correct. Same scenarios as tests/suites/30-clients.sh.
#
#   tests/clients/run-against-rocketmq.sh [--only python,java,rust] [--keep]
#
# Everything binds 127.0.0.1 only, on non-default ports (namesrv 29876, broker 29911, proxy gRPC 28081)
# so it does not collide with a benchmark RocketMQ on the default ports. Heaps are small (2-core box).
# --keep leaves the scratch directory (logs, store) in place after the run.
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
export FERROMQ_ROOT="${FERROMQ_ROOT:-$(cd "$HERE/../.." && pwd)}"
export FERROMQ_TEST_CACHE="${FERROMQ_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ferromq-tests}"
# shellcheck source=lib.sh
source "$HERE/lib.sh"

ONLY="python,java,rust"
KEEP=0
while (($#)); do
  case "$1" in
    --only) ONLY="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    *) echo "usage: $0 [--only python,java,rust] [--keep]" >&2; exit 2 ;;
  esac
done

# shellcheck source=rocketmq/reference.sh
source "$HERE/rocketmq/reference.sh"

T0=$(date +%s)
WORK="$(mktemp -d /tmp/ferromq-rmq.XXXXXX)"
export FERROMQ_CLIENT_LOGS="$WORK/logs"
RMQ_WORK="$WORK"
trap finish_rocketmq EXIT
start_rocketmq "$WORK"

# create_topic NAME normal|fifo|delay|transaction|priority QUEUES ; create_fifo_group NAME  (callbacks used by lib.sh)
create_topic() {
  local name="$1" type="$2" queues="$3" extra=()
  case "$type" in
    fifo) extra=(-o true -a +message.type=FIFO) ;;
    delay) extra=(-a +message.type=DELAY) ;;
    transaction) extra=(-a +message.type=TRANSACTION) ;;
    *) extra=(-a +message.type=NORMAL) ;;  # priority: RocketMQ 5.3.3 has no PRIORITY type (scenario skipped)
  esac
  mqadmin updateTopic -c "$RMQ_CLUSTER" -t "$name" -r "$queues" -w "$queues" "${extra[@]}" \
    >> "$WORK/logs/mqadmin.out" 2>&1
}
create_fifo_group() {
  mqadmin updateSubGroup -c "$RMQ_CLUSTER" -g "$1" -o true >> "$WORK/logs/mqadmin.out" 2>&1
}
create_dlq_group() { # the reference allows retryMaxTimes + 1 deliveries
  mqadmin updateSubGroup -c "$RMQ_CLUSTER" -g "$1" -r $(($2 - 1)) >> "$WORK/logs/mqadmin.out" 2>&1
}

export FERROMQ_ENDPOINT="127.0.0.1:$PROXY_GRPC_PORT"
export FERROMQ_TARGET="apache-rocketmq-$RMQ_VERSION"
# Scenarios the reference cannot run (each client reports SKIP with this reason).
if [[ "$RMQ_VERSION" == 5.[0-3].* ]]; then
  export FERROMQ_SKIP_PRIORITY="Apache RocketMQ $RMQ_VERSION has no PRIORITY message type (TopicMessageType: NORMAL FIFO DELAY TRANSACTION MIXED)"
fi
prepare_and_run_suites "$ONLY"
rc=$?
T1=$(date +%s)
log "against Apache RocketMQ $RMQ_VERSION: $(summary_line) in $((T1 - T0)) s (logs: $WORK/logs)"
if ((rc != 0)); then
  KEEP=1
  log "failures: broker/proxy log at $WORK/logs/proxy.out and $WORK/rocketmqlogs"
fi
summary_line
exit $rc
