#!/usr/bin/env bash
# Remoting-protocol harness: drives a RocketMQ "remoting" endpoint (name server + broker, or a
# proxy's remoting port) with the real classic clients and tools:
#   java4    org.apache.rocketmq:rocketmq-client 4.9.8 scenarios (java/, Scenarios4x)
#   go       github.com/apache/rocketmq-client-go/v2 producer + push consumer (go/)
#   admin    DefaultMQAdminExt calls of rocketmq-dashboard / rocketmq-exporter (admin/, rocketmq-tools 5.3.3)
#   mqadmin  rocketmq-tools 5.3.3 mqadmin commands, each output checked
#   mixed    4.x -> 5.x gRPC client and back (needs --grpc)
#
#   tests/clients/remoting/run.sh --namesrv HOST:PORT [--admin-namesrv HOST:PORT] [--cluster NAME] [--grpc HOST:PORT]
#                                 [--only java4,go,admin,mqadmin,mixed]
#
# --namesrv is what the clients (java4, go, mixed) use as their name server; --admin-namesrv (default:
# the same) is what topic creation, the DefaultMQAdminExt program and mqadmin use. They differ for
# RocketMQ's proxy, whose remoting port serves clients but not the admin codes (GET_BROKER_CLUSTER_INFO
# answers REQUEST_CODE_NOT_SUPPORTED there).
# Topics are created through the target itself (mqadmin updateTopic -c CLUSTER), so the target must
# serve GET_BROKER_CLUSTER_INFO and UPDATE_AND_CREATE_TOPIC. Prints one line per scenario
# ("<client> <scenario> PASS|FAIL|SKIP <detail>") and a summary "remoting: N passed, M failed, K skipped".
# FERROMQ_JAVA_OPTS: extra JVM options for the Java programs (-Drocketmq.serialize.type=ROCKETMQ
# makes them send binary headers). FERROMQ_REMOTING_BUILD: where the Java and Go programs are built
# (default: the logs directory); runs that share it build once. Caches: $FERROMQ_TEST_CACHE/clients
# (Maven repo, RocketMQ tools jars, Go module cache).
# Exit 0 only if nothing failed. Used by run-against-rocketmq.sh beside this file; ready for a suite.
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
export FERROMQ_TEST_CACHE="${FERROMQ_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ferromq-tests}"
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"
# shellcheck source=../rocketmq/reference.sh
source "$HERE/../rocketmq/reference.sh"

NAMESRV=""
ADMIN_NAMESRV=""
CLUSTER=""
GRPC=""
ONLY="java4,go,admin,mqadmin,mixed"
while (($#)); do
  case "$1" in
    --namesrv) NAMESRV="$2"; shift 2 ;;
    --admin-namesrv) ADMIN_NAMESRV="$2"; shift 2 ;;
    --cluster) CLUSTER="$2"; shift 2 ;;
    --grpc) GRPC="$2"; shift 2 ;;
    --only) ONLY="$2"; shift 2 ;;
    *) echo "usage: $0 --namesrv HOST:PORT [--admin-namesrv HOST:PORT] [--cluster NAME] [--grpc HOST:PORT] [--only java4,go,admin,mqadmin,mixed]" >&2; exit 2 ;;
  esac
done
[[ -n "$NAMESRV" ]] || { echo "--namesrv is required" >&2; exit 2; }
ADMIN_NAMESRV="${ADMIN_NAMESRV:-$NAMESRV}"
export MQADMIN_NAMESRV="$ADMIN_NAMESRV" FERROMQ_NAMESRV="$NAMESRV"

LOGS="${FERROMQ_CLIENT_LOGS:-$(mktemp -d /tmp/ferromq-remoting.XXXXXX)}"
mkdir -p "$LOGS"
BUILD="${FERROMQ_REMOTING_BUILD:-$LOGS}"
mkdir -p "$BUILD"
export FERROMQ_RESULTS_FILE="$LOGS/results.txt"
: > "$FERROMQ_RESULTS_FILE"
GO_CACHE="$CLIENTS_CACHE/go"
T0=$(date +%s)
RUN_ID="r$(date +%s | tail -c 6)$RANDOM"
export FERROMQ_TOPIC_PREFIX="${RUN_ID}" FERROMQ_GROUP_PREFIX="${RUN_ID}_g"

ensure_tool java openjdk-17-jdk-headless && ensure_tool mvn maven || exit 1
resolve_rocketmq

result() { echo "$1 $2 $3 ${*:4}" >> "$FERROMQ_RESULTS_FILE"; echo "SCENARIO $*" >&2; }

# --- topics, through the target ---
if [[ -z "$CLUSTER" ]]; then
  CLUSTER="$(mqadmin clusterList 2>/dev/null | awk 'NR > 1 && $1 != "" {print $1; exit}')"
  [[ -n "$CLUSTER" ]] || die "clusterList against $ADMIN_NAMESRV named no cluster (is the target up?)"
