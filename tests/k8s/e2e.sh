#!/usr/bin/env bash
# FerroMQ on a real Kubernetes cluster, end to end: the steps shared by suite 75 (a cluster of
# real components started by tests/k8s/cluster.sh) and tests/e2e/kind.sh (kind, for users with
# Docker), so both paths are the same test. The caller brings a cluster whose node runs pods,
# has a default StorageClass, resolves cluster DNS, holds both images under
# ghcr.io/ferromq/{ferromq,ferromq-operator} with the tags below (the chart's defaults), and
# routes this host to Service and pod addresses (the clients run here and dial the proxy
# Service's ClusterIP, as an application in the cluster would).
#
# Environment: KUBECONFIG; FERROMQ_E2E_WORK (scratch directory, default a new temp dir);
# FERROMQ_E2E_TAG (default: the chart's appVersion) and FERROMQ_E2E_UPGRADE_TAG (a second tag
# of the same images, for the helm upgrade); HELM and KUBECTL (default: from PATH);
# FERROMQ_E2E_CLIENTS (default python,java); TIMEOUT (seconds per wait, default 300).
#
# Steps (each check prints ok/FAILED; loss is reported as acknowledged/lost/duplicated/unexpected):
#  1. helm install: the operator pod becomes Ready under the chart's ServiceAccount and leads.
#  2. examples/ (Nameserver, a Broker with 2 groups, the four Topics): every pod Ready through
#     its probes, PVCs bound, headless names resolve in pods, `kubectl get ferromq` columns.
#  3. The official Python and Java clients through the proxy Service: normal, FIFO, delay and
#     transaction scenarios (tests/clients), on Topics created as resources.
#  4. `kubectl scale broker demo --replicas=3` while a producer runs: nothing acknowledged lost.
#  5. spec.storage.groups 2 -> 3 (the new group receives messages) -> 2 (drained first) under load.
#  6. `kubectl delete pod` of a broker: back on the same claim with every acknowledged message.
#  7. examples/replicated.yaml (3 name servers running the replication controller, one group of
#     3 members in sync replication, started beside steps 3-6): the group's leader pod is
#     force-deleted while a producer runs through its proxy; status names another leader at a
#     higher epoch, the pod comes back into the in-sync set, nothing acknowledged is lost, and
#     the longest pause between acknowledged sends is printed (the failover gap).
#  8. A rolling change of that group (a pod template annotation) under load: the operator
#     restarts the followers first and switches the lead over before it restarts the leader.
#  9. helm upgrade with another image tag (operator and the chart's example cluster) under load.
# 10. helm test. 11. helm uninstall leaves no operator objects (claims and CRDs stay, documented).
set -uo pipefail
ROOT="${FERROMQ_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
export FERROMQ_ROOT="$ROOT"
export FERROMQ_TEST_CACHE="${FERROMQ_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ferromq-tests}"
CHART="$ROOT/charts/ferromq"
APP_VERSION="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$CHART/Chart.yaml")"
TAG="${FERROMQ_E2E_TAG:-$APP_VERSION}"
UPGRADE_TAG="${FERROMQ_E2E_UPGRADE_TAG:-$APP_VERSION-next}"
HELM="${HELM:-helm}"
KUBECTL="${KUBECTL:-kubectl}"
TIMEOUT="${TIMEOUT:-300}"
CLIENTS="${FERROMQ_E2E_CLIENTS:-python,java}"
NS=demo
HA=ha
SYS=ferromq-system
state="${FERROMQ_E2E_WORK:-$(mktemp -d /tmp/ferromq-e2e.XXXXXX)}"
mkdir -p "$state/logs"
export FERROMQ_CLIENT_LOGS="$state/logs"

# shellcheck source=../clients/lib.sh
source "$ROOT/tests/clients/lib.sh"
# shellcheck source=checks.sh
source "$ROOT/tests/k8s/checks.sh"

