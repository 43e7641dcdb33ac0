#!/usr/bin/env bash
# Suite 60: the Kubernetes operator against a real control plane, no Docker or kind.
#
# 1. tests/k8s/env.sh builds etcd and kube-apiserver from their Go modules (cached under
#    $FERROMQ_TEST_CACHE/k8s, so only the first run on a machine compiles) and starts them on
#    127.0.0.1 with RBAC on.
# 2. The generated CRDs (crds/) and the operator's ClusterRole (operator/deploy/rbac.yaml) are
#    applied with kubectl.
# 3. The Rust integration tests (operator/tests/apiserver.rs) run reconciles against it; then
#    operator/tests/rollout.rs runs against a second control plane that adds
#    kube-controller-manager, with the test playing the kubelet (real StatefulSet roll-outs).
# 4. The real `ferromq-operator run` binary runs as an RBAC-limited user while kubectl creates,
#    scales, patches and deletes resources; the checks read what the API server shows.
# 5. Against real `ferromq` processes (the operator's --admin-address override): Topics, a User
#    on a server with --auth (its Secret's credentials send where the policy allows and are
#    refused elsewhere and after the User is deleted), and a drain before a group's removal.
# No kubelet runs, so pods never start: readiness is exercised in step 3 by writing workload
# status the way the controller-manager would.
set -euo pipefail
ROOT="${FERROMQ_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}"
cd "$ROOT"
export FERROMQ_TEST_CACHE="${FERROMQ_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ferromq-tests}"
ENV="$ROOT/tests/k8s/env.sh"
suite_start=$SECONDS
# shellcheck source=../k8s/checks.sh
source "$ROOT/tests/k8s/checks.sh"

need openssl openssl
need curl curl
need python3 python3

t=$SECONDS
bash "$ENV" build >/dev/null
build_s=$((SECONDS - t))
KUBECTL="$(bash "$ENV" kubectl)"

state="$(mktemp -d)"
cp_dir="$state/cp"
kcm_dir="$state/cp-kcm"
op_pid=""
sa_pid=""
standby_pid=""
cleanup() {
  local p
  for p in $op_pid $standby_pid $sa_pid; do
    stop_proc "$p" || true
  done
  bash "$ENV" stop "$kcm_dir" || true
  bash "$ENV" stop "$cp_dir" || true
  rm -rf "$state"
}
trap cleanup EXIT
trap 'exit 143' TERM INT


t=$SECONDS
bash "$ENV" start "$cp_dir"
start_s=$((SECONDS - t))
# shellcheck disable=SC1091
source "$cp_dir/env"

k apply --server-side -f crds/ >/dev/null
k wait --for condition=established --timeout=60s \
  crd/nameservers.ferromq.io crd/brokers.ferromq.io crd/topics.ferromq.io crd/users.ferromq.io >/dev/null
k apply --server-side -f operator/deploy/rbac.yaml >/dev/null
k create clusterrolebinding ferromq-operator --clusterrole=ferromq-operator --user=ferromq-operator >/dev/null

rc=0
echo "== operator integration tests (cargo test --test apiserver -- --ignored)"
t=$SECONDS
FERROMQ_TEST_KUBECONFIG="$KUBECONFIG" cargo test -p ferromq-operator --locked --test apiserver -- --ignored --test-threads=2 || rc=1
rust_s=$((SECONDS - t))

echo "== roll-out tests with kube-controller-manager (cargo test --test rollout -- --ignored)"
t=$SECONDS
bash "$ENV" start "$kcm_dir"
k --kubeconfig "$kcm_dir/kubeconfig" apply --server-side -f crds/ >/dev/null
k --kubeconfig "$kcm_dir/kubeconfig" wait --for condition=established --timeout=60s \
  crd/nameservers.ferromq.io crd/brokers.ferromq.io crd/topics.ferromq.io crd/users.ferromq.io >/dev/null
bash "$ENV" start-controller-manager "$kcm_dir"
FERROMQ_TEST_KCM_KUBECONFIG="$kcm_dir/kubeconfig" cargo test -p ferromq-operator --locked --test rollout -- --ignored || rc=1
bash "$ENV" stop "$kcm_dir"
rollout_s=$((SECONDS - t))

echo "== operator binary + kubectl"
t=$SECONDS
jp() { k -n e2e get "$1" "$2" -o "jsonpath=$3" 2>/dev/null; }
equals() { [[ "$(jp "$1" "$2" "$3")" == "$4" ]]; }
# equals_in NAMESPACE KIND NAME JSONPATH VALUE
equals_in() { [[ "$(k -n "$1" get "$2" "$3" -o "jsonpath=$4" 2>/dev/null)" == "$5" ]]; }

