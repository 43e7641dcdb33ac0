#!/usr/bin/env bash
# Authentication and authorization with the OFFICIAL RocketMQ 5 clients (Python rocketmq-python-client, Java
# rocketmq-client-java, Rust crate rocketmq) against `ferromq standalone --auth` on loopback.
#
# Each client, as a normal user whose policy allows publish/subscribe on topic:authok-* and subscribe on
# group:authg-*, with a deny of publish on topic:authok-denied-*:
#   auth_right_credentials  sends 3 messages to its authok topic and receives and acks them
#   auth_wrong_secret / auth_unknown_user / auth_no_credentials   refused with UNAUTHORIZED (40100)
#   auth_forbidden_topic    a topic no entry covers: FORBIDDEN (40300)
#   auth_deny_beats_allow   authok-denied-* (the allow prefix matches too): FORBIDDEN
#   auth_forbidden_group    receiving with a group no entry covers: FORBIDDEN
# Python also signs QueryRoute by hand through the package's gRPC stubs: a fresh header passes, one 10 minutes
# old (replay) or ahead, a malformed one and an 8 KB one are refused with 40100.
# Then this script checks that refused calls stored nothing (each authok topic holds exactly the 3 messages
# sent with right credentials, the denied and other topics none) and that the admin CLI is refused without
# credentials (UNAUTHENTICATED) and for a normal user on user management (PERMISSION_DENIED).
#
# The classic remoting port of the same server (`remoting`): the 4.x Java client (rocketmq-client
# 4.9.8) signing with rocketmq-acl's AclClientRPCHook sends 3 messages and consumes them with a push
# consumer; a wrong secret, an unknown user, no credentials, a topic no entry covers and the denied
# topic are refused (NO_PERMISSION); the topics then hold exactly the 3 messages.
#
# Then a replicated broker group with --auth (`replicated`, real processes: 3 name servers with the
# replication controller, 3 members sharing the bootstrap super user, a proxy; about a minute):
# a user and its ACL created through the proxy (on the leader) send and consume after the leader is
# killed with -9 (acknowledged messages counted: lost, duplicated, unexpected), a wrong secret is
# refused, a follower refuses an unauthenticated admin call before it says who leads, and a user
# deleted after the failover is refused through the new leader, is gone from the restarted old
# leader's copy, and is still refused after a second leader kill.
#
#   tests/suites/35-auth.sh [--only python,java,rust,remoting,replicated]
#
# FERROMQ_BIN=PATH runs that binary instead of building the release one.
#
# Uses the same caches as suite 30 (venv, Maven repository, Rust client build under $FERROMQ_TEST_CACHE/clients).
# Prints `auth: N passed, M failed, K skipped` and exits non-zero if any check failed.
set -uo pipefail
ROOT="${FERROMQ_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}"
export FERROMQ_ROOT="$ROOT"
export FERROMQ_TEST_CACHE="${FERROMQ_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ferromq-tests}"

ONLY="python,java,rust,remoting,replicated"
while (($#)); do
  case "$1" in
    --only) ONLY="$2"; shift 2 ;;
    *) echo "usage: $0 [--only python,java,rust,remoting,replicated]" >&2; exit 2 ;;
  esac
done

# shellcheck source=../clients/lib.sh
source "$ROOT/tests/clients/lib.sh"
AUTH_SCENARIOS=(auth_right_credentials auth_wrong_secret auth_unknown_user auth_no_credentials auth_forbidden_topic
                auth_deny_beats_allow auth_forbidden_group)
PY_RAW_SCENARIOS=(auth_signed_by_hand auth_replayed_header auth_future_header auth_malformed_header auth_huge_header)

T0=$(date +%s)
WORK="$(mktemp -d "${TMPDIR:-/tmp}/ferromq-auth.XXXXXX")"
export FERROMQ_CLIENT_LOGS="$WORK/logs"
mkdir -p "$WORK/data" "$WORK/logs"
export FERROMQ_RESULTS_FILE="$WORK/logs/results.txt"
: > "$FERROMQ_RESULTS_FILE"
SERVER_PID=""
REPL_PIDS=()