timings=()
step_name=""
step_t=$SECONDS
step() { # step TITLE: starts a step; the previous one's wall time goes into the summary
  [[ -n "$step_name" ]] && timings+=("${step_name%%.*}:$((SECONDS - step_t))s")
  step_name="$1"
  step_t=$SECONDS
  echo "== $*"
}
jp() { k -n "$1" get "$2" -o "jsonpath=$3" 2>/dev/null; }

# helm with its state in the scratch directory (the caller's repositories are not needed).
helm_() {
  HELM_CACHE_HOME="$state/helm/cache" HELM_CONFIG_HOME="$state/helm/config" HELM_DATA_HOME="$state/helm/data" \
    "$HELM" "$@"
}

# Shown when something failed: what the cluster looked like.
dump() {
  echo "--- cluster state"
  k get pods -A -o wide 2>&1 | head -40
  k -n "$NS" get ferromq,pvc 2>&1 | head -20
  k -n "$HA" get ferromq,pvc 2>&1 | head -20
  k -n "$SYS" logs deployment/ferromq --tail=30 2>&1 | tail -30
  k get events -A --sort-by=.lastTimestamp 2>&1 | tail -25
}

# ---------------------------------------------------------------- loss checking (tests/k8s/loss.py)
# loss_start NAME ENDPOINT TOPIC [loss.py flags]: starts a producer (and its consumer group).
declare -A loss_pid
loss_start() {
  local name="$1" endpoint="$2" topic="$3"
  shift 3
  rm -f "$state/$name.stop"
  "$VENV/bin/python" "$ROOT/tests/k8s/loss.py" --endpoint "$endpoint" --topic "$topic" \
    --group "e2e_${name}_$RANDOM" --stop "$state/$name.stop" --report "$state/$name.json" "$@" \
    >"$state/logs/loss-$name.log" 2>&1 &
  loss_pid[$name]=$!
}
# loss_stop NAME: stops the producer, waits for the verdict, prints and checks it.
loss_stop() {
  local name="$1" status=0
  touch "$state/$name.stop"
  wait "${loss_pid[$name]}" || status=$?
  echo "   $name: $(grep -E '^(PASS|FAIL) ' "$state/logs/loss-$name.log" | tail -1)"
  check "$2" test "$status" -eq 0
  ((status == 0)) || tail -5 "$state/logs/loss-$name.log" | sed 's/^/    /'
}

ready_pods() { # ready_pods NS SELECTOR WANT: exactly WANT pods, all Ready
  local n
  n="$(k -n "$1" get pods -l "$2" -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True)"
  [[ "$n" == "$3" && "$(k -n "$1" get pods -l "$2" --no-headers 2>/dev/null | wc -l)" == "$3" ]]
}
resource_ready() { [[ "$(jp "$1" "$2" '{.status.conditions[?(@.type=="Ready")].status}')" == True ]]; }
all_pods_ready() {
  [[ -n "$(k -n "$1" get pods --no-headers 2>/dev/null)" ]] &&
    k -n "$1" wait pods --all --for=condition=Ready --timeout=1s >/dev/null 2>&1
}

# ---------------------------------------------------------------- 1. helm install
step "1. helm install charts/ferromq (images ghcr.io/ferromq/*:$TAG)"
check "helm install (chart defaults, operator image ghcr.io/ferromq/ferromq-operator:$TAG)" helm_ install ferromq "$CHART" \
  --namespace "$SYS" --create-namespace --set image.tag="$TAG" --wait --timeout "${TIMEOUT}s"
OP_SEL=app.kubernetes.io/instance=ferromq,app.kubernetes.io/component=operator
check "the operator pod is Running and Ready (its /healthz probes)" wait_for "$TIMEOUT" ready_pods "$SYS" "$OP_SEL" 1
op_pod="$(k -n "$SYS" get pods -l "$OP_SEL" -o jsonpath='{.items[0].metadata.name}')"
check "the operator pod runs under the chart's ServiceAccount" \
  test "$(jp "$SYS" "pod/$op_pod" '{.spec.serviceAccountName}')" = ferromq