cargo build -p ferromq-operator --locked --quiet
OPERATOR="${CARGO_TARGET_DIR:-$ROOT/target}/debug/ferromq-operator"
k create namespace e2e >/dev/null
http_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
KUBECONFIG="$cp_dir/operator.kubeconfig" "$OPERATOR" run --namespace e2e --lease-namespace e2e \
  --http-addr "127.0.0.1:$http_port" --admin-address 127.0.0.1:1 \
  --log-format text >"$state/operator.log" 2>&1 &
op_pid=$!
# A second replica: it must wait for the Lease while the first one leads.
wait_for 30 grep -q 'leading' "$state/operator.log" || true
KUBECONFIG="$cp_dir/operator.kubeconfig" "$OPERATOR" run --namespace e2e --lease-namespace e2e --identity standby \
  --http-addr "127.0.0.1:$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')" \
  --admin-address 127.0.0.1:1 --log-format text >"$state/standby.log" 2>&1 &
standby_pid=$!

check "kubectl explain documents fields" bash -c "'$KUBECTL' explain broker.spec.storage.volume.size | grep -q 'Kubernetes quantity'"

k -n e2e apply -f - >/dev/null <<'YAML'
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: e2e-fixed}
provisioner: example.com/none
allowVolumeExpansion: false
---
apiVersion: ferromq.io/v1alpha1
kind: Nameserver
metadata: {name: names}
spec: {replicas: 3, image: "ferromq:e2e", controller: {enabled: true}}
---
apiVersion: ferromq.io/v1alpha1
kind: Broker
metadata: {name: demo}
spec:
  nameserverRef: {name: names}
  image: "ferromq:e2e"
  storage: {groups: 1, replicasPerGroup: 2, volume: {size: 1Gi, storageClassName: e2e-fixed}}
  compute: {replicas: 1}
YAML

refused_by_schema() {
  # Succeeds when a server-side dry-run of stdin is refused with a message containing $1.
  local out
  if out="$(k -n e2e apply --dry-run=server -f - 2>&1)"; then
    echo "accepted: $out"
    return 1
  fi
  echo "$out"
  grep -q -- "$1" <<<"$out"
}
check "schema refuses zero broker groups (server dry-run)" refused_by_schema 'spec.storage.groups' <<'YAML'
apiVersion: ferromq.io/v1alpha1
kind: Broker
metadata: {name: bad}
spec: {nameserverRef: {name: names}, image: x, storage: {groups: 0, volume: {size: 1Gi}}, compute: {replicas: 1}}
YAML
check "CEL refuses shrinking the volume" refused_by_schema 'storage size may only grow' <<'YAML'
apiVersion: ferromq.io/v1alpha1
kind: Broker
metadata: {name: demo}
spec:
  nameserverRef: {name: names}
  image: "ferromq:e2e"
  storage: {groups: 1, replicasPerGroup: 2, volume: {size: 512Mi, storageClassName: e2e-fixed}}
  compute: {replicas: 1}
YAML
check "CEL refuses turning a replicated Broker into an unreplicated one" refused_by_schema 'cannot change between 1 (unreplicated) and more' <<'YAML'
apiVersion: ferromq.io/v1alpha1
kind: Broker
metadata: {name: demo}
spec:
  nameserverRef: {name: names}
  image: "ferromq:e2e"
  storage: {groups: 1, replicasPerGroup: 1, volume: {size: 1Gi, storageClassName: e2e-fixed}}
  compute: {replicas: 1}
YAML
check "CEL refuses a replication controller of 2 (server dry-run)" refused_by_schema 'needs 1, 3 or 5 replicas' <<'YAML'
apiVersion: ferromq.io/v1alpha1
kind: Nameserver
metadata: {name: even}
spec: {replicas: 2, image: x, controller: {enabled: true}}
YAML
check "operator created the name server StatefulSet" wait_for 60 equals statefulset names '{.spec.replicas}' 3
check "name servers run the controller on their claims" bash -c "'$KUBECTL' -n e2e get statefulset names -o jsonpath='{.spec.template.spec.containers[0].command[2]} {.spec.volumeClaimTemplates[0].metadata.name}' | tee /dev/stderr | grep -q -- '--controller-peers names-0.names.e2e.svc:9876,names-1.names.e2e.svc:9876,names-2.names.e2e.svc:9876 .*controller-data'"
check "operator created broker group 0" wait_for 30 equals statefulset demo-group-0 '{.spec.replicas}' 2
check "group members take their replica id from the ordinal" bash -c "'$KUBECTL' -n e2e get statefulset demo-group-0 -o jsonpath='{.spec.template.spec.containers[0].command[2]}' | grep -q -- '--replica-id \"\$((ordinal + 1))\"'"
check "group pods spread over nodes" equals statefulset demo-group-0 \
  '{.spec.template.spec.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].podAffinityTerm.topologyKey}' kubernetes.io/hostname
