#!/usr/bin/env bash
# Replication suite: replicated broker groups under faults (tests/chaos/replication_test.py):
# 3 name servers with the replication controller, 2 groups of 3 replicas, 2 proxies, the official
# Python, Java and Rust clients producing and consuming while leaders are killed, paused, cut off
# from their followers or from the controller, the controller's leader is killed and whole groups
# are killed at once. Reports acknowledged, lost, duplicated and unexpected messages and the
# failover gaps, for `sync` and then `async`, in all and per fault kind.
#
# As root (CI), each process runs in its own network namespace on a private bridge and partitions
# are iptables rules inside those namespaces (tests/cluster/netns.py); the trap below removes the
# namespaces and the bridge on every exit path. Not root (or FERROMQ_CHAOS_NETNS=0): loopback,
# without the partition faults.
#
# Short by default (each fault once per mode). FERROMQ_CHAOS_ROUNDS=N runs N rounds per mode
# (the full mode: FERROMQ_CHAOS_FULL=1 runs 70 rounds per mode with leader kills weighed double,
# at least 50 leader kills in all).
set -uo pipefail
ROOT="${FERROMQ_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}"
export FERROMQ_ROOT="$ROOT"
export FERROMQ_TEST_CACHE="${FERROMQ_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ferromq-tests}"
# shellcheck source=../clients/lib.sh
source "$ROOT/tests/clients/lib.sh"

T0=$(date +%s)
# As root the partition faults need iptables inside the namespaces; a fresh machine lacks it, and
# without it the run would fall back to loopback and skip those faults.
if [[ $(id -u) == 0 && "${FERROMQ_CHAOS_NETNS:-1}" != 0 ]]; then
  ensure_tool iptables iptables || die "iptables is needed for the partition faults (or set FERROMQ_CHAOS_NETNS=0)"
  ensure_tool ip iproute2 || die "ip is needed for the network namespaces (or set FERROMQ_CHAOS_NETNS=0)"
fi
log "building ferromq"
(cd "$ROOT" && cargo build -q --locked -p ferromq) || die "cargo build failed"
build_python || die "cannot install the Python client"
build_rust || die "cannot build the Rust client program"
RUN_DIR="$(mktemp -d /tmp/ferromq-chaos-run.XXXXXX)"
export FERROMQ_CLIENT_LOGS="$RUN_DIR/logs"  # java_target: this run's own build directory
build_java || die "cannot build the Java client program"
export FERROMQ_JAVA_CP="$(java_target)/classes:$(java_target)/lib/*"
export FERROMQ_NETNS_TAG="${FERROMQ_NETNS_TAG:-$(printf '%05x' $(($$ % 0xfffff)))}"
# Removes this run's network namespaces (ending what still runs in them) and its bridge.
cleanup_net() {
  [[ $(id -u) == 0 ]] && command -v ip >/dev/null || return 0
  local ns pid
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^fmq${FERROMQ_NETNS_TAG}-"); do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
  done
  ip link del "fmq${FERROMQ_NETNS_TAG}" 2>/dev/null
  return 0
}
trap 'cleanup_net; rm -rf "$RUN_DIR"' EXIT
trap 'exit 130' INT TERM
export FERROMQ_RUST_CLIENT="$CLIENTS_TARGET/release/ferromq-client-tests-rust"
export FERROMQ_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/ferromq"
if [[ "${FERROMQ_CHAOS_FULL:-0}" == 1 ]]; then
  export FERROMQ_CHAOS_ROUNDS="${FERROMQ_CHAOS_ROUNDS:-70}"
fi

failed=0
for mode in sync async; do
  WORK="$(mktemp -d /tmp/ferromq-chaos.XXXXXX)"
  log "mode $mode (work directory $WORK)"
  cleanup_net
  FERROMQ_CHAOS_MODE=$mode FERROMQ_CHAOS_WORK="$WORK" "$VENV/bin/python" "$ROOT/tests/chaos/replication_test.py"
  rc=$?
  if ((rc != 0)); then
    failed=$((failed + rc))
    log "process logs are in $WORK"
  else
    cp "$WORK/report.json" "/tmp/ferromq-chaos-$mode-report.json" 2>/dev/null
    rm -rf "$WORK"
  fi
done
log "replication suite took $(($(date +%s) - T0)) s"
exit "$failed"
