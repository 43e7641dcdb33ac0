# Shared by tests/suites/30-clients.sh (target: ferromq) and tests/clients/run-against-rocketmq.sh
# (reference: Apache RocketMQ). Sourced, not executed.
#
# Contract with the five client suites (python/, java/, rust/, go/, node/):
#   env FERROMQ_ENDPOINT          host:port of the gRPC MessagingService (plaintext)
#   env FERROMQ_TOPIC_{NORMAL,FILTER,RETRY,PUSH,PUSHRETRY}   fresh NORMAL topics (created up front)
#   env FERROMQ_TOPIC_FIFO        fresh FIFO topic
#   env FERROMQ_TOPIC_DELAY       fresh DELAY topic (scenarios delay and recall)
#   env FERROMQ_TOPIC_TX          fresh TRANSACTION topic
#   env FERROMQ_TOPIC_PRIORITY    fresh PRIORITY topic with ONE queue
#   env FERROMQ_TOPIC_MISSING     a name that is never created
#   env FERROMQ_GROUP_PREFIX      consumer groups are PREFIX_{normal,filter,sql,sqlbad,retry,fifo,dlq,dlqreader,push,pushretry,
#                                 delay,recall,tx,priority}; PREFIX_fifo is FIFO
#   env FERROMQ_SKIP_<SCENARIO>   set by a run script when its target cannot run a scenario: the reason (SKIP detail)
#   env FERROMQ_RESULTS_FILE      each suite appends one line per scenario: "<client> <scenario> PASS|FAIL|SKIP <detail>"
#   env FERROMQ_SCENARIOS         comma-separated scenarios to run (Python and Java; empty: all); give the others
#                                 a FERROMQ_SKIP_<SCENARIO> reason, or they are counted as failed
# The scenario names (SCENARIOS below) are the same in every client, so a failure points at a behaviour.

SCENARIOS=(send_receive_ack tag_filter sql_filter redelivery fifo_order dead_letter push_consume push_retry unknown_topic oversized_body
           delay recall transaction priority)

CLIENTS_HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CLIENTS_CACHE="$FERROMQ_TEST_CACHE/clients"
M2_REPO="$CLIENTS_CACHE/m2"
VENV="$CLIENTS_CACHE/venv"
CLIENTS_TARGET="$CLIENTS_CACHE/rust-target"
# Go module and build caches (shared with remoting/run.sh); npm's download cache and the installed
# node_modules of node/package-lock.json.
GO_CACHE="$CLIENTS_CACHE/go"
NODE_DIR="$CLIENTS_CACHE/node"
PY_CLIENT_VERSION="5.1.2"
export FERROMQ_DLQ_MAX_ATTEMPTS="${FERROMQ_DLQ_MAX_ATTEMPTS:-2}"
DLQ_MAX_ATTEMPTS="$FERROMQ_DLQ_MAX_ATTEMPTS"
mkdir -p "$CLIENTS_CACHE"

log() { echo "[clients $(date +%H:%M:%S)] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
need() { command -v "$1" >/dev/null || die "$1 is required"; }

# ensure_tool CMD DEBIAN_PACKAGE: install a missing tool from Debian when we are root (fresh machines).
ensure_tool() {
  command -v "$1" >/dev/null && return 0
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    log "installing $2 (for $1)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2"; } >/dev/null 2>&1
  fi
  command -v "$1" >/dev/null || { log "$1 is required (Debian package $2)"; return 1; }
}

