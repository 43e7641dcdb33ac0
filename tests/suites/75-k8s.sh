#!/usr/bin/env bash
# Suite 75: FerroMQ on a real single-node Kubernetes cluster: real pods from our images.
#
# 1. tests/k8s/cluster.sh starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
#    a kubelet with containerd and runc, kube-proxy, the bridge CNI, CoreDNS and static local
#    volumes (binaries built from their Go modules and cached under $FERROMQ_TEST_CACHE/k8s;
#    containerd, runc and the CNI plugins from Debian). No Docker, no kind.
# 2. ferromq (release, as suite 30 builds it) and ferromq-operator (debug, as suites 60 and 70
#    build it: a controller needs no optimiser, and a release build of the kube crates would
#    add minutes to tests/run for nothing); both images built from
#    broker/Dockerfile and operator/Dockerfile with buildah and imported into containerd under
#    the chart's default names (ghcr.io/ferromq/*:<appVersion>), plus a second tag for the upgrade.
# 3. tests/k8s/e2e.sh: helm install, the examples, official Python and Java clients through the
#    proxy Service, scaling both tiers, a broker pod deleted, a replicated group (3 name servers
#    with the replication controller, 3 members in sync replication) whose leader pod is
#    force-deleted under load, a helm upgrade under load, helm test, helm uninstall (the same
#    steps tests/e2e/kind.sh runs on kind).
# Needs root (namespaces, mounts, cgroups). Prints the wall time of each part. Seen on the
# 2-core test machine (shared with other work): cluster up 10 s with the binaries cached, the
# whole suite 402 s (end to end 339 s, of which the replicated group's failover and roll 55 s);
# the first run on a machine also builds kube-scheduler, kubelet, kube-proxy and
# CoreDNS (about 9 CPU-minutes with an empty Go build cache; suite 60 has built
# kube-apiserver by then, whose packages the node binaries share).
set -uo pipefail
ROOT="${FERROMQ_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}"
cd "$ROOT" || exit 1
export FERROMQ_ROOT="$ROOT"
export FERROMQ_TEST_CACHE="${FERROMQ_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ferromq-tests}"
CLUSTER="$ROOT/tests/k8s/cluster.sh"
suite_start=$SECONDS
# shellcheck source=../k8s/images.sh
source "$ROOT/tests/k8s/images.sh"

if [[ $(id -u) != 0 ]]; then
  echo "75-k8s: FAILED: needs root (network and mount namespaces, cgroups, mounts)" >&2
  exit 1
fi
APP_VERSION="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/ferromq/Chart.yaml)"
UPGRADE_TAG="$APP_VERSION-next"
state="$(mktemp -d /tmp/ferromq-k8s.XXXXXX)"
cleanup() {
  local status=$?
  if ((status != 0)) && [[ -d "$state/cluster/logs" ]]; then cp -r "$state/cluster/logs" "$state/cluster-logs"; fi
  bash "$CLUSTER" down "$state/cluster" || true
  images_cleanup
  if ((status == 0)); then rm -rf "$state"; else echo "75-k8s: logs kept in $state" >&2; fi
}
trap cleanup EXIT
trap 'exit 143' TERM INT

echo "== cluster up"
t=$SECONDS
if ! bash "$CLUSTER" up "$state/cluster" >"$state/cluster-up.log" 2>&1; then
  tail -60 "$state/cluster-up.log" >&2
  echo "75-k8s: FAILED: the cluster did not start" >&2
  exit 1
fi
grep -v '^go: ' "$state/cluster-up.log" | tail -5
up_s=$((SECONDS - t))
# shellcheck disable=SC1091
source "$state/cluster/env"

echo "== release binaries and images"
t=$SECONDS
{ cargo build --release --locked -q -p ferromq && cargo build --locked -q -p ferromq -p ferromq-operator; } ||
  { echo "75-k8s: FAILED: cargo build" >&2; exit 1; }
build_s=$((SECONDS - t))
t=$SECONDS
REL="${CARGO_TARGET_DIR:-$ROOT/target}/release"
DEV="${CARGO_TARGET_DIR:-$ROOT/target}/debug"
images_init "$state/images"
images_debian_base &&
  images_build_prebuilt broker/Dockerfile "ghcr.io/ferromq/ferromq:$APP_VERSION" "$REL/ferromq" >"$state/images.log" 2>&1 &&
  images_build_prebuilt operator/Dockerfile "ghcr.io/ferromq/ferromq-operator:$APP_VERSION" \
    "$DEV/ferromq-operator" >>"$state/images.log" 2>&1 &&
  images_save "ghcr.io/ferromq/ferromq:$APP_VERSION" "$state/broker.tar" &&
  images_save "ghcr.io/ferromq/ferromq-operator:$APP_VERSION" "$state/operator.tar" &&
  bash "$CLUSTER" import "$state/cluster" "$state/broker.tar" "$state/operator.tar" &&
  bash "$CLUSTER" tag "$state/cluster" "ghcr.io/ferromq/ferromq:$APP_VERSION" "ghcr.io/ferromq/ferromq:$UPGRADE_TAG" &&
  bash "$CLUSTER" tag "$state/cluster" "ghcr.io/ferromq/ferromq-operator:$APP_VERSION" "ghcr.io/ferromq/ferromq-operator:$UPGRADE_TAG" ||
  { tail -30 "$state/images.log" >&2; echo "75-k8s: FAILED: images" >&2; exit 1; }
images_cleanup
rm -f "$state/broker.tar" "$state/operator.tar"
images_s=$((SECONDS - t))

echo "== end to end (tests/k8s/e2e.sh)"
t=$SECONDS
rc=0
HELM="$(bash tests/k8s/env.sh helm)" KUBECTL="$(bash tests/k8s/env.sh kubectl)" \
  FERROMQ_E2E_WORK="$state/e2e" FERROMQ_E2E_TAG="$APP_VERSION" FERROMQ_E2E_UPGRADE_TAG="$UPGRADE_TAG" \
  bash tests/k8s/e2e.sh || rc=1
e2e_s=$((SECONDS - t))
t=$SECONDS
if ((rc != 0)); then cp -r "$state/cluster/logs" "$state/cluster-logs"; fi
bash "$CLUSTER" down "$state/cluster" || rc=1
down_s=$((SECONDS - t))
echo "75-k8s: timings: cluster up ${up_s}s, cargo build ${build_s}s, images ${images_s}s, end to end ${e2e_s}s, cluster down ${down_s}s, suite $((SECONDS - suite_start))s"
exit "$rc"
