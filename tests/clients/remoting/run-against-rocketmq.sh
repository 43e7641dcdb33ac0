#!/usr/bin/env bash
# Developer tool (not CI): proves the remoting harness (run.sh beside this file) against the
# reference, Apache RocketMQ 5.3.3 (namesrv + broker + proxy in local mode, from Maven Central).
#
#   tests/clients/remoting/run-against-rocketmq.sh [--via namesrv|proxy|cluster-proxy] [--only ...] [--keep]
#
# --via namesrv (default): clients ask the name server (29876) for routes and talk to the broker
# (29911) directly, as 4.x deployments do. --via proxy: clients use the proxy's remoting port (28080)
# as their name server; the proxy answers routes with its own address and serves the client codes
# (admin tools still go to the name server: the proxy answers GET_BROKER_CLUSTER_INFO with
# REQUEST_CODE_NOT_SUPPORTED). RocketMQ 5.3.3's local-mode proxy puts its *gRPC* port into those
# routes, so 4.x clients then fail; --via cluster-proxy starts a second, cluster-mode proxy (28180
# remoting / 28181 gRPC) whose routes name its remoting port.
# The gRPC endpoint (28081) is passed for the mixed-protocol scenarios.
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
export FERROMQ_TEST_CACHE="${FERROMQ_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ferromq-tests}"
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"
# shellcheck source=../rocketmq/reference.sh
source "$HERE/../rocketmq/reference.sh"

VIA=namesrv
KEEP=0
ARGS=()
while (($#)); do
  case "$1" in
    --via) VIA="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --only) ARGS+=(--only "$2"); shift 2 ;;
    *) echo "usage: $0 [--via namesrv|proxy|cluster-proxy] [--only java4,go,admin,mqadmin,mixed] [--keep]" >&2; exit 2 ;;
  esac
done

WORK="$(mktemp -d /tmp/ferromq-rmq-remoting.XXXXXX)"
export FERROMQ_CLIENT_LOGS="$WORK/logs"
RMQ_WORK="$WORK"
trap finish_rocketmq EXIT
# SQL92 subscriptions need the broker's property filter.
export RMQ_BROKER_EXTRA="enablePropertyFilter=true"
start_rocketmq "$WORK"

GRPC="127.0.0.1:$PROXY_GRPC_PORT"
case "$VIA" in
  namesrv) TARGET="127.0.0.1:$NS_PORT" ;;
  proxy) TARGET="127.0.0.1:$PROXY_REMOTING_PORT" ;;
  cluster-proxy)
    start_cluster_proxy
    TARGET="127.0.0.1:$PROXY_CLUSTER_REMOTING_PORT" GRPC="127.0.0.1:$PROXY_CLUSTER_GRPC_PORT" ;;
  *) die "--via namesrv|proxy|cluster-proxy" ;;
esac
# Admin always through the name server: the proxy's remoting port does not serve the admin codes.
"$HERE/run.sh" --namesrv "$TARGET" --admin-namesrv "127.0.0.1:$NS_PORT" --cluster "$RMQ_CLUSTER" \
  --grpc "$GRPC" "${ARGS[@]}"
rc=$?
if ((rc != 0)); then
  KEEP=1
  log "failures: broker/proxy log at $WORK/logs/proxy.out and $WORK/logs/rocketmqlogs"
fi
exit $rc
