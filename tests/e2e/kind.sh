#!/usr/bin/env bash
# FerroMQ on a local kind cluster, end to end. Run it on a machine with Docker, kind, kubectl
# and helm (it checks for them first):
#
#   tests/e2e/kind.sh            # create, install, exercise, delete the cluster
#   KEEP=1 tests/e2e/kind.sh     # keep the kind cluster afterwards to play with it
#
# Steps: create a kind cluster; build the broker and operator images from their Dockerfiles and
# load them into kind; `helm install` the chart; apply examples/ (a small cluster and one topic
# of each message type) and wait for Ready; send and receive through the proxy Service with
# `ferromq bench` (a RocketMQ 5 gRPC client) running in a pod; scale the compute tier, then the
# storage tier, and send and receive again; `helm test`; clean up.
#
# Settings (environment): FERROMQ_KIND_CLUSTER (default ferromq-e2e), FERROMQ_TAG (image tag,
# default dev), KEEP=1 (keep the cluster), TIMEOUT (wait limit per step, default 300s).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
CLUSTER="${FERROMQ_KIND_CLUSTER:-ferromq-e2e}"
TAG="${FERROMQ_TAG:-dev}"
TIMEOUT="${TIMEOUT:-300s}"
NS=demo
BROKER_IMAGE="ferromq:$TAG"
OPERATOR_IMAGE="ferromq-operator:$TAG"

step() { echo; echo "== $*"; }
die() { echo "kind.sh: $*" >&2; exit 1; }
for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || die "$tool is required (see README: 'Try it on kind')"
done
docker info >/dev/null 2>&1 || die "the Docker daemon is not reachable"

cleanup() {
  local status=$?
  if ((status != 0)); then
    echo "kind.sh: failed; what the cluster shows:" >&2
    kubectl -n "$NS" get ferromq,pods,pvc -o wide >&2 || true
    kubectl -n ferromq-system logs deployment/ferromq --tail=50 >&2 || true
  fi
  if [[ "${KEEP:-0}" == 1 ]]; then
    echo "kind.sh: keeping cluster $CLUSTER (kind delete cluster --name $CLUSTER to remove it)"
  else
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
  exit "$status"
}
trap cleanup EXIT

step "kind cluster $CLUSTER"
if ! kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --wait 120s
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null

step "images $BROKER_IMAGE and $OPERATOR_IMAGE"
docker build -f broker/Dockerfile -t "$BROKER_IMAGE" .
docker build -f operator/Dockerfile -t "$OPERATOR_IMAGE" .
kind load docker-image --name "$CLUSTER" "$BROKER_IMAGE" "$OPERATOR_IMAGE"

step "helm install (operator and CRDs)"
helm upgrade --install ferromq charts/ferromq --namespace ferromq-system --create-namespace \
  --set image.repository=ferromq-operator --set image.tag="$TAG" --set image.pullPolicy=Never \
  --wait --timeout "$TIMEOUT"
kubectl -n ferromq-system rollout status deployment/ferromq --timeout "$TIMEOUT"

step "examples/: a cluster and one topic of each message type"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
sed "s#ghcr.io/ferromq/ferromq:[^ ]*#$BROKER_IMAGE#" examples/cluster.yaml | kubectl -n "$NS" apply -f -
kubectl -n "$NS" apply -f examples/topics.yaml
kubectl -n "$NS" wait broker/demo nameserver/demo-names --for=condition=Ready --timeout "$TIMEOUT"
kubectl -n "$NS" wait topic --all --for=condition=Ready --timeout "$TIMEOUT"
kubectl -n "$NS" get ferromq

# send_and_receive TOPIC: produces for 5 s and consumes from a pod inside the cluster through
# the proxy Service, and fails unless messages went both ways without errors.
send_and_receive() {
  local topic="$1" pod out
  pod="bench-$(date +%s)"
  out="$(kubectl -n "$NS" run "$pod" --image="$BROKER_IMAGE" --image-pull-policy=Never --restart=Never \
    --rm -i --quiet --command -- /bin/sh -c "
      ferromq bench produce --server demo:8081 --topic $topic --clients 2 --rate 200 --duration 5s --json &&
      ferromq bench consume --server demo:8081 --topic $topic --group kind-e2e --clients 2 --duration 10s --json")"
  echo "$out"
  python3 - "$out" <<'PY'
import json, sys
produce, consume = [json.loads(l) for l in sys.argv[1].splitlines() if l.startswith("{")][:2]
assert produce["failed"] == 0 and produce["messages"] > 0, f"produce: {produce}"
assert consume["messages"] > 0, f"consume: {consume}"
print(f"sent {produce['messages']}, received {consume['messages']}, send p99 {produce['latency_ms']['p99']} ms")
PY
}

step "send and receive through the proxy Service"
send_and_receive orders

step "scale the compute tier alone: 2 -> 3 proxies"
groups_before="$(kubectl -n "$NS" get statefulset demo-group-0 -o jsonpath='{.metadata.generation}')"
kubectl -n "$NS" scale broker demo --replicas=3
kubectl -n "$NS" rollout status deployment/demo-proxy --timeout "$TIMEOUT"
[[ "$(kubectl -n "$NS" get statefulset demo-group-0 -o jsonpath='{.metadata.generation}')" == "$groups_before" ]] ||
  die "scaling the compute tier changed the storage tier"

step "scale the storage tier alone: 1 -> 2 broker groups"
kubectl -n "$NS" patch broker demo --type merge -p '{"spec":{"storage":{"groups":2}}}'
for _ in $(seq 1 60); do kubectl -n "$NS" get statefulset demo-group-1 >/dev/null 2>&1 && break; sleep 2; done
kubectl -n "$NS" rollout status statefulset/demo-group-1 --timeout "$TIMEOUT"
kubectl -n "$NS" wait broker/demo --for=condition=Ready --timeout "$TIMEOUT"
send_and_receive orders

step "helm test (the chart's own produce/consume check needs its example cluster: install it too)"
helm upgrade ferromq charts/ferromq --namespace ferromq-system --reuse-values \
  --set exampleCluster.enabled=true --set exampleCluster.image="$BROKER_IMAGE" \
  --set exampleCluster.imagePullPolicy=Never --wait --timeout "$TIMEOUT"
kubectl -n ferromq-system wait broker/demo --for=condition=Ready --timeout "$TIMEOUT"
kubectl -n ferromq-system wait topic --all --for=condition=Ready --timeout "$TIMEOUT"
helm test ferromq --namespace ferromq-system --logs --timeout "$TIMEOUT"

step "clean up"
kubectl delete namespace "$NS" --wait --timeout "$TIMEOUT"
helm uninstall ferromq --namespace ferromq-system --wait --timeout "$TIMEOUT"
echo "kind.sh: all steps passed"
