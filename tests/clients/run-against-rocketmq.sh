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

RMQ_VERSION="${RMQ_VERSION:-5.3.3}"
NS_PORT=29876
BROKER_PORT=29911
PROXY_GRPC_PORT=28081
PROXY_REMOTING_PORT=28080
RMQ_LIB="$CLIENTS_CACHE/rocketmq-$RMQ_VERSION/lib"

T0=$(date +%s)
need java
need mvn
if [[ ! -e "$RMQ_LIB/rocketmq-proxy-$RMQ_VERSION.jar" ]]; then
  log "resolving Apache RocketMQ $RMQ_VERSION from Maven Central into $RMQ_LIB"
  (cd "$HERE/rocketmq" && mvn -B -q -Dmaven.repo.local="$M2_REPO" -Drocketmq.version="$RMQ_VERSION" \
      dependency:copy-dependencies -DoutputDirectory="$RMQ_LIB") || die "could not resolve RocketMQ jars"
fi

WORK="$(mktemp -d /tmp/ferromq-rmq.XXXXXX)"
export FERROMQ_CLIENT_LOGS="$WORK/logs"
mkdir -p "$WORK/store" "$WORK/logs"
CP="$RMQ_LIB/*"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 1 40); do kill -0 "$p" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$p" 2>/dev/null
  done
  if ((KEEP)); then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

cat > "$WORK/broker.conf" <<EOF
brokerClusterName=FerromqTestCluster
brokerName=broker-t
brokerId=0
brokerRole=ASYNC_MASTER
flushDiskType=ASYNC_FLUSH
namesrvAddr=127.0.0.1:$NS_PORT
brokerIP1=127.0.0.1
listenPort=$BROKER_PORT
storePathRootDir=$WORK/store
storePathCommitLog=$WORK/store/commitlog
mappedFileSizeCommitLog=67108864
autoCreateTopicEnable=false
autoCreateSubscriptionGroup=true
# transaction scenario: check orphaned half messages older than 2 s, every 2 s (defaults 6 s / 30 s), as the
# ferromq suite does with --transaction-check-interval 2s
transactionTimeOut=2000
transactionCheckInterval=2000
# recall scenario: RecallMessage is refused ("operation is forbidden") unless enabled
recallMessageEnable=true
EOF
cat > "$WORK/proxy.json" <<EOF
{"rocketMQClusterName":"FerromqTestCluster","namesrvAddr":"127.0.0.1:$NS_PORT",
 "grpcServerPort":$PROXY_GRPC_PORT,"remotingListenPort":$PROXY_REMOTING_PORT}
EOF

JOPTS=(-XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Duser.home="$WORK" -Drocketmq.home.dir="$WORK"
       -Drocketmq.namesrv.addr=127.0.0.1:$NS_PORT)
export ROCKETMQ_HOME="$WORK"
log "starting namesrv on 127.0.0.1:$NS_PORT"
cat > "$WORK/namesrv.conf" <<EOF
listenPort=$NS_PORT
EOF
java -Xms128m -Xmx128m "${JOPTS[@]}" -cp "$CP" org.apache.rocketmq.namesrv.NamesrvStartup -c "$WORK/namesrv.conf" \
  > "$WORK/logs/namesrv.out" 2>&1 &
PIDS+=($!)
wait_port $NS_PORT 60 || { tail -50 "$WORK/logs/namesrv.out"; die "namesrv did not start"; }

log "starting broker + proxy (local mode, one JVM) on 127.0.0.1:$BROKER_PORT / gRPC 127.0.0.1:$PROXY_GRPC_PORT"
java -Xms384m -Xmx384m -XX:MaxDirectMemorySize=256m "${JOPTS[@]}" -cp "$CP" org.apache.rocketmq.proxy.ProxyStartup \
  -pm local -bc "$WORK/broker.conf" -pc "$WORK/proxy.json" -n 127.0.0.1:$NS_PORT > "$WORK/logs/proxy.out" 2>&1 &
PIDS+=($!)
wait_port $PROXY_GRPC_PORT 120 || { tail -50 "$WORK/logs/proxy.out"; die "proxy did not start"; }
wait_port $BROKER_PORT 60 || die "broker did not start"

mqadmin() {
  java -Xmx96m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Duser.home="$WORK" -cp "$CP" \
    org.apache.rocketmq.tools.command.MQAdminStartup "$@" -n 127.0.0.1:$NS_PORT
}

log "waiting for the broker to register with the namesrv"
for _ in $(seq 1 30); do
  if mqadmin clusterList 2>/dev/null | grep -q broker-t; then break; fi
  sleep 1
done

# create_topic NAME normal|fifo|delay|transaction|priority QUEUES ; create_fifo_group NAME  (callbacks used by lib.sh)
create_topic() {
  local name="$1" type="$2" queues="$3" extra=()
  case "$type" in
    fifo) extra=(-o true -a +message.type=FIFO) ;;
    delay) extra=(-a +message.type=DELAY) ;;
    transaction) extra=(-a +message.type=TRANSACTION) ;;
    *) extra=(-a +message.type=NORMAL) ;;  # priority: RocketMQ 5.3.3 has no PRIORITY type (scenario skipped)
  esac
  mqadmin updateTopic -c FerromqTestCluster -t "$name" -r "$queues" -w "$queues" "${extra[@]}" \
    >> "$WORK/logs/mqadmin.out" 2>&1
}
create_fifo_group() {
  mqadmin updateSubGroup -c FerromqTestCluster -g "$1" -o true >> "$WORK/logs/mqadmin.out" 2>&1
}
create_dlq_group() { # the reference allows retryMaxTimes + 1 deliveries
  mqadmin updateSubGroup -c FerromqTestCluster -g "$1" -r $(($2 - 1)) >> "$WORK/logs/mqadmin.out" 2>&1
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