fi
log "target $NAMESRV (admin $ADMIN_NAMESRV), cluster $CLUSTER, topics ${RUN_ID}_*"
create_topic() { # NAME QUEUES [extra mqadmin args]: once more if the first try fails (a starved
  # JVM can miss mqadmin's 3 s budget on a loaded machine)
  local try
  for try in 1 2; do
    mqadmin updateTopic -c "$CLUSTER" -t "$1" -r "$2" -w "$2" "${@:3}" > "$LOGS/mqadmin-setup-$1.out" 2>&1 && return 0
  done
  log "creating topic $1 failed (see $LOGS/mqadmin-setup-$1.out)"
  return 1
}
# bg CMD...: CMD in the background, at most 3 at a time (JVMs on a 2-core machine).
bg() {
  while (($(jobs -rp | wc -l) >= 3)); do wait -n; done
  "$@" &
}
# Typed like FerroMQ's topics (RocketMQ's proxy refuses a delay or transaction message on a NORMAL topic).
# Side by side: each is an mqadmin JVM that spends most of its few seconds starting and stopping.
for t in basic retry filter sql go mixed4 mixed5; do bg create_topic "${RUN_ID}_$t" 4 -a +message.type=NORMAL; done
bg create_topic "${RUN_ID}_delay" 4 -a +message.type=DELAY
bg create_topic "${RUN_ID}_tx" 4 -a +message.type=TRANSACTION
# Orderly 4.x sends are plain sends to a selected queue (no message group), so NORMAL too.
bg create_topic "${RUN_ID}_order" 4 -o true -a +message.type=NORMAL
wait

JAVA=(java -Xmx192m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Drocketmq.client.logUseSlf4j=false
      -Drocketmq.client.logRoot="$LOGS/java-client" -Drocketmq.client.logLevel=INFO)
# e.g. FERROMQ_JAVA_OPTS=-Drocketmq.serialize.type=ROCKETMQ: Java clients send binary headers
# shellcheck disable=SC2206
JAVA+=(${FERROMQ_JAVA_OPTS:-})

# missing CLIENT LOG SCENARIO...: a FAIL for each scenario the program ended without a verdict on
# (it crashed, timed out or could not be built), so a scenario never goes silently unreported.
missing() {
  local client="$1" log="$2" s
  for s in "${@:3}"; do
    grep -q "^$client $s " "$FERROMQ_RESULTS_FILE" || result "$client" "$s" FAIL "no verdict (see $log)"
  done
}

build_maven() { # DIR TARGET
  (cd "$HERE/$1" && mvn -B -q -Dmaven.repo.local="$M2_REPO" -DbuildDirectory="$2" package -DskipTests) \
    > "$LOGS/build-$1.log" 2>&1
}

JAVA4_SCENARIOS=(producer_sync producer_async producer_oneway producer_batch push_orderly retry_dlq transaction tag_filter
                 sql_filter delay_level)

run_java4() {
  local target="$BUILD/java4-target"
  if ! build_maven java "$target"; then
    missing java4 "$LOGS/build-java.log" "${JAVA4_SCENARIOS[@]}"
    return
  fi
  log "java4: rocketmq-client 4.9.8 scenarios"
  timeout 900 "${JAVA[@]}" -cp "$target/classes:$target/lib/*" io.ferromq.tests.remoting.Scenarios4x \
    > "$LOGS/run-java4.log" 2>&1
  grep '^SCENARIO' "$LOGS/run-java4.log" >&2
  missing java4 "$LOGS/run-java4.log" "${JAVA4_SCENARIOS[@]}"
}

run_admin() {
  local target="$BUILD/admin-target"
  if ! build_maven admin "$target"; then result admin build FAIL "build failed ($LOGS/build-admin.log)"; return; fi
  log "admin: DefaultMQAdminExt calls"
  FERROMQ_NAMESRV="$ADMIN_NAMESRV" FERROMQ_CLUSTER="$CLUSTER" FERROMQ_TOPIC="${RUN_ID}_basic" FERROMQ_GROUP="${RUN_ID}_g_basic" \
    timeout 300 "${JAVA[@]}" -cp "$target/classes:$target/lib/*" io.ferromq.tests.remoting.AdminCalls \
    > "$LOGS/run-admin.log" 2>&1
  grep '^SCENARIO' "$LOGS/run-admin.log" >&2
  grep -q '^admin ' "$FERROMQ_RESULTS_FILE" || result admin calls FAIL "no verdict (see $LOGS/run-admin.log)"
}

run_go() {
  ensure_tool go golang-go || { result go build FAIL "no Go toolchain"; return; }
  mkdir -p "$GO_CACHE"
  log "go: rocketmq-client-go/v2 producer + push consumer"
  if ! (cd "$HERE/go" && GOPATH="$GO_CACHE/path" GOMODCACHE="$GO_CACHE/mod" GOCACHE="$GO_CACHE/build" GOFLAGS=-mod=mod \
        go build -o "$BUILD/remoting-go" .) > "$LOGS/build-go.log" 2>&1; then
    result go producer_push FAIL "build failed ($LOGS/build-go.log)"
    return
  fi
  FERROMQ_TOPIC="${RUN_ID}_go" FERROMQ_GROUP="${RUN_ID}_g_go" timeout 300 "$BUILD/remoting-go" > "$LOGS/run-go.log" 2>&1
  grep '^SCENARIO' "$LOGS/run-go.log" >&2
  missing go "$LOGS/run-go.log" producer_sync producer_async push_consume
}