check "the operator (with that account's token) holds the chart's Lease" wait_for 60 \
  bash -c "[[ \$('$KUBECTL' -n $SYS get lease ferromq -o jsonpath='{.spec.holderIdentity}') == '$op_pod' ]]"

# ---------------------------------------------------------------- 2. examples
step "2. examples/: Nameserver, Broker (2 groups), Topics"
k create namespace "$NS" >/dev/null 2>&1
# The README's example with two groups, and a 2 s transaction check-back (the client scenario
# waits for one); everything else as written.
# Both clusters refuse sends only above 99 % of their volume: the test's volumes live on the host's
# disk, which other work may fill past the default 90 %.
sed -e 's/^    groups: 1$/    groups: 2/' -e 's/^    flushMode: Async$/&\n    diskHighWater: 99/' \
  -e '/^kind: Broker/,$ s/^  image: \(.*\)$/  image: \1\n  config:\n    transaction-check-interval: "2s"/' \
  -e "s#ghcr.io/ferromq/ferromq:$APP_VERSION#ghcr.io/ferromq/ferromq:$TAG#" \
  "$ROOT/examples/cluster.yaml" >"$state/cluster.yaml"
check "kubectl apply examples/cluster.yaml (2 groups) and examples/topics.yaml" \
  k -n "$NS" apply -f "$state/cluster.yaml" -f "$ROOT/examples/topics.yaml"
check "the Broker asks for 2 groups" test "$(jp "$NS" broker/demo '{.spec.storage.groups}')" = 2
check "Nameserver Ready" wait_for "$TIMEOUT" resource_ready "$NS" nameserver/demo-names
check "Broker Ready" wait_for "$TIMEOUT" resource_ready "$NS" broker/demo
check "every pod Running and Ready (1 name server, 2 broker groups, 2 proxies)" wait_for "$TIMEOUT" \
  bash -c "[[ \$('$KUBECTL' -n $NS get pods --no-headers | wc -l) == 5 ]] && '$KUBECTL' -n $NS wait pods --all --for=condition=Ready --timeout=1s"
topics_ready() {
  local t
  for t in orders payments-fifo reminders-delay checkout-tx; do resource_ready "$NS" "topic/$t" || return 1; done
}
check "the four example Topics Ready (created on the cluster)" wait_for "$TIMEOUT" topics_ready
check "each group's claim is Bound to a volume" bash -c \
  "[[ \$('$KUBECTL' -n $NS get pvc -o jsonpath='{range .items[*]}{.status.phase}{\"\\n\"}{end}' | grep -c Bound) == 2 ]]"
k -n "$NS" get ferromq >"$state/get-ferromq.txt" 2>&1
sed 's/^/    /' "$state/get-ferromq.txt"
check "kubectl get ferromq shows the printer columns" bash -c \
  "grep -q '^NAME .*READY' '$state/get-ferromq.txt' && grep -q '^nameserver.ferromq.io/demo-names' '$state/get-ferromq.txt' && grep -q '^topic.ferromq.io/checkout-tx' '$state/get-ferromq.txt'"
check "a headless broker name resolves inside a pod (CoreDNS)" k -n "$NS" exec demo-group-0-0 -- \
  getent hosts "demo-group-1-0.demo-group-1.$NS.svc.cluster.local"
ENDPOINT="$(jp "$NS" service/demo '{.spec.clusterIP}'):8081"
echo "   proxy Service demo: $ENDPOINT"