result() { echo "$1 $2 $3 ${4:-}" >> "$FERROMQ_RESULTS_FILE"; echo "SCENARIO $1 $2 $3 ${4:-}" >&2; }

finish() {
  local rc=$1 pid
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null
  fi
  for pid in "${REPL_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${REPL_PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  print_results_table
  local p f s
  p=$(awk '$3 == "PASS"' "$FERROMQ_RESULTS_FILE" | wc -l)
  f=$(awk '$3 == "FAIL"' "$FERROMQ_RESULTS_FILE" | wc -l)
  s=$(awk '$3 == "SKIP"' "$FERROMQ_RESULTS_FILE" | wc -l)
  ((f > 0)) && rc=1
  if ((rc != 0)); then
    log "server log (last 30 lines of $WORK/logs/ferromq.log):"
    tail -30 "$WORK/logs/ferromq.log" 2>/dev/null | sed 's/^/    /' >&2
    log "kept $WORK for inspection"
  else
    rm -rf "$WORK"
  fi
  log "took $(($(date +%s) - T0)) s"
  echo "auth: $p passed, $f failed, $s skipped"
  exit "$rc"
}

if [[ -n "${FERROMQ_BIN:-}" ]]; then
  FERROMQ="$FERROMQ_BIN"
  log "using $FERROMQ"
else
  need cargo
  log "building ferromq (cargo build --release -p ferromq)"
  if ! (cd "$ROOT" && cargo build --release -p ferromq -q) > "$WORK/logs/build-ferromq.log" 2>&1; then
    tail -30 "$WORK/logs/build-ferromq.log" >&2
    result server build FAIL "cargo build --release -p ferromq failed"
    finish 1
  fi
  FERROMQ="${CARGO_TARGET_DIR:-$ROOT/target}/release/ferromq"
fi

# Secrets live in files (mode 0600), never on a command line.
umask 077
printf 'admin-secret-%s\n' "$RANDOM$RANDOM" > "$WORK/admin.secret"
APP_SECRET="app-secret-$RANDOM$RANDOM"
printf '%s\n' "$APP_SECRET" > "$WORK/app.secret"
umask 022

GRPC_PORT=$(free_port)
HTTP_PORT=$(free_port)
while [[ "$HTTP_PORT" == "$GRPC_PORT" ]]; do HTTP_PORT=$(free_port); done
REMOTING_PORT=$(free_port)
while [[ "$REMOTING_PORT" == "$GRPC_PORT" || "$REMOTING_PORT" == "$HTTP_PORT" ]]; do REMOTING_PORT=$(free_port); done
log "starting ferromq standalone --auth (gRPC 127.0.0.1:$GRPC_PORT, HTTP 127.0.0.1:$HTTP_PORT)"
RUST_LOG="${RUST_LOG:-info}" FERROMQ_SEGMENT_SIZE=64MiB "$FERROMQ" standalone --data-dir "$WORK/data" \
  --grpc-addr "127.0.0.1:$GRPC_PORT" --http-addr "127.0.0.1:$HTTP_PORT" --remoting-addr "127.0.0.1:$REMOTING_PORT" \
  --auth --auth-super-user admin --auth-super-secret-file "$WORK/admin.secret" > "$WORK/logs/ferromq.log" 2>&1 &
SERVER_PID=$!
ready=0
for ((i = 0; i < 120; i++)); do
  kill -0 "$SERVER_PID" 2>/dev/null || break
  if python3 -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:$HTTP_PORT/readyz', timeout=1).status == 200 else 1)" 2>/dev/null; then
    ready=1; break
  fi
  sleep 0.25
done
if ((!ready)); then
  result server startup FAIL "ferromq standalone --auth did not answer /readyz"
  finish 1
fi

# The admin CLI as the super user, as nobody, and as the normal user.
admin() { FERROMQ_ACCESS_KEY=admin FERROMQ_SECRET_FILE="$WORK/admin.secret" "$FERROMQ" admin --server "127.0.0.1:$GRPC_PORT" "$@"; }
anonymous() { env -u FERROMQ_ACCESS_KEY -u FERROMQ_SECRET_FILE -u FERROMQ_SECRET_KEY "$FERROMQ" admin --server "127.0.0.1:$GRPC_PORT" "$@"; }
as_app() { "$FERROMQ" admin --server "127.0.0.1:$GRPC_PORT" --access-key app --secret-file "$WORK/app.secret" "$@"; }

