#!/usr/bin/env bash
# Replication suite: replicated broker groups under faults (tests/chaos/replication_test.py):
# 3 name servers with the replication controller, 2 groups of 3 replicas, 2 proxies, the official
# Python and Rust clients producing and consuming while leaders are killed, paused, the
# controller's leader is killed and whole groups are killed at once. Reports acknowledged, lost,
# duplicated and unexpected messages and the failover gaps, for `sync` and then `async`.
#
# Short by default (each fault once per mode). FERROMQ_CHAOS_ROUNDS=N runs N rounds per mode
# (the full mode: FERROMQ_CHAOS_FULL=1 runs 60 rounds per mode, at least 50 leader kills in all).
set -uo pipefail
ROOT="${FERROMQ_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}"
export FERROMQ_ROOT="$ROOT"
export FERROMQ_TEST_CACHE="${FERROMQ_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ferromq-tests}"
# shellcheck source=../clients/lib.sh
source "$ROOT/tests/clients/lib.sh"

T0=$(date +%s)
log "building ferromq"
(cd "$ROOT" && cargo build -q --locked -p ferromq) || die "cargo build failed"
build_python || die "cannot install the Python client"
build_rust || die "cannot build the Rust client program"
export FERROMQ_RUST_CLIENT="$CLIENTS_TARGET/release/ferromq-client-tests-rust"
export FERROMQ_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/ferromq"
if [[ "${FERROMQ_CHAOS_FULL:-0}" == 1 ]]; then
  export FERROMQ_CHAOS_ROUNDS="${FERROMQ_CHAOS_ROUNDS:-60}"
fi

failed=0
for mode in sync async; do
  WORK="$(mktemp -d /tmp/ferromq-chaos.XXXXXX)"
  log "mode $mode (work directory $WORK)"
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
