# Starts Apache RocketMQ (namesrv + broker + proxy in local mode), resolved from Maven Central, on
# 127.0.0.1 for proving a harness against the reference. Sourced (after ../lib.sh), not executed.
# Used by tests/clients/run-against-rocketmq.sh (gRPC suites) and tests/clients/remoting/run-against-rocketmq.sh.
#
#   start_rocketmq WORKDIR      sets NS_PORT BROKER_PORT PROXY_GRPC_PORT PROXY_REMOTING_PORT RMQ_CLUSTER,
#                               defines mqadmin ARGS... (adds -n), appends PIDs to RMQ_PIDS
#   stop_rocketmq               SIGTERM, then SIGKILL after 10 s, the processes start_rocketmq started
#   start_cluster_proxy         a second proxy in cluster mode (its own JVM) on PROXY_CLUSTER_REMOTING_PORT /
#                               PROXY_CLUSTER_GRPC_PORT: unlike the local-mode proxy, it answers remoting
#                               routes with its remoting address (5.3.3's local mode names its gRPC port there)
#   finish_rocketmq             stop_rocketmq, then remove WORKDIR unless KEEP=1 (for `trap finish_rocketmq EXIT`)
# Env: RMQ_VERSION (5.3.3), RMQ_BROKER_EXTRA (lines appended to broker.conf).
# Non-default ports (namesrv 29876, broker 29911, proxy gRPC 28081, proxy remoting 28080) so a
# benchmark RocketMQ on the default ports is not disturbed. Heaps are small (2-core box).

RMQ_VERSION="${RMQ_VERSION:-5.3.3}"
RMQ_LIB="$CLIENTS_CACHE/rocketmq-$RMQ_VERSION/lib"
RMQ_CLUSTER=FerromqTestCluster
NS_PORT=29876
BROKER_PORT=29911
PROXY_GRPC_PORT=28081
PROXY_REMOTING_PORT=28080
PROXY_CLUSTER_GRPC_PORT=28181
PROXY_CLUSTER_REMOTING_PORT=28180
RMQ_PIDS=()

resolve_rocketmq() {
  if [[ ! -e "$RMQ_LIB/rocketmq-proxy-$RMQ_VERSION.jar" ]]; then
    log "resolving Apache RocketMQ $RMQ_VERSION from Maven Central into $RMQ_LIB"
    (cd "$CLIENTS_HERE/rocketmq" && mvn -B -q -Dmaven.repo.local="$M2_REPO" -Drocketmq.version="$RMQ_VERSION" \
        dependency:copy-dependencies -DoutputDirectory="$RMQ_LIB") || die "could not resolve RocketMQ jars"
  fi
}