check "group PDB lets one member go at a time" equals pdb demo-group-0 '{.spec.maxUnavailable}' 1
check "operator created the proxy Deployment" wait_for 30 equals deployment demo-proxy '{.spec.replicas}' 1
check "client Service listens on 8081" wait_for 30 equals service demo '{.spec.ports[0].port}' 8081
check "ConfigMap rendered" wait_for 30 bash -c "'$KUBECTL' -n e2e get configmap demo-config -o jsonpath='{.data.broker\.toml}' | grep -q 'names-1.names.e2e.svc:9876'"
check "status reports the observed generation" wait_for 30 bash -c \
  "[[ \$('$KUBECTL' -n e2e get broker demo -o jsonpath='{.status.observedGeneration}') == \$('$KUBECTL' -n e2e get broker demo -o jsonpath='{.metadata.generation}') ]]"
check "printer columns show both tiers" bash -c "'$KUBECTL' -n e2e get fbk demo | tee /dev/stderr | head -1 | grep -q 'GROUPS.*PROXIES'"
# ready_column NAMESPACE KIND NAME WANT: `kubectl get` shows WANT in the READY column (cells
# are located by the header's offsets: empty cells leave no field to count).
ready_column() {
  "$KUBECTL" -n "$1" get "$2" "$3" | tee /dev/stderr | python3 -c '
import re, sys
header, row = sys.stdin.read().splitlines()[:2]
starts = [m.start() for m in re.finditer(r"\S+", header)]
names = header.split()
i = names.index("READY")
end = starts[i + 1] if i + 1 < len(starts) else None
sys.exit(0 if row[starts[i]:end].strip() == sys.argv[1] else 1)' "$4"
}
check "the Broker's READY column shows its Ready condition (False: no kubelet)" wait_for 30 ready_column e2e fbk demo False
check "the Nameserver's READY column shows its Ready condition" wait_for 30 ready_column e2e fns names False
check "status.endpoint is the client Service's DNS name" wait_for 30 equals broker demo '{.status.endpoint}' demo.e2e.svc:8081
check "the Broker shows its endpoint with -o wide" bash -c "'$KUBECTL' -n e2e get fbk demo -o wide | tee /dev/stderr | grep -q 'demo.e2e.svc:8081'"
check "the proxies advertise the client Service's DNS name" wait_for 30 equals deployment demo-proxy \
  '{.spec.template.spec.containers[0].env[?(@.name=="FERROMQ_ADVERTISE_ADDR")].value}' demo.e2e.svc:8081
check "CEL refuses a pod template that sets the operator's selector label" refused_by_schema 'must not set the operator' <<'YAML'
apiVersion: ferromq.io/v1alpha1
kind: Broker
metadata: {name: badlabels}
spec:
  nameserverRef: {name: names}
  image: x
  storage: {groups: 1, volume: {size: 1Gi}, podTemplate: {labels: {app.kubernetes.io/instance: other}}}
  compute: {replicas: 1}
YAML
check "CEL refuses a pod template that sets FERROMQ_GROUP" refused_by_schema 'podTemplate.env must not set' <<'YAML'
apiVersion: ferromq.io/v1alpha1
kind: Broker
metadata: {name: badenv}
spec:
  nameserverRef: {name: names}
  image: x
  storage: {groups: 1, volume: {size: 1Gi}}
  compute: {replicas: 1, podTemplate: {env: [{name: FERROMQ_GROUP, value: g}]}}
YAML
check "CEL refuses a nodePort on a ClusterIP Service" refused_by_schema 'nodePort needs type NodePort or LoadBalancer' <<'YAML'
apiVersion: ferromq.io/v1alpha1
kind: Broker
metadata: {name: badport}
spec:
  nameserverRef: {name: names}
  image: x
  storage: {groups: 1, volume: {size: 1Gi}}
  compute: {replicas: 1, service: {type: ClusterIP, nodePort: 30001}}
YAML
k -n e2e patch nameserver names --type merge -p '{"spec":{"podTemplate":{"labels":{"team":"infra"},"priorityClassName":"ns-critical"}}}' >/dev/null
check "the Nameserver's pod template reaches its StatefulSet" wait_for 30 equals statefulset names \
  '{.spec.template.metadata.labels.team}/{.spec.template.spec.priorityClassName}' infra/ns-critical
check "category ferromq lists the resources" bash -c "'$KUBECTL' -n e2e get ferromq -o name | tee /dev/stderr | grep -q 'broker.ferromq.io/demo'"

group_gen="$(jp statefulset demo-group-0 '{.metadata.generation}')"
k -n e2e scale broker demo --replicas=3 >/dev/null
check "kubectl scale moves the proxy Deployment" wait_for 30 equals deployment demo-proxy '{.spec.replicas}' 3
check "kubectl scale leaves the storage tier alone" equals statefulset demo-group-0 '{.metadata.generation}' "$group_gen"
k -n e2e patch broker demo --type merge -p '{"spec":{"storage":{"groups":2}}}' >/dev/null
check "growing groups adds a StatefulSet" wait_for 30 equals statefulset demo-group-1 '{.spec.replicas}' 2
check "growing groups leaves the proxies alone" equals deployment demo-proxy '{.spec.replicas}' 3
check "drift repaired through the watch" bash -c "'$KUBECTL' -n e2e delete service demo >/dev/null && sleep 1 && \
  for i in \$(seq 1 60); do '$KUBECTL' -n e2e get service demo >/dev/null 2>&1 && exit 0; sleep 0.5; done; exit 1"