wait_port() { # wait_port PORT SECONDS
  local port="$1" secs="$2" i
  for ((i = 0; i < secs * 4; i++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.25
  done
  return 1
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# --- building the three suites (each installs what it needs on a fresh machine) ---

build_python() {
  ensure_tool python3 python3 || return 1
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null && [[ $(id -u) == 0 ]]; then
    log "installing python3-venv"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; } >/dev/null 2>&1
  fi
  if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c "import rocketmq, pytest" 2>/dev/null; then
    log "python: creating venv $VENV with rocketmq-python-client==$PY_CLIENT_VERSION"
    python3 -m venv "$VENV" || return 1
    "$VENV/bin/pip" install -q -r "$CLIENTS_HERE/python/requirements.txt" || return 1
  fi
}

# Per-run build directory: two runs sharing one (e.g. a developer's run beside tests/run) would rebuild
# each other's classes mid-run. Maven's downloads stay shared in $M2_REPO.
java_target() { echo "$(dirname "${FERROMQ_CLIENT_LOGS:-/tmp/x}")/java-target"; }

build_java() {
  ensure_tool java openjdk-17-jdk-headless && ensure_tool mvn maven || return 1
  log "java: mvn package (local repo $M2_REPO)"
  (cd "$CLIENTS_HERE/java" && mvn -B -q -Dmaven.repo.local="$M2_REPO" \
      -DbuildDirectory="$(java_target)" package -DskipTests) || return 1
}

build_rust() {
  need cargo || return 1
  log "rust: cargo build --release (target $CLIENTS_TARGET)"
  (cd "$CLIENTS_HERE/rust" && CARGO_TARGET_DIR="$CLIENTS_TARGET" cargo build --release --locked -q) || return 1
}

go_env() {
  env GOPATH="$GO_CACHE/path" GOMODCACHE="$GO_CACHE/mod" GOCACHE="$GO_CACHE/build" GOFLAGS=-mod=mod "$@"
}

# Per-run binary, like the Java classes; the module and build caches make a rebuild take seconds.
go_binary() { echo "$(dirname "${FERROMQ_CLIENT_LOGS:-/tmp/x}")/ferromq-client-tests-go"; }

build_go() {
  ensure_tool go golang-go || return 1
  log "go: go build (module cache $GO_CACHE)"
  (cd "$CLIENTS_HERE/go" && go_env go build -o "$(go_binary)" .) || return 1
}

# npm ci into the cache when the lock file changed since the last install.
build_node() {
  ensure_tool node nodejs && ensure_tool npm npm || return 1
  mkdir -p "$NODE_DIR"
  if ! cmp -s "$CLIENTS_HERE/node/package-lock.json" "$NODE_DIR/package-lock.json" \
      || [[ ! -d "$NODE_DIR/node_modules/rocketmq-client-nodejs" ]]; then
    log "node: npm ci in $NODE_DIR"
    cp "$CLIENTS_HERE/node/package.json" "$CLIENTS_HERE/node/package-lock.json" "$NODE_DIR/" || return 1
    (cd "$NODE_DIR" && npm ci --no-audit --no-fund --cache "$CLIENTS_CACHE/npm-cache") || return 1
  fi
}

run_go() {
  # The Go client reads its log root from this (dotted) environment variable.
  timeout 600 env "rocketmq.client.logRoot=${FERROMQ_CLIENT_LOGS:-/tmp}/go-client" "$(go_binary)" 2>&1
}

run_node() {
  (cd "$CLIENTS_HERE/node" && NODE_PATH="$NODE_DIR/node_modules" timeout 600 node scenarios.js 2>&1)
}

run_python() {
  local select=()
  [[ -n "${FERROMQ_SCENARIOS:-}" ]] && select=(-k "${FERROMQ_SCENARIOS//,/ or }")
  (cd "$CLIENTS_HERE/python" && timeout 600 "$VENV/bin/python" -m pytest -q -p no:cacheprovider \
      -o log_cli=false "${select[@]}" scenarios_test.py 2>&1)
}

run_java() {
  local cp; cp="$(java_target)/classes:$(java_target)/lib/*"
  timeout 600 java -Xmx128m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    -Drocketmq.log.root="${FERROMQ_CLIENT_LOGS:-/tmp}/java-client" -Dmq.consoleAppender.enabled=false \
    -cp "$cp" io.ferromq.tests.Scenarios 2>&1
}

run_rust() {
  timeout 600 "$CLIENTS_TARGET/release/ferromq-client-tests-rust" 2>&1
}

# --- topics, groups, running, counting ---

# Needs callbacks from the caller: create_topic NAME normal|fifo|delay|transaction|priority QUEUES, create_fifo_group NAME,
# create_dlq_group NAME MAX_DELIVERY_ATTEMPTS.
# run_client_suite CLIENT RUN_ID: builds one client, creates its own topics and groups (named
# after RUN_ID and the client, so clients never share one), and runs its scenarios.
run_client_suite() {
  local client="$1" p="${2}_${1:0:2}"
  if ! "build_$client" > "${FERROMQ_CLIENT_LOGS:-/tmp}/build-$client.log" 2>&1; then
    log "$client: BUILD FAILED (see ${FERROMQ_CLIENT_LOGS:-/tmp}/build-$client.log)"
    tail -30 "${FERROMQ_CLIENT_LOGS:-/tmp}/build-$client.log" >&2
    mark_missing "$client" "build failed"
    return 1
  fi
  local ok=1 t
  for t in normal filter retry push pushretry dlq; do create_topic "${p}_$t" normal 4 || ok=0; done
  create_topic "${p}_fifo" fifo 2 || ok=0
  create_topic "${p}_delay" delay 2 || ok=0
  create_topic "${p}_tx" transaction 2 || ok=0
  create_topic "${p}_priority" priority 1 || ok=0   # one queue: priority order holds within a queue
  create_fifo_group "${p}_g_fifo" || ok=0
  create_dlq_group "${p}_g_dlq" "$DLQ_MAX_ATTEMPTS" || ok=0
  if ((!ok)); then log "$client: topic creation failed"; fi
  export FERROMQ_TOPIC_NORMAL="${p}_normal" FERROMQ_TOPIC_FILTER="${p}_filter" \
    FERROMQ_TOPIC_RETRY="${p}_retry" FERROMQ_TOPIC_PUSH="${p}_push" FERROMQ_TOPIC_PUSHRETRY="${p}_pushretry" FERROMQ_TOPIC_DLQ="${p}_dlq" FERROMQ_TOPIC_FIFO="${p}_fifo" \
    FERROMQ_TOPIC_DELAY="${p}_delay" FERROMQ_TOPIC_TX="${p}_tx" FERROMQ_TOPIC_PRIORITY="${p}_priority" \
    FERROMQ_TOPIC_MISSING="${p}_missing" FERROMQ_GROUP_PREFIX="${p}_g"
  local t0 t1
  t0=$(date +%s)
  log "$client: running scenarios against $FERROMQ_ENDPOINT (topics ${p}_*)"
  "run_$client" > "${FERROMQ_CLIENT_LOGS:-/tmp}/run-$client.log" 2>&1
  local code=$?
  t1=$(date +%s)
  grep -E '^(SCENARIO|  )' "${FERROMQ_CLIENT_LOGS:-/tmp}/run-$client.log" >&2 || true
  mark_missing "$client" "suite ended (exit $code) before reporting this scenario"
  log "$client: exit $code in $((t1 - t0)) s (full output: ${FERROMQ_CLIENT_LOGS:-/tmp}/run-$client.log)"
  return $((code != 0))
}

# The clients run in two lanes side by side (most of a scenario's time is waiting: long polls,
# invisible times, delays), each client on its own topics; FERROMQ_CLIENT_LANES=1 runs them one
# after another. The lanes hold about the same time of scenarios each.
CLIENT_LANES=("python rust node" "java go")

prepare_and_run_suites() {
  local only="$1" client run_id rc=0 lane
  run_id="c$(date +%s | tail -c 6)$RANDOM"
  export FERROMQ_RESULTS_FILE="${FERROMQ_CLIENT_LOGS:-/tmp}/results.txt"
  : > "$FERROMQ_RESULTS_FILE"
  local lanes=("${CLIENT_LANES[@]}")
  if [[ "${FERROMQ_CLIENT_LANES:-2}" == 1 ]]; then lanes=("${CLIENT_LANES[*]}"); fi
  local pids=()
  for lane in "${lanes[@]}"; do
    (
      lane_rc=0
      for client in $lane; do
        [[ ",$only," == *",$client,"* ]] || continue
        run_client_suite "$client" "$run_id" || lane_rc=1
      done
      exit $lane_rc
    ) &
    pids+=("$!")
  done
  local pid
  for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
  if awk '$3 == "FAIL" {f = 1} END {exit !f}' "$FERROMQ_RESULTS_FILE"; then rc=1; fi
  return $rc
}

# known_skip CLIENT SCENARIO: prints why the client or the target cannot run the scenario (nothing if it can).
# Keep the client texts in step with the suites (rust/src/main.rs reports the same reasons).
known_skip() {
  local var="FERROMQ_SKIP_${2^^}"
  if [[ -n "${!var:-}" ]]; then echo "${!var}"; return; fi
  case "$1 $2" in
    "rust push_consume" | "rust push_retry") echo "no PushConsumer in the rocketmq crate 5.0.0" ;;
    "rust recall") echo "the rocketmq crate 5.0.0 has no RecallMessage (its send receipt carries no recall handle)" ;;
    "rust priority") echo "the rocketmq crate 5.0.0 cannot send PRIORITY messages (no priority setter, no SystemProperties.priority)" ;;
  esac
}

mark_missing() { # mark_missing CLIENT REASON: every scenario the client did not report counts as failed
  local client="$1" reason="$2" s why
  for s in "${SCENARIOS[@]}"; do
    if ! grep -q "^$client $s " "$FERROMQ_RESULTS_FILE"; then
      why="$(known_skip "$client" "$s")"
      if [[ -n "$why" ]]; then
        echo "$client $s SKIP $why" >> "$FERROMQ_RESULTS_FILE"
      else
        echo "$client $s FAIL $reason" >> "$FERROMQ_RESULTS_FILE"
      fi
    fi
  done
}

summary_line() {
  local p f s
  p=$(awk '$3 == "PASS"' "$FERROMQ_RESULTS_FILE" | wc -l)
  f=$(awk '$3 == "FAIL"' "$FERROMQ_RESULTS_FILE" | wc -l)
  s=$(awk '$3 == "SKIP"' "$FERROMQ_RESULTS_FILE" | wc -l)
  echo "clients: $p passed, $f failed, $s skipped"
}

print_results_table() {
  log "results (client scenario verdict detail):"
  sort -s -k1,1 "$FERROMQ_RESULTS_FILE" | sed 's/^/    /' >&2
}
