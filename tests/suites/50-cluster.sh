#!/usr/bin/env bash
# Cluster suite: 2 name servers, 2 broker groups and 2 proxies as real `ferromq` processes on
# loopback, driven by the official RocketMQ 5 Python and Rust clients (tests/cluster/cluster_test.py):
# delay and transactional messages through proxies, delay messages due while every group is down,
# produce and consume through either proxy, kill -9 a proxy and a name server under load, add a
# third broker group under load, drain a group, and prove that no acknowledged message was lost.
#
# Installs what it needs on a fresh machine (the Python client's venv, shared with suite 30).
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

WORK="$(mktemp -d /tmp/ferromq-cluster.XXXXXX)"
export FERROMQ_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/ferromq"
export FERROMQ_CLUSTER_WORK="$WORK"
"$VENV/bin/python" "$ROOT/tests/cluster/cluster_test.py"
rc=$?
if ((rc != 0)); then
  log "process logs are in $WORK"
else
  rm -rf "$WORK"
fi
log "cluster suite took $(($(date +%s) - T0)) s"
exit "$rc"