check "Events record what the operator changed" bash -c "'$KUBECTL' -n e2e get events.events.k8s.io -o jsonpath='{.items[*].reason}' | grep -q Created"

k -n e2e patch broker demo --type merge -p '{"spec":{"storage":{"groups":1}}}' >/dev/null
check "shrinking groups waits for a drain the admin API cannot do" wait_for 30 equals broker demo \
  '{.status.conditions[?(@.type=="Degraded")].reason}' DrainFailed
check "the undrained group is kept" equals statefulset demo-group-1 '{.spec.replicas}' 2
k -n e2e annotate broker demo ferromq.io/skip-drain=true >/dev/null
check "skip-drain removes the group" wait_for 30 bash -c "! '$KUBECTL' -n e2e get statefulset demo-group-1 >/dev/null 2>&1"
check "status clears the drain" wait_for 30 equals broker demo '{.status.storage.groups}' 1

# A spec.config the broker would refuse is refused on the Broker; nothing is rendered or rolled.
cfg_hash="$(jp statefulset demo-group-0 '{.spec.template.metadata.annotations.ferromq\.io/config-hash}')"
k -n e2e patch broker demo --type merge -p '{"spec":{"config":{"max-dealy":"1d"}}}' >/dev/null
check "a misspelt spec.config key is refused with InvalidConfig" wait_for 30 equals broker demo \
  '{.status.conditions[?(@.type=="Ready")].reason}' InvalidConfig
check "the InvalidConfig message names the key" bash -c \
  "'$KUBECTL' -n e2e get broker demo -o jsonpath='{.status.conditions[?(@.type==\"Degraded\")].message}' | tee /dev/stderr | grep -q '\"max-dealy\" for a broker'"
check "a refused spec.config rolls no pod" equals statefulset demo-group-0 \
  '{.spec.template.metadata.annotations.ferromq\.io/config-hash}' "$cfg_hash"
check "a refused spec.config is not rendered" bash -c "! '$KUBECTL' -n e2e get configmap demo-config -o jsonpath='{.data.broker\.toml}' | grep -q max-dealy"
k -n e2e patch broker demo --type merge -p '{"spec":{"config":{"max-dealy":null,"max-delay":"soon"}}}' >/dev/null
check "an unreadable spec.config value is refused naming the key" wait_for 30 bash -c \
  "'$KUBECTL' -n e2e get broker demo -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].message}' | grep -q 'spec.config: max-delay: '"
k -n e2e patch broker demo --type merge -p '{"spec":{"config":null,"storage":{"retention":"7d","retentionBytes":"512MiB","diskHighWater":85}}}' >/dev/null
check "a fixed spec.config clears InvalidConfig" wait_for 30 bash -c \
  "[[ \$('$KUBECTL' -n e2e get broker demo -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].reason}') != InvalidConfig ]]"
check "retention fields are rendered into broker.toml" wait_for 30 bash -c \
  "'$KUBECTL' -n e2e get configmap demo-config -o jsonpath='{.data.broker\.toml}' | tee /dev/stderr | grep -q 'retention = \"7d\"' && '$KUBECTL' -n e2e get configmap demo-config -o jsonpath='{.data.broker\.toml}' | grep -q 'disk-high-water = 85'"
check "schema refuses diskHighWater above 100 (server dry-run)" bash -c \
  "'$KUBECTL' -n e2e patch broker demo --dry-run=server --type merge -p '{\"spec\":{\"storage\":{\"diskHighWater\":101}}}' 2>&1 | grep -q 'diskHighWater'"

k -n e2e apply -f - >/dev/null <<'YAML'
apiVersion: ferromq.io/v1alpha1
kind: Topic
metadata: {name: orders}
spec: {brokerRef: {name: demo}, queues: 4, messageType: FIFO}
YAML
check "topic gets the cleanup finalizer" wait_for 30 equals topic orders '{.metadata.finalizers[0]}' ferromq.io/topic-cleanup
check "unreachable admin API is reported on the topic" wait_for 30 equals topic orders \
  '{.status.conditions[?(@.type=="Ready")].reason}' AdminApiUnavailable
check "the condition names the address and the transport's error" bash -c \
  "'$KUBECTL' -n e2e get topic orders -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].message}' | tee /dev/stderr | grep -q 'admin API at 127.0.0.1:1: unreachable: .*refused'"
check "the operator holds the leader lease" bash -c "[[ -n \$('$KUBECTL' -n e2e get lease ferromq-operator -o jsonpath='{.spec.holderIdentity}') ]]"
check "/healthz answers" curl -sf "http://127.0.0.1:$http_port/healthz"
check "/metrics counts reconciliations" bash -c "curl -sf http://127.0.0.1:$http_port/metrics | grep -q 'ferromq_operator_reconciliations_total{kind=\"Broker\"}'"