# The replicated cluster of step 7 starts now, beside steps 3-6 (its members start one after
# another, and its controller elects): examples/replicated.yaml with one group of 3 members and
# one proxy, in a namespace of its own, plus a Topic.
sed -e 's/^    groups: 2$/    groups: 1/' -e 's/^    flushMode: Async$/&\n    diskHighWater: 99/' -e '/^  compute:/,$ s/^    replicas: 2$/    replicas: 1/' \
  -e "s#ghcr.io/ferromq/ferromq:$APP_VERSION#ghcr.io/ferromq/ferromq:$TAG#" \
  "$ROOT/examples/replicated.yaml" >"$state/replicated.yaml"
cat >>"$state/replicated.yaml" <<'YAML'
---
apiVersion: ferromq.io/v1alpha1
kind: Topic
metadata: {name: ha-orders}
spec: {brokerRef: {name: ha}, queues: 4, messageType: NORMAL}
YAML
k create namespace "$HA" >/dev/null 2>&1
check "kubectl apply examples/replicated.yaml (1 group of 3, sync, minInSync 2) in namespace $HA" \
  k -n "$HA" apply -f "$state/replicated.yaml"

# ---------------------------------------------------------------- 3. official clients
step "3. official clients through the proxy Service ($CLIENTS)"
# Topics as resources (the operator creates them); groups through the admin API in a proxy pod.
create_topic() {
  local res
  res="$(tr 'A-Z_' 'a-z-' <<<"$1")"
  k -n "$NS" apply -f - >/dev/null <<YAML || return 1
apiVersion: ferromq.io/v1alpha1
kind: Topic
metadata: {name: $res}
spec: {brokerRef: {name: demo}, name: $1, messageType: ${2^^}, queues: $3}
YAML
  k -n "$NS" wait "topic/$res" --for=condition=Ready --timeout="${TIMEOUT}s" >/dev/null
}
admin_in_proxy() { k -n "$NS" exec deployment/demo-proxy -- ferromq admin --server 127.0.0.1:8081 "$@"; }
create_fifo_group() { admin_in_proxy group update "$1" --fifo true >/dev/null; }
create_dlq_group() { admin_in_proxy group update "$1" --max-attempts "$2" >/dev/null; }
for s in tag_filter sql_filter redelivery dead_letter push_consume push_retry unknown_topic oversized_body recall priority; do
  export "FERROMQ_SKIP_${s^^}=suite 30 runs it (loopback); this suite covers the example message types"