setup_ok=1
{
  admin user create app --user-secret-file "$WORK/app.secret" &&
  admin acl create --user app --resource 'topic:authok-*' --actions publish,subscribe &&
  admin acl create --user app --resource 'topic:authok-denied-*' --actions publish --effect deny &&
  admin acl create --user app --resource 'group:authg-*' --actions subscribe
} >> "$WORK/logs/admin.log" 2>&1 || setup_ok=0
if ((!setup_ok)); then
  result server setup FAIL "creating the user and its ACL failed: $(tail -1 "$WORK/logs/admin.log")"
  finish 1
fi

# Admin API refusals (they must change nothing: the topic must not exist afterwards).
out="$(anonymous topic create auth-anonymous 2>&1)" && result cli admin_without_credentials FAIL "accepted" \
  || { [[ "$out" == *"authentication is required"* ]] && result cli admin_without_credentials PASS \
       || result cli admin_without_credentials FAIL "$out"; }
out="$(as_app user list 2>&1)" && result cli admin_normal_user_manages_users FAIL "accepted" \
  || { [[ "$out" == *"only super users"* ]] && result cli admin_normal_user_manages_users PASS \
       || result cli admin_normal_user_manages_users FAIL "$out"; }
out="$(as_app topic create authok-by-app 2>&1)" && result cli admin_normal_user_creates_topic FAIL "accepted" \
  || { [[ "$out" == *"may not create topic:authok-by-app"* ]] && result cli admin_normal_user_creates_topic PASS \
       || result cli admin_normal_user_creates_topic FAIL "$out"; }
if admin topic describe auth-anonymous >/dev/null 2>&1 || admin topic describe authok-by-app >/dev/null 2>&1; then
  result cli admin_refusals_change_nothing FAIL "a refused topic create created the topic"
else
  result cli admin_refusals_change_nothing PASS
fi

export FERROMQ_ENDPOINT="127.0.0.1:$GRPC_PORT" FERROMQ_AUTH_AK=app FERROMQ_AUTH_SK="$APP_SECRET"
run_auth_python() { timeout 300 "$VENV/bin/python" "$ROOT/tests/clients/auth/auth_python.py" 2>&1; }
run_auth_java() {
  timeout 300 java -Xmx128m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    -Drocketmq.log.root="$FERROMQ_CLIENT_LOGS/java-client" -Dmq.consoleAppender.enabled=false \
    -cp "$JT/classes:$JT/lib/*" io.ferromq.tests.Auth 2>&1
}
# The Rust client's build directory is shared by every checkout on the machine, and cargo fingerprints
# the client crate by its path relative to the checkout: after another checkout's suite 30 built there,
# this checkout's sources count as built. Cleaning the crate's own artifacts (its dependencies stay)
# forces a build of this checkout's client; the suite runs a copy taken right after.
run_auth_rust() { FERROMQ_MODE=auth timeout 300 "$WORK/ferromq-client-tests-rust" 2>&1; }

[[ ",$ONLY," == *",python,"* || ",$ONLY," == *",java,"* || ",$ONLY," == *",rust,"* ]] &&
  JT="$(java_target)"