# With the broker gone there is no cluster to delete from, so the finalizer lets go.
k -n e2e delete broker demo --wait=false >/dev/null
k -n e2e delete topic orders --wait=false >/dev/null
check "topic deletion completes once its broker is gone" wait_for 60 bash -c "! '$KUBECTL' -n e2e get topic orders >/dev/null 2>&1"
check "RBAC ClusterRole covers everything the operator did" bash -c "! grep -i 'forbidden' '$state/operator.log' '$state/standby.log'"
check "the standby replica waits while the leader holds the lease" bash -c \
  "grep -q 'waiting for leadership' '$state/standby.log' && ! grep -q 'leading' '$state/standby.log'"

op_status=0
stop_proc "$op_pid" || op_status=$?
op_pid=""
check "operator exits cleanly on SIGTERM" test "$op_status" -eq 0
check "the standby takes the lease the leader released" wait_for 30 equals lease ferromq-operator '{.spec.holderIdentity}' standby
check "the standby starts reconciling" wait_for 30 grep -q 'leading' "$state/standby.log"
standby_status=0
stop_proc "$standby_pid" || standby_status=$?
standby_pid=""
check "the new leader also exits cleanly on SIGTERM" test "$standby_status" -eq 0
check "the lease is free after both replicas stopped" bash -c "[[ -z \$('$KUBECTL' -n e2e get lease ferromq-operator -o jsonpath='{.spec.holderIdentity}') ]]"
e2e_s=$((SECONDS - t))

echo "== Topic against a real ferromq standalone (operator's --admin-address override)"
t=$SECONDS
cargo build -p ferromq --locked --quiet
FERROMQ_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/ferromq"
echo "-- the operator's gRPC admin client against real servers (cargo test --test admin_grpc -- --ignored)"
FERROMQ_TEST_FERROMQ_BIN="$FERROMQ_BIN" cargo test -p ferromq-operator --locked --test admin_grpc -- --ignored || rc=1
grpc_port="$(free_port)"
sa_http="$(free_port)"
"$FERROMQ_BIN" standalone --data-dir "$state/standalone" --grpc-addr "127.0.0.1:$grpc_port" \
  --http-addr "127.0.0.1:$sa_http" --remoting-addr off >"$state/standalone.log" 2>&1 &
sa_pid=$!
check "ferromq standalone becomes ready" wait_for 60 curl -sf "http://127.0.0.1:$sa_http/readyz"
k create namespace topics >/dev/null
KUBECONFIG="$cp_dir/operator.kubeconfig" "$OPERATOR" run --namespace topics --lease-namespace topics \
  --http-addr "127.0.0.1:$(free_port)" --admin-address "127.0.0.1:$grpc_port" \
  --log-format text >"$state/operator-topics.log" 2>&1 &
op_pid=$!
k -n topics apply -f - >/dev/null <<'YAML'
apiVersion: ferromq.io/v1alpha1
kind: Broker
metadata: {name: local}
spec:
  nameserverRef: {name: names}
  image: "ferromq:e2e"
  storage: {groups: 1, volume: {size: 1Gi}}
  compute: {replicas: 1}
---
apiVersion: ferromq.io/v1alpha1
kind: Topic
metadata: {name: orders-eu}
spec: {brokerRef: {name: local}, name: Orders_EU, queues: 4, messageType: FIFO}
YAML
check "topic becomes Ready (Synced) on the real cluster" wait_for 60 bash -c \
  "[[ \$('$KUBECTL' -n topics get topic orders-eu -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].reason}') == Synced ]]"
check "ferromq admin shows the topic as specified" bash -c \
  "'$FERROMQ_BIN' admin --server 127.0.0.1:$grpc_port -o json topic describe Orders_EU | tee /dev/stderr | python3 -c 'import json,sys; t=json.load(sys.stdin); sys.exit(0 if (t[\"queues\"], t[\"type\"], t[\"perm\"]) == (4, \"fifo\", \"rw\") else 1)'"
k -n topics patch topic orders-eu --type merge -p '{"spec":{"queues":8,"permission":"ReadOnly"}}' >/dev/null
check "queue and permission changes reach the cluster" wait_for 60 bash -c \
  "'$FERROMQ_BIN' admin --server 127.0.0.1:$grpc_port -o json topic describe Orders_EU | python3 -c 'import json,sys; t=json.load(sys.stdin); sys.exit(0 if (t[\"queues\"], t[\"perm\"]) == (8, \"r\") else 1)'"