done
export FERROMQ_ENDPOINT="$ENDPOINT" FERROMQ_SCENARIOS=send_receive_ack,fifo_order,delay,transaction
check "the Python client installs (it also drives the loss checks)" build_python
prepare_and_run_suites "$CLIENTS" >"$state/logs/clients.log" 2>&1
scenario_passed() { # scenario_passed CLIENT SCENARIO: its line in the results says PASS
  grep -q "^$1 $2 PASS" "$FERROMQ_RESULTS_FILE" || { grep "^$1 $2 " "$FERROMQ_RESULTS_FILE"; tail -20 "$state/logs/clients.log"; return 1; }
}
for c in ${CLIENTS//,/ }; do
  for s in send_receive_ack fifo_order delay transaction; do
    check "$c client: $s through $ENDPOINT" scenario_passed "$c" "$s"
  done
done
grep -E '^(python|java) (send_receive_ack|fifo_order|delay|transaction) ' "$FERROMQ_RESULTS_FILE" | sed 's/^/    /'

# ---------------------------------------------------------------- 4. compute tier scale-out
step "4. kubectl scale broker demo --replicas=3 under load"
gen0="$(jp "$NS" statefulset/demo-group-0 '{.metadata.generation}')"
loss_start scale "$ENDPOINT" orders
sleep 5
check "kubectl scale broker demo --replicas=3" k -n "$NS" scale broker demo --replicas=3
check "3 proxy pods Ready" wait_for "$TIMEOUT" ready_pods "$NS" app.kubernetes.io/instance=demo,app.kubernetes.io/component=proxy 3
check "the storage tier was not touched" test "$(jp "$NS" statefulset/demo-group-0 '{.metadata.generation}')" = "$gen0"
sleep 5
loss_stop scale "no acknowledged message lost while proxies were added"

# ---------------------------------------------------------------- 5. storage tier: grow and shrink
step "5. spec.storage.groups 2 -> 3 -> 2 under load"
group_messages() { # messages held by GROUP for TOPIC, as the cluster reports them
  admin_in_proxy -o json topic describe "$1" 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(sum(q["messages"] for q in d.get("queue_offsets", []) if q.get("broker_group") == sys.argv[1]))' "$2"
}
loss_start groups "$ENDPOINT" orders
sleep 3
check "patch spec.storage.groups to 3" k -n "$NS" patch broker demo --type merge -p '{"spec":{"storage":{"groups":3}}}'
check "the third group's pod Ready" wait_for "$TIMEOUT" ready_pods "$NS" ferromq.io/group=demo-group-2 1
check "the Broker is Ready with 3 groups" wait_for "$TIMEOUT" bash -c \
  "[[ \$('$KUBECTL' -n $NS get broker demo -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}/{.status.observedGeneration}') == True/\$('$KUBECTL' -n $NS get broker demo -o jsonpath='{.metadata.generation}') ]]"
new_group_receives() { (($(group_messages orders demo-group-2) > 0)); }
check "the new group receives messages of topic orders (the operator extends the Topics to it)" wait_for 120 new_group_receives
echo "   messages on demo-group-2: $(group_messages orders demo-group-2); groups holding queues of orders:" \
  "$(admin_in_proxy -o json topic describe orders 2>/dev/null | python3 -c '
import json, sys
print(" ".join(sorted({q.get("broker_group", "?") for q in json.load(sys.stdin).get("queue_offsets", [])})))')"
check "patch spec.storage.groups back to 2" k -n "$NS" patch broker demo --type merge -p '{"spec":{"storage":{"groups":2}}}'
check "the surplus group is drained, then removed" wait_for "$TIMEOUT" bash -c \
  "! '$KUBECTL' -n $NS get statefulset demo-group-2 >/dev/null 2>&1"
check "the Broker is Ready with 2 groups" wait_for "$TIMEOUT" resource_ready "$NS" broker/demo
loss_stop groups "no acknowledged message lost while a group was added and drained away"

# ---------------------------------------------------------------- 6. a broker pod deleted
step "6. kubectl delete pod demo-group-0-0"
claim_uid="$(jp "$NS" pvc/data-demo-group-0-0 '{.metadata.uid}')"
volume="$(jp "$NS" pvc/data-demo-group-0-0 '{.spec.volumeName}')"
pod_uid="$(jp "$NS" pod/demo-group-0-0 '{.metadata.uid}')"
# Consumed only after the pod is back: what is read was stored before, on the volume.
loss_start podkill "$ENDPOINT" orders --consume-after-stop
sleep 8
check "kubectl delete pod demo-group-0-0" k -n "$NS" delete pod demo-group-0-0 --timeout="${TIMEOUT}s"
pod_back() {
  [[ "$(jp "$NS" pod/demo-group-0-0 '{.metadata.uid}')" != "$pod_uid" ]] && ready_pods "$NS" ferromq.io/group=demo-group-0 1
}
check "the pod comes back Ready" wait_for "$TIMEOUT" pod_back
check "on the same claim and volume" bash -c "[[ '$(jp "$NS" pvc/data-demo-group-0-0 '{.metadata.uid}')' == '$claim_uid' &&
  \$('$KUBECTL' -n $NS get pvc data-demo-group-0-0 -o jsonpath='{.spec.volumeName}') == '$volume' &&
  \$('$KUBECTL' -n $NS get pod demo-group-0-0 -o jsonpath='{.spec.volumes[?(@.name==\"data\")].persistentVolumeClaim.claimName}') == data-demo-group-0-0 ]]"