for client in python java rust; do
  [[ ",$ONLY," == *",$client,"* ]] || continue
  if [[ $client == rust ]]; then
    (cd "$ROOT/tests/clients/rust" && CARGO_TARGET_DIR="$CLIENTS_TARGET" cargo clean --release -q \
      -p ferromq-client-tests-rust) 2>/dev/null
  fi
  if ! { "build_$client" && { [[ $client != rust ]] || cp "$CLIENTS_TARGET/release/ferromq-client-tests-rust" "$WORK/"; }; } \
      > "$WORK/logs/build-$client.log" 2>&1; then
    log "$client: BUILD FAILED (see $WORK/logs/build-$client.log)"
    tail -20 "$WORK/logs/build-$client.log" >&2
    for s in "${AUTH_SCENARIOS[@]}"; do result "$client" "$s" FAIL "client build failed"; done
    continue
  fi
  for t in "authok-$client" "authok-denied-$client" "authother-$client"; do
    admin topic create "$t" --queues 2 >> "$WORK/logs/admin.log" 2>&1 || log "topic create $t failed"
  done
  export FERROMQ_AUTH_TOPIC_OK="authok-$client" FERROMQ_AUTH_TOPIC_DENIED="authok-denied-$client" \
    FERROMQ_AUTH_TOPIC_OTHER="authother-$client" FERROMQ_AUTH_GROUP_OK="authg-$client" FERROMQ_AUTH_GROUP_OTHER="other-$client"
  log "$client: running the auth scenarios"
  "run_auth_$client" > "$WORK/logs/run-$client.log" 2>&1
  grep '^SCENARIO' "$WORK/logs/run-$client.log" >&2 || true
  expected=("${AUTH_SCENARIOS[@]}")
  [[ "$client" == python ]] && expected+=("${PY_RAW_SCENARIOS[@]}")
  for s in "${expected[@]}"; do
    grep -q "^$client $s " "$FERROMQ_RESULTS_FILE" || result "$client" "$s" FAIL "not reported (see $WORK/logs/run-$client.log)"
  done
  # Refused calls stored nothing: only the right-credential messages are in the topics.
  for t in "authok-$client:3" "authok-denied-$client:0" "authother-$client:0"; do
    name="${t%%:*}" want="${t##*:}"
    got="$(admin -o json topic describe "$name" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin).get("total_messages", "?"))' 2>/dev/null)"
    if [[ "$got" == "$want" ]]; then
      result "$client" "stored_$name" PASS "$got messages"
    else
      result "$client" "stored_$name" FAIL "$got messages (want $want)"
    fi
  done
done

# --- The remoting port, with the 4.x Java client's ACL hook ----------------------------------------
REMOTING_SCENARIOS=(auth_right_credentials auth_wrong_secret auth_unknown_user auth_no_credentials
                    auth_forbidden_topic auth_deny_beats_allow)
if [[ ",$ONLY," == *",remoting,"* ]]; then
  RT="$WORK/remoting-java-target"
  if ! { ensure_tool java openjdk-17-jdk-headless && ensure_tool mvn maven &&
         (cd "$ROOT/tests/clients/remoting/java" && mvn -B -q -Dmaven.repo.local="$M2_REPO" \
            -DbuildDirectory="$RT" package -DskipTests); } > "$WORK/logs/build-remoting.log" 2>&1; then
    log "remoting: BUILD FAILED (see $WORK/logs/build-remoting.log)"
    tail -20 "$WORK/logs/build-remoting.log" >&2
    for s in "${REMOTING_SCENARIOS[@]}"; do result remoting "$s" FAIL "client build failed"; done
  else
    for t in authok-remoting authok-denied-remoting authother-remoting; do
      admin topic create "$t" --queues 2 >> "$WORK/logs/admin.log" 2>&1 || log "topic create $t failed"
    done
    log "remoting: running the auth scenarios (rocketmq-client 4.9.8 + rocketmq-acl)"
    FERROMQ_NAMESRV="127.0.0.1:$REMOTING_PORT" FERROMQ_AUTH_AK=app FERROMQ_AUTH_SK="$APP_SECRET" \
      FERROMQ_AUTH_TOPIC_OK=authok-remoting FERROMQ_AUTH_TOPIC_DENIED=authok-denied-remoting \
      FERROMQ_AUTH_TOPIC_OTHER=authother-remoting FERROMQ_AUTH_GROUP_OK=authg-remoting \
      timeout 300 java -Xmx128m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
        -Drocketmq.client.logRoot="$FERROMQ_CLIENT_LOGS/remoting-client" -Drocketmq.client.logUseSlf4j=false \
        -cp "$RT/classes:$RT/lib/*" io.ferromq.tests.remoting.Acl4x > "$WORK/logs/run-remoting.log" 2>&1
    grep '^SCENARIO' "$WORK/logs/run-remoting.log" >&2 || true
    for s in "${REMOTING_SCENARIOS[@]}"; do
      grep -q "^remoting $s " "$FERROMQ_RESULTS_FILE" || result remoting "$s" FAIL "not reported (see $WORK/logs/run-remoting.log)"
    done
    for t in "authok-remoting:3" "authok-denied-remoting:0" "authother-remoting:0"; do
      name="${t%%:*}" want="${t##*:}"
      got="$(admin -o json topic describe "$name" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin).get("total_messages", "?"))' 2>/dev/null)"
      if [[ "$got" == "$want" ]]; then
        result remoting "stored_$name" PASS "$got messages"
      else
        result remoting "stored_$name" FAIL "$got messages (want $want)"
      fi
    done
  fi
