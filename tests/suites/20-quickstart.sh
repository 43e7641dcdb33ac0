#!/usr/bin/env bash
# Runs the README's "Quick start" exactly as written: the commands of its build, server and
# client blocks (read from README.md, never copied here), checks the consumer printed what the
# README says it prints, then runs its Java and Python snippets with the official clients
# against the same server.
#
# The quick start uses the default ports (8081, 9090). So that it can run beside anything else
# on the machine, the suite runs it in a private network namespace with its own loopback
# (`unshare`, as root); without that it runs directly and needs both ports free.
#
# Installs what it needs on a fresh machine through tests/clients/lib.sh: the Python venv with
# rocketmq-python-client and the Java client's jars (Maven), cached under $FERROMQ_TEST_CACHE.
set -uo pipefail
ROOT="${FERROMQ_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}"
export FERROMQ_ROOT="$ROOT"
export FERROMQ_TEST_CACHE="${FERROMQ_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ferromq-tests}"
# shellcheck source=../clients/lib.sh
source "$ROOT/tests/clients/lib.sh"

WORK="$(mktemp -d /tmp/ferromq-quickstart.XXXXXX)"
export FERROMQ_CLIENT_LOGS="$WORK/logs"
mkdir -p "$WORK/logs" "$WORK/run" "$WORK/java"

fail() {
  log "quickstart: FAIL: $*"
  for f in "$WORK"/logs/*.log "$WORK"/run/*.out; do
    [[ -s "$f" ]] || continue
    log "--- $f (last 20 lines)"
    tail -20 "$f" | sed 's/^/    /' >&2
  done
  log "kept $WORK"
  exit 1
}

# block NAME: the lines of the first fenced code block after `<!-- quick-start:NAME -->`.
block() {
  awk -v marker="<!-- quick-start:$1 -->" '
    $0 == marker { found = 1; next }
    found && /^```/ { if (inside) exit; inside = 1; next }
    found && inside { print }
  ' "$ROOT/README.md"
}

for name in build server client java python; do
  block "$name" > "$WORK/$name.block"
  [[ -s "$WORK/$name.block" ]] || fail "README.md has no quick-start:$name block"
done
cp "$WORK/java.block" "$WORK/java/QuickStart.java"
expected="$(sed -n 's/^# prints: //p' "$WORK/client.block")"
[[ -n "$expected" ]] || fail "the client block does not say what it prints (# prints: ...)"

# Downloads and builds happen out here (the namespace has no network).
log "quickstart: building ferromq and the clients"
(cd "$ROOT" && cargo build --release -p ferromq -q) > "$WORK/logs/build-ferromq.log" 2>&1 ||
  fail "cargo build --release -p ferromq"
build_python > "$WORK/logs/build-python.log" 2>&1 || fail "python client install"
build_java > "$WORK/logs/build-java.log" 2>&1 || fail "java client build"

# What runs inside the namespace: the blocks, in a fresh directory, as a reader would.
cat > "$WORK/inner.sh" <<EOF
set -uo pipefail
ip link set lo up 2>/dev/null || true
cd "$ROOT"
export CARGO_NET_OFFLINE=true
source "$WORK/build.block" > "$WORK/logs/readme-build.log" 2>&1 || { echo "build block failed"; exit 1; }
cd "$WORK/run"
bash "$WORK/server.block" > "$WORK/logs/server.log" 2>&1 &
server=\$!
for ((i = 0; i < 120; i++)); do
  (exec 3<>/dev/tcp/127.0.0.1/8081) 2>/dev/null && break
  sleep 0.25
done
rc=0
timeout 120 bash -e "$WORK/client.block" > "$WORK/run/client.out" 2> "$WORK/logs/client.log" || { echo "client block failed"; rc=1; }
(cd "$WORK/java" && timeout 300 java -Xmx256m -Drocketmq.log.root="$WORK/logs/java-client" \
  -cp "$(java_target)/lib/*" QuickStart.java) > "$WORK/run/java.out" 2> "$WORK/logs/java.log" || { echo "java snippet failed"; rc=1; }
timeout 300 "$VENV/bin/python" "$WORK/python.block" > "$WORK/run/python.out" 2> "$WORK/logs/python.log" || { echo "python snippet failed"; rc=1; }
# SIGTERM to ferromq (the child of the shell running the server block): a clean stop exits 0.
pkill -TERM -P \$server
wait \$server || { echo "the server did not exit cleanly"; rc=1; }
exit \$rc
EOF

log "quickstart: running the README's quick start"
if [[ $(id -u) == 0 ]] && command -v unshare >/dev/null && unshare --net --fork --pid --mount-proc true 2>/dev/null; then
  unshare --net --fork --pid --mount-proc bash "$WORK/inner.sh" > "$WORK/logs/inner.log" 2>&1 || fail "$(cat "$WORK/logs/inner.log")"
else
  log "quickstart: no network namespace (not root or no unshare); running on the machine's loopback"
  bash "$WORK/inner.sh" > "$WORK/logs/inner.log" 2>&1 || fail "$(cat "$WORK/logs/inner.log")"
fi

grep -Fxq "$expected" "$WORK/run/client.out" || fail "ferromq consume printed $(cat "$WORK/run/client.out"), not \"$expected\""
grep -q '^sent ' "$WORK/run/java.out" || fail "the Java snippet sent nothing"
grep -Fxq "got hello from Java" "$WORK/run/java.out" || fail "the Java snippet did not receive its message"
grep -q '^sent ' "$WORK/run/python.out" || fail "the Python snippet sent nothing"
grep -Fxq "got hello from Python" "$WORK/run/python.out" || fail "the Python snippet did not receive its message"
log "quickstart: consume printed \"$expected\"; Java and Python snippets sent and received"
rm -rf "$WORK"
echo "quickstart: passed"