sleep 5
loss_stop podkill "every acknowledged message is read back after the pod returned"

# ---------------------------------------------------------------- 7. replicated group: leader killed
step "7. replicated group of 3 (sync): the leader's pod killed under load"
HA_GROUP=ha-group-0
repl() { jp "$HA" broker/ha "{.status.storage.replication[?(@.group==\"$HA_GROUP\")].$1}"; }
whole_set_in_sync() { [[ -n "$(repl leader)" && "$(repl inSync)" == 3 ]]; }
admin_ha() { k -n "$HA" exec deployment/ha-proxy -- ferromq admin --server 127.0.0.1:8081 "$@"; }
check "Nameserver ha-names Ready (3 pods, the replication controller's Raft group)" wait_for "$TIMEOUT" resource_ready "$HA" nameserver/ha-names
check "Broker ha Ready" wait_for "$TIMEOUT" resource_ready "$HA" broker/ha
check "status.storage.replication: $HA_GROUP has a leader and 3 in-sync members" wait_for "$TIMEOUT" whole_set_in_sync
check "Topic ha-orders Ready" wait_for "$TIMEOUT" resource_ready "$HA" topic/ha-orders
check "the group's PodDisruptionBudget lets one member go at a time" \
  test "$(jp "$HA" "pdb/$HA_GROUP" '{.spec.maxUnavailable}')" = 1
k -n "$HA" get broker ha -o wide 2>&1 | sed 's/^/    /'
wide_shows_leader() {
  local out
  out="$(k -n "$HA" get broker ha -o wide)" || return 1
  grep -q 'LEADERS *EPOCHS *IN-SYNC' <<<"$out" &&
    awk 'NR == 2' <<<"$out" | grep -qw -- "$(repl leader)"
}
check "kubectl get broker -o wide shows each group's leader, epoch and in-sync count" wide_shows_leader
admin_ha cluster list 2>&1 | sed 's/^/    /'
leader="$(repl leader)"
epoch="$(repl epoch)"
victim="$HA_GROUP-$((leader - 1))"
victim_uid="$(jp "$HA" "pod/$victim" '{.metadata.uid}')"
HA_ENDPOINT="$(jp "$HA" service/ha '{.spec.clusterIP}'):8081"
loss_start failover "$HA_ENDPOINT" ha-orders
sleep 6
# A crash, not a switchover: the API object goes at once, the kubelet kills the container
# (SIGKILL 2 s after SIGTERM at most) and a member that stops does not hand its lead over:
# the controller elects once the leader's heartbeats stop.
check "kubectl delete pod $victim --grace-period=0 --force (the leader: replica $leader, epoch $epoch)" \
  k -n "$HA" delete pod "$victim" --grace-period=0 --force
killed_at=$SECONDS
new_leader() { local l e; l="$(repl leader)" e="$(repl epoch)"; [[ -n "$l" && "$l" != "$leader" && "${e:-0}" -gt "$epoch" ]]; }
check "status names another leader at a higher epoch" wait_for 120 new_leader
echo "   status: leader replica $(repl leader) at epoch $(repl epoch) (was $leader at $epoch), $((SECONDS - killed_at)) s after the kill"
rejoined() {
  [[ "$(jp "$HA" "pod/$victim" '{.metadata.uid}')" != "$victim_uid" ]] && ready_pods "$HA" "ferromq.io/group=$HA_GROUP" 3 &&
    [[ "$(repl inSync)" == 3 && " $(repl 'inSyncReplicas[*]') " == *" $leader "* ]]
}
check "the killed member's pod comes back and re-enters the in-sync set" wait_for "$TIMEOUT" rejoined
echo "   status: leader $(repl leader), epoch $(repl epoch), in sync: $(repl 'inSyncReplicas[*]') ($((SECONDS - killed_at)) s after the kill)"
admin_ha cluster list 2>&1 | sed 's/^/    /'
sleep 3
loss_stop failover "no acknowledged message lost across the leader's crash (sync replication)"