fi

# --- A replicated broker group with --auth --------------------------------------------------------
R="$WORK/repl"
# NAME ARGS...: starts `ferromq ARGS` in the background, its output in $R/NAME.log (appended).
rstart() {
  local name=$1; shift
  RUST_LOG=info "$FERROMQ" "$@" >> "$R/$name.log" 2>&1 &
  RPID[$name]=$!
  REPL_PIDS+=("$!")
}
# NAME METRIC: a gauge from a process's /metrics, empty when it does not answer.
gauge() {
  python3 - "${RHTTP[$1]}" "$2" <<'PY' 2>/dev/null
import sys, urllib.request
text = urllib.request.urlopen(f"http://{sys.argv[1]}/metrics", timeout=1).read().decode()
for line in text.splitlines():
    if line.startswith(sys.argv[2] + "{") or line.startswith(sys.argv[2] + " "):
        print(line.rsplit(" ", 1)[1]); break
PY
}
# The member that leads, other than $1 (if given); waits up to 30 s.
leader_other_than() {
  local m t
  for ((t = 0; t < 120; t++)); do
    for m in m1 m2 m3; do
      [[ "$m" == "${1:-}" ]] && continue
      kill -0 "${RPID[$m]}" 2>/dev/null || continue
      [[ "$(gauge "$m" ferromq_replication_leader)" == 1 ]] && { echo "$m"; return 0; }
    done
    sleep 0.25
  done
  return 1
}
member_args() { # member_args ID
  echo broker --group ag --replica-id "$1" --nameservers "$NS" --addr "127.0.0.1:${RPORT[m$1]}" \
    --http-addr "${RHTTP[m$1]}" --segment-size 64MiB --data-dir "$R/m$1" \
    --auth --auth-super-user admin --auth-super-secret-file "$WORK/admin.secret"
}

# PREFIX: sends PREFIX-1..20 as rapp, one at a time, each retried for up to 10 s (routes settling,
# a failover); the bodies acknowledged go to $R/acked.txt.
send_each() {
  local i t
  for i in $(seq 1 20); do
    for ((t = 0; t < 20; t++)); do
      as_rapp send --body "$1-$i" >> "$R/acked.ids" 2>> "$R/send.log" && { echo "$1-$i" >> "$R/acked.txt"; break; }
      sleep 0.5
    done
  done
}