check "a synced Topic shows True in its READY column" wait_for 30 ready_column topics ftp orders-eu True
check "status shows what the cluster holds" wait_for 30 bash -c "[[ \$('$KUBECTL' -n topics get topic orders-eu -o jsonpath='{.status.cluster.queues}') == 8 ]]"
check "schema refuses shrinking queues" refused 'queues may only grow' k -n topics patch topic orders-eu --type merge -p '{"spec":{"queues":2}}'
# spec.retention: applied on change (as the broker writes it: 24h is 1d), longer than the
# broker's refused by it, removed back to the broker's.
k -n topics patch topic orders-eu --type merge -p '{"spec":{"retention":"24h"}}' >/dev/null
check "spec.retention reaches the cluster" wait_for 60 bash -c \
  "'$FERROMQ_BIN' admin --server 127.0.0.1:$grpc_port -o json topic describe Orders_EU | python3 -c 'import json,sys; t=json.load(sys.stdin); sys.exit(0 if t[\"retention\"] == \"1d\" else 1)'"
check "status shows the retention the cluster holds" wait_for 30 bash -c "[[ \$('$KUBECTL' -n topics get topic orders-eu -o jsonpath='{.status.cluster.retention}') == 1d ]]"
k -n topics patch topic orders-eu --type merge -p '{"spec":{"retention":"30d"}}' >/dev/null
check "a retention above the broker's is refused by it (AdminApiRefused)" wait_for 60 equals_in topics topic orders-eu \
  '{.status.conditions[?(@.type=="Degraded")].reason}' AdminApiRefused
k -n topics patch topic orders-eu --type json -p '[{"op":"remove","path":"/spec/retention"}]' >/dev/null
check "removing spec.retention goes back to the broker's" wait_for 60 bash -c \
  "'$FERROMQ_BIN' admin --server 127.0.0.1:$grpc_port -o json topic describe Orders_EU | python3 -c 'import json,sys; t=json.load(sys.stdin); sys.exit(0 if t[\"retention\"] is None and t[\"effective_retention\"] == \"3d\" else 1)'"
# A topic the cluster already holds with more queues than the Topic asks for: the cluster
# refuses to shrink it, and the Topic says so with the cluster's status code and words.
"$FERROMQ_BIN" admin --server "127.0.0.1:$grpc_port" topic create Wide --queues 8 >/dev/null
k -n topics apply -f - >/dev/null <<'YAML'
apiVersion: ferromq.io/v1alpha1
kind: Topic
metadata: {name: wide}
spec: {brokerRef: {name: local}, name: Wide, queues: 4}
YAML
check "a refusal by the cluster is reported as such (AdminApiRefused)" wait_for 60 equals_in topics topic wide \
  '{.status.conditions[?(@.type=="Degraded")].reason}' AdminApiRefused
check "the condition carries the status code and the cluster's message" bash -c \
  "'$KUBECTL' -n topics get topic wide -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].message}' | tee /dev/stderr | grep -q 'UpdateTopic answered InvalidArgument: queues can only grow'"
k -n topics delete topic wide --wait=false >/dev/null
k -n topics delete topic orders-eu --wait=false >/dev/null
check "deleting the Topic deletes the topic on the cluster" wait_for 60 bash -c "! '$FERROMQ_BIN' admin --server 127.0.0.1:$grpc_port -o json topic describe Orders_EU >/dev/null 2>&1"
check "the finalizer then lets the resource go" wait_for 30 bash -c "! '$KUBECTL' -n topics get topic orders-eu >/dev/null 2>&1"
stop_proc "$op_pid" || true; op_pid=""
stop_proc "$sa_pid" || true; sa_pid=""
topic_s=$((SECONDS - t))

echo "== User against a real ferromq standalone with --auth (operator's --admin-address override)"
t=$SECONDS
users_dir="$state/users"
mkdir -p "$users_dir"
printf 'suite-60-super-secret\n' >"$users_dir/admin.secret"
auth_port="$(free_port)"
auth_http="$(free_port)"
"$FERROMQ_BIN" standalone --data-dir "$users_dir/data" --grpc-addr "127.0.0.1:$auth_port" \
  --http-addr "127.0.0.1:$auth_http" --remoting-addr off --auth --auth-super-user admin \
  --auth-super-secret-file "$users_dir/admin.secret" >"$state/standalone-auth.log" 2>&1 &