# ---------------------------------------------------------------- 8. replicated group: rolling change
step "8. a rolling change of the replicated group: followers first, the lead switched over"
member_pods() { k -n "$HA" get pods -l "ferromq.io/group=$HA_GROUP" -o jsonpath='{range .items[*]}{.metadata.name}={.metadata.uid}{" "}{end}'; }
before="$(member_pods)"
leader="$(repl leader)"
epoch="$(repl epoch)"
loss_start roll "$HA_ENDPOINT" ha-orders
sleep 4
check "patch spec.storage.podTemplate.annotations (a change of the members' pod template)" \
  k -n "$HA" patch broker ha --type merge -p '{"spec":{"storage":{"podTemplate":{"annotations":{"e2e.ferromq.io/roll":"1"}}}}}'
rolled_started=$SECONDS
all_rolled() {
  local p
  for p in $before; do [[ " $(member_pods) " != *" $p "* ]] || return 1; done
  ready_pods "$HA" "ferromq.io/group=$HA_GROUP" 3 && [[ "$(repl inSync)" == 3 && -n "$(repl leader)" ]]
}
check "every member replaced, one at a time, and all 3 back in sync" wait_for "$TIMEOUT" all_rolled
echo "   rolled in $((SECONDS - rolled_started)) s; leader $(repl leader) at epoch $(repl epoch) (was $leader at $epoch)"
k -n "$HA" get events --sort-by=.lastTimestamp -o jsonpath='{range .items[*]}{.reason}{": "}{.message}{"\n"}{end}' 2>/dev/null |
  grep -E '^(MemberRestarted|Switchover)' | tail -4 | sed 's/^/    /'
check "the operator switched the lead over before restarting the leader (a Switchover event)" bash -c \
  "'$KUBECTL' -n $HA get events -o jsonpath='{range .items[*]}{.reason}{\"\\n\"}{end}' | grep -qx Switchover"
check "the old leader's pod was restarted last" bash -c "[[ \$('$KUBECTL' -n $HA get pods -l ferromq.io/group=$HA_GROUP \
  --sort-by=.metadata.creationTimestamp -o jsonpath='{.items[2].metadata.name}') == $HA_GROUP-$((leader - 1)) ]]"
sleep 3
loss_stop roll "no acknowledged message lost while the group rolled"

step "   deleting namespaces $NS and $HA (their Topics go through the operator's finalizer)"
check "namespaces $NS and $HA deleted" k delete namespace "$NS" "$HA" --timeout="${TIMEOUT}s"

# ---------------------------------------------------------------- 9. helm upgrade under load
step "9. helm upgrade: image tag $TAG -> $UPGRADE_TAG under load"
# The loss client (tests/k8s/loss.py) sends unsigned: the example cluster runs without the
# chart's default authentication here (suite 60 covers Users and signed clients).
check "helm upgrade --set exampleCluster.enabled=true (the chart's own cluster)" helm_ upgrade ferromq "$CHART" \
  --namespace "$SYS" --reuse-values --set exampleCluster.enabled=true --set exampleCluster.auth=false \
  --set exampleCluster.image="ghcr.io/ferromq/ferromq:$TAG" --wait --timeout "${TIMEOUT}s"
check "example Broker Ready" wait_for "$TIMEOUT" resource_ready "$SYS" broker/demo
check "example Topic Ready" wait_for "$TIMEOUT" resource_ready "$SYS" topic/demo-normal
SYS_ENDPOINT="$(jp "$SYS" service/demo '{.spec.clusterIP}'):8081"
k get pods -n "$SYS" -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.metadata.uid}{"\n"}{end}' >"$state/pods-before"
loss_start upgrade "$SYS_ENDPOINT" demo-normal
sleep 5
check "helm upgrade --set image.tag=$UPGRADE_TAG --set exampleCluster.image=...:$UPGRADE_TAG" helm_ upgrade ferromq "$CHART" \
  --namespace "$SYS" --reuse-values --set image.tag="$UPGRADE_TAG" \
  --set exampleCluster.image="ghcr.io/ferromq/ferromq:$UPGRADE_TAG" --wait --timeout "${TIMEOUT}s"