# mqadmin_check NAME REGEX ARGS...: runs one mqadmin command and checks its output.
mqadmin_check() {
  local name="$1" want="$2" out="$LOGS/mqadmin-$1.out"
  shift 2
  # A failed command prints a stack trace starting at column 0; exceptions inside its report
  # (queryMsgById's message tracks) are indented or embedded and do not count.
  if mqadmin "$@" > "$out" 2>&1 && grep -Eq -- "$want" "$out" \
      && ! grep -Eq '^(org\.apache\.rocketmq\.[A-Za-z.]*Exception|Exception in thread|java\.[a-z.]*\.[A-Za-z]*(Exception|Error))' "$out"; then
    result mqadmin "$name" PASS "output matches /$want/"
  else
    result mqadmin "$name" FAIL "exit/output did not match /$want/: $(grep -Em1 'Exception|ERROR|.' "$out" | cut -c1-200) ($out)"
  fi
}

run_mqadmin() {
  log "mqadmin: rocketmq-tools $RMQ_VERSION commands"
  local t="${RUN_ID}_basic" g="${RUN_ID}_g_basic" qt id
  # Each mqadmin run is a JVM that lingers ~2 s in Netty's graceful shutdown: the commands that
  # read, or write what nothing else reads, run side by side; the group's progress, then its
  # reset, after them.
  bg mqadmin_check clusterList "$CLUSTER" clusterList
  bg mqadmin_check topicList "$t" topicList
  bg mqadmin_check updateTopic "create topic to .* success" updateTopic -c "$CLUSTER" -t "${RUN_ID}_admin" -r 2 -w 2
  bg mqadmin_check topicRoute '"brokerAddrs"' topicRoute -t "$t"
  bg mqadmin_check topicStatus "#Broker Name.*#Max Offset" topicStatus -t "$t"
  bg mqadmin_check brokerStatus "brokerVersionDesc|msgPutTotalTodayNow" brokerStatus -c "$CLUSTER"
  bg mqadmin_check updateSubGroup "create subscription group to" updateSubGroup -c "$CLUSTER" -g "${RUN_ID}_g_admin" -r 3
  bg mqadmin_check consumerProgress "Diff Total" consumerProgress -g "$g"
  wait
  # an offset message id the Go run printed ("SENT_OFFSET_ID <topic> <id>")
  read -r _ qt id < <(grep -h '^SENT_OFFSET_ID ' "$LOGS"/run-*.log 2>/dev/null | head -1) || true
  if [[ -n "${id:-}" ]]; then
    mqadmin_check queryMsgById "OffsetID: *$id" queryMsgById -t "$qt" -i "$id"
  else
    result mqadmin queryMsgById FAIL "no offset message id from the client runs to query"
  fi
  mqadmin_check resetOffsetByTime "#queueId +#offset" \
    resetOffsetByTime -g "$g" -t "$t" -s now
}

run_mixed() {
  if [[ -z "$GRPC" ]]; then
    result mixed remoting_to_grpc SKIP "no --grpc endpoint given"
    result mixed grpc_to_remoting SKIP "no --grpc endpoint given"
    return
  fi
  local target="$BUILD/java4-target"
  if [[ -d "$target/classes" ]] || build_maven java "$target"; then
    log "mixed: 4.x remoting <-> 5.x gRPC"
    FERROMQ_ENDPOINT="$GRPC" timeout 300 "${JAVA[@]}" -cp "$target/classes:$target/lib/*" io.ferromq.tests.remoting.Mixed \
      > "$LOGS/run-mixed.log" 2>&1
    grep '^SCENARIO' "$LOGS/run-mixed.log" >&2
  fi
  missing mixed "$LOGS/run-mixed.log" remoting_to_grpc grpc_to_remoting
}

[[ ",$ONLY," == *",java4,"* ]] && run_java4
[[ ",$ONLY," == *",go,"* ]] && run_go
[[ ",$ONLY," == *",mixed,"* ]] && run_mixed
[[ ",$ONLY," == *",admin,"* ]] && run_admin
[[ ",$ONLY," == *",mqadmin,"* ]] && run_mqadmin

P=$(awk '$3 == "PASS"' "$FERROMQ_RESULTS_FILE" | wc -l)
F=$(awk '$3 == "FAIL"' "$FERROMQ_RESULTS_FILE" | wc -l)
S=$(awk '$3 == "SKIP"' "$FERROMQ_RESULTS_FILE" | wc -l)
log "results (client scenario verdict detail), logs in $LOGS:"
sort -s -k1,1 "$FERROMQ_RESULTS_FILE" | sed 's/^/    /' >&2
log "done in $(($(date +%s) - T0)) s"
echo "remoting: $P passed, $F failed, $S skipped"
((F == 0))