sa_pid=$!
check "ferromq standalone --auth becomes ready" wait_for 60 curl -sf "http://127.0.0.1:$auth_http/readyz"
as_admin() { "$FERROMQ_BIN" admin --server "127.0.0.1:$auth_port" --access-key admin --secret-file "$users_dir/admin.secret" "$@"; }
# produced TOPIC: messages a one-second produce with the User's Secret got acknowledged (0 when refused).
produced() {
  "$FERROMQ_BIN" bench produce --server "127.0.0.1:$auth_port" --access-key orders-app \
    --secret-file "$users_dir/app.secret" --topic "$1" --queues 1 --clients 1 --rate 20 --duration 1s --json 2>/dev/null |
    python3 -c 'import json,sys
try: print(json.loads(sys.stdin.read().strip().splitlines()[-1])["messages"])
except Exception: print(0)'
}
produced_some() { [[ "$(produced "$1")" -gt 0 ]]; }
produced_none() { [[ "$(produced "$1")" -eq 0 ]]; }
user_gone() { ! as_admin user describe orders-app >/dev/null 2>&1; }
acl_has() { as_admin -o json acl describe --user orders-app | tee /dev/stderr | grep -q -- "$1"; }
refused_by_schema_in() {
  # Like refused_by_schema, in namespace $1.
  local ns="$1" out
  shift
  if out="$(k -n "$ns" apply --dry-run=server -f - 2>&1)"; then
    echo "accepted: $out"
    return 1
  fi
  echo "$out"
  grep -q -- "$1" <<<"$out"
}
k create namespace users >/dev/null
k -n users create secret generic ops-admin --from-literal=accessKey=admin \
  --from-literal=secretKey=suite-60-super-secret >/dev/null
KUBECONFIG="$cp_dir/operator.kubeconfig" "$OPERATOR" run --namespace users --lease-namespace users \
  --http-addr "127.0.0.1:$(free_port)" --admin-address "127.0.0.1:$auth_port" \
  --log-format text >"$state/operator-users.log" 2>&1 &
op_pid=$!
k -n users apply -f - >/dev/null <<'YAML'
apiVersion: ferromq.io/v1alpha1
kind: Broker
metadata: {name: local}
spec:
  nameserverRef: {name: names}
  image: "ferromq:e2e"
  storage: {groups: 1, volume: {size: 1Gi}}
  compute: {replicas: 1}
  auth: {enabled: true, superUserSecretRef: {name: ops-admin}}
---
apiVersion: ferromq.io/v1alpha1
kind: Topic
metadata: {name: allowed-1}
spec: {brokerRef: {name: local}, queues: 1}
---
apiVersion: ferromq.io/v1alpha1
kind: Topic
metadata: {name: other}
spec: {brokerRef: {name: local}, queues: 1}
---
apiVersion: ferromq.io/v1alpha1
kind: User
metadata: {name: orders-app}
spec:
  brokerRef: {name: local}
  policies:
    - {resource: "topic:allowed-*", actions: [publish]}
    - {resource: "topic:allowed-secret", actions: [publish], effect: deny}
YAML
check "schema refuses an unknown action on a User (server dry-run)" refused_by_schema_in users 'Unsupported value: "send"' <<'YAML'
apiVersion: ferromq.io/v1alpha1
kind: User
metadata: {name: bad}
spec: {brokerRef: {name: local}, policies: [{resource: "topic:a", actions: [send]}]}
YAML
check "Topics on a cluster with --auth become Ready (signed as the super user)" wait_for 60 bash -c \
  "[[ \$('$KUBECTL' -n users get topic allowed-1 -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].reason}') == Synced ]]"
check "the User becomes Ready (Synced)" wait_for 60 equals_in users user orders-app \
  '{.status.conditions[?(@.type=="Ready")].reason}' Synced
check "the operator created the user and its policy on the cluster" acl_has 'topic:allowed-secret'
check "the User's Secret holds its access key" equals_in users secret orders-app '{.data.accessKey}' "$(printf orders-app | base64)"
k -n users get secret orders-app -o jsonpath='{.data.secretKey}' | base64 -d >"$users_dir/app.secret"
check "the Secret's credentials send to an allowed topic" produced_some allowed-1
check "... and are refused on a topic the policy does not cover" produced_none other
k -n users delete user orders-app --wait=false >/dev/null
check "deleting the User deletes the user on the cluster" wait_for 60 user_gone
check "... so its credentials are refused" produced_none allowed-1
check "the finalizer then lets the User go" wait_for 30 bash -c "! '$KUBECTL' -n users get user orders-app >/dev/null 2>&1"
check "no secret reached the operator's log" bash -c "! grep -q -e suite-60-super-secret -e \"\$(cat '$users_dir/app.secret')\" '$state/operator-users.log'"
k -n users delete topic allowed-1 other --wait=false >/dev/null
stop_proc "$op_pid" || true; op_pid=""
stop_proc "$sa_pid" || true; sa_pid=""
users_s=$((SECONDS - t))

echo "== Removing a broker group drains it first (real name server, two broker groups and a proxy)"
t=$SECONDS
ns_port="$(free_port)"; px_port="$(free_port)"
cluster_pids=()
"$FERROMQ_BIN" nameserver --addr "127.0.0.1:$ns_port" --http-addr "127.0.0.1:$(free_port)" >"$state/ns.log" 2>&1 &
cluster_pids+=($!)
for i in 0 1; do
  "$FERROMQ_BIN" broker --group "shrink-group-$i" --nameservers "127.0.0.1:$ns_port" --addr "127.0.0.1:$(free_port)" \
    --http-addr "127.0.0.1:$(free_port)" --data-dir "$state/shrink-group-$i" >"$state/shrink-group-$i.log" 2>&1 &
  cluster_pids+=($!)