all_on_new_tag() {
  local images
  images="$(k -n "$SYS" get pods -o jsonpath='{range .items[*]}{.status.phase}{" "}{.spec.containers[0].image}{"\n"}{end}' | grep -v '^Succeeded' | grep -v '^Failed')"
  [[ -n "$images" ]] && ! grep -qv ":$UPGRADE_TAG\$" <<<"$images" && all_pods_ready "$SYS"
}
check "every pod (operator, name server, group, proxy) replaced and Ready on $UPGRADE_TAG" wait_for "$TIMEOUT" all_on_new_tag
check "the example Broker is Ready after the roll" wait_for "$TIMEOUT" resource_ready "$SYS" broker/demo
new_op="$(k -n "$SYS" get pods -l "$OP_SEL" -o jsonpath='{.items[0].metadata.name}')"
check "the new operator pod took the Lease over" wait_for 60 \
  bash -c "[[ \$('$KUBECTL' -n $SYS get lease ferromq -o jsonpath='{.spec.holderIdentity}') == '$new_op' && '$new_op' != '$op_pod' ]]"
sleep 5
loss_stop upgrade "no acknowledged message lost while every pod was rolled"
echo "   order of replacement (pod start times):"
k -n "$SYS" get pods --sort-by=.status.startTime -o jsonpath='{range .items[*]}{.status.startTime}{" "}{.metadata.name}{"\n"}{end}' | sed 's/^/     /'

# ---------------------------------------------------------------- 10. helm test
step "10. helm test"
check "helm test (produce and consume through the example cluster's proxy Service)" \
  helm_ test ferromq --namespace "$SYS" --logs --timeout "${TIMEOUT}s"

# ---------------------------------------------------------------- 11. helm uninstall
step "11. helm uninstall"
check "helm uninstall (its pre-delete hook deletes the example cluster)" helm_ uninstall ferromq \
  --namespace "$SYS" --wait --timeout "${TIMEOUT}s"
# Everything the chart or the operator made, except what is kept on purpose: CRDs and claims
# (charts/ferromq/README.md) and the `helm test` pod (its hook-delete-policy keeps it for --logs).
leftovers() {
  {
    k get brokers.ferromq.io,nameservers.ferromq.io,topics.ferromq.io -A -o name
    k get statefulsets,deployments,services,configmaps,poddisruptionbudgets,horizontalpodautoscalers -A \
      -l app.kubernetes.io/managed-by=ferromq-operator -o name
    k get deployments,serviceaccounts,services,roles,rolebindings,jobs,leases -n "$SYS" -o name | grep -v '/default$'
    k get clusterroles,clusterrolebindings -l app.kubernetes.io/instance=ferromq -o name
    k -n "$SYS" get pods -o name | grep -v '^pod/ferromq-test-produce-consume$'
  } >"$state/leftovers" 2>/dev/null
  [[ ! -s "$state/leftovers" ]]
}
check "no operator objects left (resources, workloads, Services, RBAC, Lease, pods)" wait_for 120 leftovers
if [[ -s "$state/leftovers" ]]; then sed 's/^/    left: /' "$state/leftovers"; fi
echo "   kept by design (charts/ferromq/README.md): CRDs $(k get crd --no-headers 2>/dev/null | grep -c ferromq.io), claims $(k -n "$SYS" get pvc --no-headers 2>/dev/null | wc -l)"

step finished
if ((failed > 0)); then dump; fi
echo "e2e timings: ${timings[*]}"
echo "e2e: $passed passed, $failed failed"
((failed == 0))