replicated_auth() {
  mkdir -p "$R"
  declare -gA RPID=() RPORT=() RHTTP=()
  local ports peers i name old new t out
  mapfile -t ports < <(python3 -c 'import socket
ss = [socket.socket() for _ in range(16)]
for s in ss: s.bind(("127.0.0.1", 0))
print("\n".join(str(s.getsockname()[1]) for s in ss))')
  i=0
  for name in ns1 ns2 ns3 m1 m2 m3 proxy; do
    RPORT[$name]=${ports[$i]}; RHTTP[$name]="127.0.0.1:${ports[$((i + 8))]}"; i=$((i + 1))
  done
  NS="127.0.0.1:${RPORT[ns1]},127.0.0.1:${RPORT[ns2]},127.0.0.1:${RPORT[ns3]}"
  PROXY="127.0.0.1:${RPORT[proxy]}"
  log "replicated: 3 name servers with the controller, group ag of 3 members with --auth, a proxy ($R)"
  for name in ns1 ns2 ns3; do
    rstart "$name" nameserver --addr "127.0.0.1:${RPORT[$name]}" --http-addr "${RHTTP[$name]}" \
      --broker-expiry 3s --controller-peers "$NS" --data-dir "$R/$name"
  done
  # shellcheck disable=SC2046
  for i in 1 2 3; do rstart "m$i" $(member_args "$i"); done
  rstart proxy proxy --nameservers "$NS" --grpc-addr "$PROXY" --http-addr "${RHTTP[proxy]}" \
    --route-refresh 500ms --remoting-addr off
  radmin() { FERROMQ_ACCESS_KEY=admin FERROMQ_SECRET_FILE="$WORK/admin.secret" "$FERROMQ" admin --server "$PROXY" "$@"; }
  as_rapp() { "$FERROMQ" "$1" --server "$PROXY" -t repl-orders --access-key rapp --secret-file "$WORK/rapp.secret" "${@:2}"; }

  old="$(leader_other_than)" || { result replicated leader FAIL "no leader within 30 s"; return; }
  # The leader writes the bootstrap super user through the group when its term starts.
  for ((t = 0; t < 120; t++)); do radmin user list > /dev/null 2>&1 && break; sleep 0.25; done
  umask 077; printf 'rapp-secret-%s\n' "$RANDOM$RANDOM" > "$WORK/rapp.secret"
  printf 'rapp-wrong-%s\n' "$RANDOM$RANDOM" > "$WORK/rapp.wrong"; umask 022
  if ! { radmin user create rapp --user-secret-file "$WORK/rapp.secret" &&
         radmin acl create --user rapp --resource 'topic:repl-*' --actions publish,subscribe &&
         radmin acl create --user rapp --resource 'group:repl-g' --actions subscribe &&
         radmin topic create repl-orders --queues 2; } >> "$R/admin.log" 2>&1; then
    result replicated setup FAIL "user, ACL or topic creation on the leader failed: $(tail -1 "$R/admin.log")"
    return
  fi
  : > "$R/acked.txt"
  send_each pre

  # Followers check credentials too: an anonymous admin call is refused before they say who leads.
  for name in m1 m2 m3; do
    [[ "$name" == "$old" ]] && continue
    out="$(env -u FERROMQ_ACCESS_KEY -u FERROMQ_SECRET_FILE -u FERROMQ_SECRET_KEY "$FERROMQ" admin \
      --server "127.0.0.1:${RPORT[$name]}" user list 2>&1)"
    if [[ "$out" == *"authentication is required"* ]]; then
      result replicated "follower_${name}_refuses_anonymous" PASS
    else
      result replicated "follower_${name}_refuses_anonymous" FAIL "$out"
    fi
    out="$(FERROMQ_ACCESS_KEY=admin FERROMQ_SECRET_FILE="$WORK/admin.secret" "$FERROMQ" admin \
      --server "127.0.0.1:${RPORT[$name]}" user list 2>&1)"
    [[ "$out" == *"follows"* ]] && result replicated "follower_${name}_names_the_leader" PASS \
      || result replicated "follower_${name}_names_the_leader" FAIL "$out"
  done

  log "replicated: kill -9 of the leader $old"
  kill -9 "${RPID[$old]}"; wait "${RPID[$old]}" 2>/dev/null
  new="$(leader_other_than "$old")" || { result replicated failover FAIL "no new leader within 30 s"; return; }
  result replicated failover PASS "$old -> $new"
  send_each post
  out="$("$FERROMQ" send --server "$PROXY" -t repl-orders --access-key rapp --secret-file "$WORK/rapp.wrong" --body wrong 2>&1)" \
    && result replicated wrong_secret_refused FAIL "accepted" \
    || { [[ "$out" == *UNAUTHORIZED* ]] && result replicated wrong_secret_refused PASS || result replicated wrong_secret_refused FAIL "$out"; }
  as_rapp consume -g repl-g --timeout 5s > "$R/consumed.txt" 2>> "$R/consume.log"
  counts="$(python3 - "$R/acked.txt" "$R/consumed.txt" <<'PY'
import collections, sys
acked = set(open(sys.argv[1]).read().split())
seen = collections.Counter(open(sys.argv[2]).read().split())
lost = len(acked - set(seen))
dup = sum(n - 1 for n in seen.values() if n > 1)
unexpected = len([b for b in seen if b not in acked])
print(f"acknowledged={len(acked)} lost={lost} duplicated={dup} unexpected={unexpected}")
PY
)"
  log "replicated: $counts (before and after the leader kill, as the user created before it)"
  [[ "$counts" == "acknowledged=40 lost=0 duplicated=0 unexpected=0" ]] \
    && result replicated user_survives_failover PASS "$counts" || result replicated user_survives_failover FAIL "$counts"

  radmin user delete rapp >> "$R/admin.log" 2>&1 || result replicated delete_after_failover FAIL "$(tail -1 "$R/admin.log")"
  out="$(as_rapp send --body after-delete 2>&1)" && result replicated deleted_user_refused FAIL "accepted" \
    || { [[ "$out" == *UNAUTHORIZED* ]] && result replicated deleted_user_refused PASS || result replicated deleted_user_refused FAIL "$out"; }

  if grep -q '"rapp"' "$R/$old/auth/auth.json" 2>/dev/null; then
    result replicated old_leader_held_the_user PASS
  else
    result replicated old_leader_held_the_user FAIL "$old's copy did not hold the user when it died"
  fi
  log "replicated: $old restarts (a follower now); its copy must lose the deleted user"
  # shellcheck disable=SC2046
  rstart "$old" $(member_args "${old#m}")
  for ((t = 0; t < 120; t++)); do
    [[ -f "$R/$old/auth/auth.json" ]] && ! grep -q '"rapp"' "$R/$old/auth/auth.json" && break
    sleep 0.25
  done
  if grep -q '"rapp"' "$R/$old/auth/auth.json" 2>/dev/null; then
    result replicated deleted_on_old_leader FAIL "$old still holds the user after 30 s"
  else
    result replicated deleted_on_old_leader PASS "after $((t / 4)) s"
  fi
  log "replicated: kill -9 of the leader $new"
  kill -9 "${RPID[$new]}"; wait "${RPID[$new]}" 2>/dev/null
  third="$(leader_other_than "$new")" || { result replicated second_failover FAIL "no leader within 30 s"; return; }
  for ((t = 0; t < 40; t++)); do
    FERROMQ_ACCESS_KEY=admin FERROMQ_SECRET_FILE="$WORK/admin.secret" "$FERROMQ" send --server "$PROXY" \
      -t repl-orders --body by-admin >/dev/null 2>&1 && break
    sleep 0.5
  done
  out="$(as_rapp send --body after-second-kill 2>&1)" && result replicated deleted_user_refused_after_second_failover FAIL "accepted (leader $third)" \
    || { [[ "$out" == *UNAUTHORIZED* ]] && result replicated deleted_user_refused_after_second_failover PASS "leader $third" \
         || result replicated deleted_user_refused_after_second_failover FAIL "$out"; }
  if grep -q "$(cat "$WORK/rapp.secret")" "$R"/*.log; then
    result replicated secrets_not_logged FAIL "the user's secret appears in a process log"
  else
    result replicated secrets_not_logged PASS
  fi
}

if [[ ",$ONLY," == *",replicated,"* ]]; then
  T1=$(date +%s)
  replicated_auth
  log "replicated part took $(($(date +%s) - T1)) s"
fi

refusals="$(python3 -c "import urllib.request; print(''.join(l for l in urllib.request.urlopen('http://127.0.0.1:$HTTP_PORT/metrics').read().decode().splitlines(True) if l.startswith('ferromq_auth_refusals_total')))" 2>/dev/null)"
log "refusals counted by the server: $(echo "$refusals" | tr '\n' ' ')"
if grep -q "$APP_SECRET" "$WORK/logs/ferromq.log" || grep -q "$(cat "$WORK/admin.secret")" "$WORK/logs/ferromq.log"; then
  result server secrets_not_logged FAIL "a secret appears in the server log"
else
  result server secrets_not_logged PASS
fi
finish 0