done
"$FERROMQ_BIN" proxy --nameservers "127.0.0.1:$ns_port" --grpc-addr "127.0.0.1:$px_port" \
  --http-addr "127.0.0.1:$(free_port)" --route-refresh 500ms --remoting-addr off >"$state/proxy.log" 2>&1 &
cluster_pids+=($!)
check "the proxy sees both broker groups" wait_for 30 bash -c \
  "'$FERROMQ_BIN' admin --server 127.0.0.1:$px_port -o json cluster list | python3 -c 'import json,sys; sys.exit(0 if len(json.load(sys.stdin)) == 2 else 1)'"
"$FERROMQ_BIN" admin --server "127.0.0.1:$px_port" topic create drainme --queues 2 >/dev/null
sleep 1.5
# A consumer group that is behind: it exists (one short consume), then 400 more messages arrive.
"$FERROMQ_BIN" bench consume --server "127.0.0.1:$px_port" --topic drainme --group shrink-readers --clients 1 \
  --duration 2s >/dev/null 2>&1 || true
"$FERROMQ_BIN" bench produce --server "127.0.0.1:$px_port" --topic drainme --queues 2 --clients 2 --rate 400 \
  --duration 1s >/dev/null 2>&1
k create namespace shrink >/dev/null
KUBECONFIG="$cp_dir/operator.kubeconfig" "$OPERATOR" run --namespace shrink --lease-namespace shrink \
  --http-addr "127.0.0.1:$(free_port)" --admin-address "127.0.0.1:$px_port" \
  --log-format text >"$state/operator-shrink.log" 2>&1 &
op_pid=$!
k -n shrink apply -f - >/dev/null <<'YAML'
apiVersion: ferromq.io/v1alpha1
kind: Nameserver
metadata: {name: names}
spec: {replicas: 1, image: "ferromq:e2e"}
---
apiVersion: ferromq.io/v1alpha1
kind: Broker
metadata: {name: shrink}
spec:
  nameserverRef: {name: names}
  image: "ferromq:e2e"
  storage: {groups: 2, volume: {size: 1Gi}}
  compute: {replicas: 1}
YAML
check "two broker group StatefulSets" wait_for 30 equals_in shrink statefulset shrink-group-1 '{.spec.replicas}' 1
k -n shrink patch broker shrink --type merge -p '{"spec":{"storage":{"groups":1}}}' >/dev/null
check "the removed group is drained through the proxy (read-only)" wait_for 30 bash -c \
  "'$FERROMQ_BIN' admin --server 127.0.0.1:$px_port -o json cluster list | python3 -c 'import json,sys; g={x[\"name\"]: x[\"state\"] for x in json.load(sys.stdin)}; sys.exit(0 if g.get(\"shrink-group-1\") == \"read-only\" else 1)'"
check "status shows the drain while messages remain" wait_for 30 bash -c \
  "[[ \$('$KUBECTL' -n shrink get broker shrink -o jsonpath='{.status.storage.draining[0]}') == shrink-group-1 ]]"
check "the draining group's StatefulSet is kept" equals_in shrink statefulset shrink-group-1 '{.spec.replicas}' 1
"$FERROMQ_BIN" bench consume --server "127.0.0.1:$px_port" --topic drainme --group shrink-readers --clients 2 \
  --duration 8s >/dev/null 2>&1 || true
check "once consumers caught up the group's StatefulSet goes" wait_for 60 bash -c \
  "! '$KUBECTL' -n shrink get statefulset shrink-group-1 >/dev/null 2>&1"
check "status no longer lists a drain" wait_for 30 bash -c \
  "[[ -z \$('$KUBECTL' -n shrink get broker shrink -o jsonpath='{.status.storage.draining[*]}') ]]"
stop_proc "$op_pid" || true; op_pid=""
for p in "${cluster_pids[@]}"; do kill "$p" 2>/dev/null || true; done
wait "${cluster_pids[@]}" 2>/dev/null || true
drain_s=$((SECONDS - t))

if ((failed > 0)); then
  for f in operator.log standby.log operator-topics.log standalone.log operator-users.log standalone-auth.log operator-shrink.log proxy.log; do
    [[ -f "$state/$f" ]] || continue
    echo "--- $f (last 30 lines)"
    tail -30 "$state/$f"
  done
  rc=1
fi
echo "60-operator: timings: Go build/cache ${build_s}s, control plane start ${start_s}s, rust integration ${rust_s}s, roll-out ${rollout_s}s, binary+kubectl ${e2e_s}s, real-topic ${topic_s}s, real-user ${users_s:-0}s, real-drain ${drain_s:-0}s, suite $((SECONDS - suite_start))s"
if ((rc != 0 && failed == 0)); then
  echo "operator-e2e: $passed checks passed, but a cargo integration test above FAILED"
else
  echo "operator-e2e: $passed passed, $failed failed"
fi
exit "$rc"