start_rocketmq() {
  local work="$1"
  need java
  need mvn
  resolve_rocketmq
  mkdir -p "$work/store" "$work/logs"
  RMQ_WORK="$work"
  cat > "$work/broker.conf" <<CONF
brokerClusterName=$RMQ_CLUSTER
brokerName=broker-t
brokerId=0
brokerRole=ASYNC_MASTER
flushDiskType=ASYNC_FLUSH
namesrvAddr=127.0.0.1:$NS_PORT
brokerIP1=127.0.0.1
listenPort=$BROKER_PORT
storePathRootDir=$work/store
storePathCommitLog=$work/store/commitlog
mappedFileSizeCommitLog=67108864
autoCreateTopicEnable=false
autoCreateSubscriptionGroup=true
# transaction scenarios: check orphaned half messages older than 2 s, every 2 s (defaults 6 s / 30 s), as the
# ferromq suite does with --transaction-check-interval 2s
transactionTimeOut=2000
transactionCheckInterval=2000
# recall scenario: RecallMessage is refused ("operation is forbidden") unless enabled
recallMessageEnable=true
${RMQ_BROKER_EXTRA:-}
CONF
  cat > "$work/proxy.json" <<CONF
{"rocketMQClusterName":"$RMQ_CLUSTER","namesrvAddr":"127.0.0.1:$NS_PORT",
 "grpcServerPort":$PROXY_GRPC_PORT,"remotingListenPort":$PROXY_REMOTING_PORT}
CONF
  echo "listenPort=$NS_PORT" > "$work/namesrv.conf"
  RMQ_JOPTS=(-XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Duser.home="$work" -Drocketmq.home.dir="$work"
             -Drocketmq.namesrv.addr=127.0.0.1:$NS_PORT)
  export ROCKETMQ_HOME="$work"
  log "starting namesrv on 127.0.0.1:$NS_PORT"
  java -Xms128m -Xmx128m "${RMQ_JOPTS[@]}" -cp "$RMQ_LIB/*" org.apache.rocketmq.namesrv.NamesrvStartup \
    -c "$work/namesrv.conf" > "$work/logs/namesrv.out" 2>&1 &
  RMQ_PIDS+=($!)
  wait_port $NS_PORT 60 || { tail -50 "$work/logs/namesrv.out"; die "namesrv did not start"; }
  log "starting broker + proxy (local mode, one JVM) on 127.0.0.1:$BROKER_PORT / gRPC $PROXY_GRPC_PORT / remoting $PROXY_REMOTING_PORT"
  java -Xms384m -Xmx384m -XX:MaxDirectMemorySize=256m "${RMQ_JOPTS[@]}" -cp "$RMQ_LIB/*" \
    org.apache.rocketmq.proxy.ProxyStartup -pm local -bc "$work/broker.conf" -pc "$work/proxy.json" \
    -n 127.0.0.1:$NS_PORT > "$work/logs/proxy.out" 2>&1 &
  RMQ_PIDS+=($!)
  wait_port $PROXY_GRPC_PORT 120 || { tail -50 "$work/logs/proxy.out"; die "proxy did not start"; }
  wait_port $BROKER_PORT 60 || die "broker did not start"
  log "waiting for the broker to register with the namesrv"
  local _
  for _ in $(seq 1 30); do
    if mqadmin clusterList 2>/dev/null | grep -q broker-t; then break; fi
    sleep 1
  done
}

start_cluster_proxy() {
  local work="$RMQ_WORK"
  cat > "$work/proxy-cluster.json" <<CONF
{"rocketMQClusterName":"$RMQ_CLUSTER","namesrvAddr":"127.0.0.1:$NS_PORT",
 "grpcServerPort":$PROXY_CLUSTER_GRPC_PORT,"remotingListenPort":$PROXY_CLUSTER_REMOTING_PORT}
CONF
  log "starting a cluster-mode proxy on 127.0.0.1: remoting $PROXY_CLUSTER_REMOTING_PORT / gRPC $PROXY_CLUSTER_GRPC_PORT"
  java -Xms192m -Xmx192m "${RMQ_JOPTS[@]}" -Duser.home="$work/cluster-proxy" -cp "$RMQ_LIB/*" \
    org.apache.rocketmq.proxy.ProxyStartup -pm cluster -pc "$work/proxy-cluster.json" \
    -n 127.0.0.1:$NS_PORT > "$work/logs/proxy-cluster.out" 2>&1 &
  RMQ_PIDS+=($!)
  wait_port $PROXY_CLUSTER_REMOTING_PORT 120 || { tail -50 "$work/logs/proxy-cluster.out"; die "cluster proxy did not start"; }
}

# mqadmin ARGS...: rocketmq-tools' mqadmin against $MQADMIN_NAMESRV (default: the reference's namesrv).
mqadmin() {
  java -Xmx96m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Duser.home="${RMQ_WORK:-/tmp}" -cp "$RMQ_LIB/*" \
    org.apache.rocketmq.tools.command.MQAdminStartup "$@" -n "${MQADMIN_NAMESRV:-127.0.0.1:$NS_PORT}"
}

stop_rocketmq() {
  local p _
  for p in "${RMQ_PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${RMQ_PIDS[@]}"; do
    for _ in $(seq 1 40); do kill -0 "$p" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$p" 2>/dev/null
  done
  RMQ_PIDS=()
}

finish_rocketmq() {
  stop_rocketmq
  [[ -n "${RMQ_WORK:-}" ]] || return 0
  if ((${KEEP:-0})); then log "kept $RMQ_WORK"; else rm -rf "$RMQ_WORK"; fi
}
