#!/usr/bin/env bash
# FerroMQ on a local kind cluster, end to end, for machines with Docker. It runs the same steps,
# values and checks as suite 75 (tests/k8s/e2e.sh: the examples, the official clients, scaling,
# a replicated group's leader failover, an upgrade under load); only the cluster differs (kind
# instead of tests/k8s/cluster.sh). Needs Docker, kind, kubectl, helm, python3 (the official Python client
# is installed in a venv), Java 17 + Maven (the official Java client), and root or sudo for two
# routes to kind's Service and pod ranges through the node container (the clients run on this
# host and dial the proxy Service's ClusterIP; Linux hosts only, not Docker Desktop):
#
#   tests/e2e/kind.sh            # create, install, exercise, delete the cluster
#   KEEP=1 tests/e2e/kind.sh     # keep the kind cluster afterwards to play with it
#
# Settings (environment): FERROMQ_KIND_CLUSTER (default ferromq-e2e), KEEP=1 (keep the cluster),
# TIMEOUT (seconds per wait, default 300), FERROMQ_E2E_CLIENTS (default python,java).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
CLUSTER="${FERROMQ_KIND_CLUSTER:-ferromq-e2e}"
APP_VERSION="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/ferromq/Chart.yaml)"
UPGRADE_TAG="$APP_VERSION-next"
SERVICE_CIDR=10.96.0.0/16
POD_CIDR=10.244.0.0/16
WORK="$(mktemp -d /tmp/ferromq-kind.XXXXXX)"

step() { echo; echo "== $*"; }
die() { echo "kind.sh: $*" >&2; exit 1; }
for tool in docker kind kubectl helm python3 java mvn ip; do
  command -v "$tool" >/dev/null || die "$tool is required (see README: 'Try it on kind')"
done
docker info >/dev/null 2>&1 || die "the Docker daemon is not reachable"
SUDO=()
[[ $(id -u) == 0 ]] || SUDO=(sudo)

routes=()
cleanup() {
  local status=$? r
  for r in "${routes[@]}"; do "${SUDO[@]}" ip route del "$r" 2>/dev/null || true; done
  if [[ "${KEEP:-0}" == 1 ]]; then
    echo "kind.sh: keeping cluster $CLUSTER (kind delete cluster --name $CLUSTER to remove it)"
  else
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
  ((status == 0)) && rm -rf "$WORK" || echo "kind.sh: logs in $WORK" >&2
  exit "$status"
}
trap cleanup EXIT

step "kind cluster $CLUSTER (Service range $SERVICE_CIDR, pods $POD_CIDR)"
if ! kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --wait 120s --config - <<YAML
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking: {serviceSubnet: $SERVICE_CIDR, podSubnet: $POD_CIDR}
YAML
fi
kind get kubeconfig --name "$CLUSTER" >"$WORK/kubeconfig"
export KUBECONFIG="$WORK/kubeconfig"

step "images ghcr.io/ferromq/{ferromq,ferromq-operator}:$APP_VERSION (and :$UPGRADE_TAG) from the Dockerfiles"
docker build -f broker/Dockerfile -t "ghcr.io/ferromq/ferromq:$APP_VERSION" .
docker build -f operator/Dockerfile -t "ghcr.io/ferromq/ferromq-operator:$APP_VERSION" .
docker tag "ghcr.io/ferromq/ferromq:$APP_VERSION" "ghcr.io/ferromq/ferromq:$UPGRADE_TAG"
docker tag "ghcr.io/ferromq/ferromq-operator:$APP_VERSION" "ghcr.io/ferromq/ferromq-operator:$UPGRADE_TAG"
kind load docker-image --name "$CLUSTER" "ghcr.io/ferromq/ferromq:$APP_VERSION" "ghcr.io/ferromq/ferromq:$UPGRADE_TAG" \
  "ghcr.io/ferromq/ferromq-operator:$APP_VERSION" "ghcr.io/ferromq/ferromq-operator:$UPGRADE_TAG"

step "routes from this host to the Service and pod ranges through the node"
node_ip="$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$CLUSTER-control-plane")"
for r in "$SERVICE_CIDR" "$POD_CIDR"; do
  "${SUDO[@]}" ip route replace "$r" via "$node_ip"
  routes+=("$r")
done

step "tests/k8s/e2e.sh (the steps of suite 75)"
FERROMQ_E2E_WORK="$WORK/e2e" FERROMQ_E2E_TAG="$APP_VERSION" FERROMQ_E2E_UPGRADE_TAG="$UPGRADE_TAG" \
  bash tests/k8s/e2e.sh
echo "kind.sh: all steps passed"
