#!/usr/bin/env bash
# Suite 70: the Helm chart and the container images, without Docker or kind.
#
# 1. Chart hygiene: its CRDs are the generated ones, its RBAC is the operator's ClusterRole.
# 2. `helm lint` for several value sets; bad values are refused by values.schema.json.
# 3. `helm template` for each value set, validated offline against the Kubernetes schemas
#    (PyPI kubernetes-validate, strict) and by server-side dry-run against a real API server.
# 4. `helm install` into that API server (etcd + kube-apiserver from tests/k8s/env.sh, RBAC on):
#    the objects are checked, then the real operator binary runs with a token of the chart's
#    ServiceAccount, so the chart's RBAC must be enough for everything it does (the example
#    cluster's topic is created on a real `ferromq standalone`). The CRD schema guard is
#    exercised by downgrading a CRD's revision. `helm upgrade` and `helm uninstall` finish.
#    `helm test` needs a kubelet to run its pod; here only its manifest is validated.
# 4b. Monitoring: the PodMonitor, PrometheusRule and Grafana dashboard ConfigMaps render only
#    when switched on; the rules are the ones promtool checks and unit-tests
#    (tests/monitoring/prometheus-rules.test.yaml, promtool from Debian's prometheus package
#    and cached), the dashboards are the generated ones and valid JSON, the PodMonitor selects
#    the pods the real operator creates on a port they have, and the real operator exports the
#    readiness family the "not Ready" alert reads. (That every metric the rules and dashboards
#    query is exported is proven against real processes by
#    broker/server/tests/metrics_contract.rs.)
# 5. With buildah (Debian package, installed when missing) the broker and operator images are built from their
#    Dockerfiles (`--target prebuilt`, with binaries built here, on a Debian bookworm base made
#    by debootstrap, because no registry is reachable), and started: `--version`, the user, and a
#    standalone broker that answers an admin call inside the broker image.
set -euo pipefail
ROOT="${FERROMQ_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}"
cd "$ROOT"
export FERROMQ_TEST_CACHE="${FERROMQ_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ferromq-tests}"
ENV="$ROOT/tests/k8s/env.sh"
CHART="$ROOT/charts/ferromq"
suite_start=$SECONDS
# shellcheck source=../k8s/checks.sh
source "$ROOT/tests/k8s/checks.sh"
# shellcheck source=../k8s/images.sh
source "$ROOT/tests/k8s/images.sh"

need openssl openssl
need curl curl
need python3 python3

t=$SECONDS
bash "$ENV" build >/dev/null
HELM="$(bash "$ENV" helm)"
KUBECTL="$(bash "$ENV" kubectl)"
VENV="$FERROMQ_TEST_CACHE/helm-venv"
if [[ ! -x "$VENV/bin/kubernetes-validate" ]]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q kubernetes-validate==1.37.0
fi
PROMTOOL="$(bash "$ROOT/tests/monitoring/promtool.sh")"
tools_s=$((SECONDS - t))

state="$(mktemp -d)"
cp_dir="$state/cp"
op_pid=""
sa_pid=""
cleanup() {
  local p
  for p in $op_pid $sa_pid; do stop_proc "$p" || true; done
  bash "$ENV" stop "$cp_dir" || true
  images_cleanup
  rm -rf "$state"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

K8S_MINOR="1.35.0"
helm_() { "$HELM" "$@"; }

# Python helpers run with the venv's interpreter (it has PyYAML).
py() { "$VENV/bin/python" "$@"; }

echo "== chart files"
check "chart CRDs are the generated ones (crds/)" diff -r "$ROOT/crds" "$CHART/crds"
rbac_agrees() {
  py - "$CHART" "$ROOT/operator/deploy/rbac.yaml" "$HELM" "$K8S_MINOR" <<'PY'
import subprocess, sys, yaml
chart, reference, helm, kube = sys.argv[1:5]
def grants(docs):
    out = set()
    for d in docs:
        if d and d.get("kind") in ("ClusterRole", "Role"):
            for r in d["rules"]:
                for g in r.get("apiGroups", []):
                    for res in r["resources"]:
                        for v in r["verbs"]:
                            out.add((g, res, v, tuple(sorted(r.get("resourceNames", [])))))
    return out
rendered = subprocess.run([helm, "template", "t", chart, "--kube-version", kube, "--show-only", "templates/rbac.yaml"],
                          check=True, capture_output=True, text=True).stdout
got, want = grants(yaml.safe_load_all(rendered)), grants(yaml.safe_load_all(open(reference)))
if got != want:
    print("only in the chart:", sorted(got - want))
    print("only in operator/deploy/rbac.yaml:", sorted(want - got))
    sys.exit(1)
print(f"{len(got)} (group, resource, verb) grants agree")
PY
}
check "chart RBAC grants exactly what operator/deploy/rbac.yaml grants" rbac_agrees
artifacthub_annotations() {
  py - "$CHART" "$ROOT" <<'PY'
import pathlib, re, sys, yaml
chart, root = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
meta = yaml.safe_load(open(chart / "Chart.yaml"))
a = meta["annotations"]
crds = [yaml.safe_load(open(p)) for p in sorted((root / "crds").glob("*.yaml"))]
listed = yaml.safe_load(a["artifacthub.io/crds"])
want = {(c["spec"]["names"]["kind"], c["spec"]["versions"][0]["name"], c["metadata"]["name"]) for c in crds}
got = {(c["kind"], c["version"], c["name"]) for c in listed}
assert got == want, (got, want)
assert all(c.get("displayName") and c.get("description") for c in listed), listed
examples = yaml.safe_load(a["artifacthub.io/crdsExamples"])
assert sorted(e["kind"] for e in examples) == sorted(k for k, _, _ in want), examples
assert all(e["apiVersion"] == "ferromq.io/v1alpha1" for e in examples)
license = re.search(r'^license = "([^"]+)"', open(root / "Cargo.toml").read(), re.M).group(1)
assert a["artifacthub.io/license"] == license, (a["artifacthub.io/license"], license)
links = yaml.safe_load(a["artifacthub.io/links"])
assert links and all(l["name"] and l["url"].startswith("https://") for l in links), links
images = yaml.safe_load(a["artifacthub.io/images"])
assert all(i["image"].endswith(":" + meta["appVersion"]) for i in images), images
assert a["artifacthub.io/operator"] == "true"
assert a["artifacthub.io/operatorCapabilities"] in ("Basic Install", "Seamless Upgrades", "Full Lifecycle", "Deep Insights", "Auto Pilot")
revisions = {c["metadata"]["annotations"]["ferromq.io/schema-revision"] for c in crds}
assert revisions == {a["ferromq.io/schema-revision"]}, (revisions, a["ferromq.io/schema-revision"])
print(f"{len(listed)} CRDs and {len(examples)} examples listed, license {license}, {len(links)} links")
PY
}
check "Chart.yaml's Artifact Hub annotations list the generated CRDs, the license and links" artifacthub_annotations
aggregate_roles_render() {
  py - "$HELM" "$CHART" "$K8S_MINOR" <<'PY'
import subprocess, sys, yaml
helm, chart, kube = sys.argv[1:4]
def render(*flags):
    out = subprocess.run([helm, "template", "t", chart, "--kube-version", kube, *flags], check=True, capture_output=True, text=True).stdout
    return {d["metadata"]["name"]: d for d in yaml.safe_load_all(out) if d and d["kind"] == "ClusterRole"}
roles = render()
edit, view = roles["t-ferromq-edit"], roles["t-ferromq-view"]
lab = lambda r, k: r["metadata"]["labels"].get("rbac.authorization.k8s.io/aggregate-to-" + k)
assert lab(edit, "edit") == "true" and lab(edit, "admin") == "true" and lab(edit, "view") is None, edit["metadata"]
assert lab(view, "view") == "true" and lab(view, "edit") == "true", view["metadata"]
verbs = lambda r: {v for rule in r["rules"] for v in rule["verbs"]}
assert verbs(view) == {"get", "list", "watch"}, view["rules"]
assert {"create", "delete", "patch", "update"} <= verbs(edit), edit["rules"]
assert "t-ferromq-edit" not in render("--set", "rbac.aggregateToDefaultRoles=false")
print("edit and view ClusterRoles render with their aggregation labels")
PY
}
check "the aggregate edit/view ClusterRoles render with their labels (and can be switched off)" aggregate_roles_render

# Value sets every later step renders: name -> --set flags.
declare -A SETS=(
  [default]=""
  [example]="--set exampleCluster.enabled=true --set exampleCluster.image=ferromq:e2e --set exampleCluster.imagePullPolicy=Never"
  [scoped]="--set watchNamespace=apps --set replicaCount=2 --set logFormat=text --set imagePullSecrets[0]=regcred --set serviceAccount.name=fmq-op --set metrics.service.port=9100"
  [monitored]="--set metrics.serviceMonitor.enabled=true --set metrics.serviceMonitor.labels.release=prom --set exampleCluster.enabled=true --set exampleCluster.groups=3 --set exampleCluster.flushMode=Sync --set exampleCluster.serviceType=LoadBalancer --set exampleCluster.serviceAnnotations.example\\.com/scheme=internet-facing"
  [monitoring]="--set monitoring.podMonitor.enabled=true --set monitoring.podMonitor.labels.release=prom --set monitoring.prometheusRule.enabled=true --set monitoring.dashboards.enabled=true --set monitoring.dashboards.annotations.grafana_folder=FerroMQ --set metrics.serviceMonitor.enabled=true --set watchNamespace=apps"
)

echo "== helm lint"
for name in default example scoped monitored monitoring; do
  # shellcheck disable=SC2086
  check "helm lint ($name)" helm_ lint "$CHART" --strict --kube-version "$K8S_MINOR" ${SETS[$name]}
done
check "values schema refuses replicaCount 0" refused "minimum: got 0" helm_ lint "$CHART" --set replicaCount=0
check "values schema refuses a misspelt key" refused "additional properties 'exampleClster' not allowed" \
  helm_ template t "$CHART" --kube-version "$K8S_MINOR" --set exampleClster.enabled=true
check "values schema refuses an unknown message type" refused "messageType" \
  helm_ template t "$CHART" --kube-version "$K8S_MINOR" --set exampleCluster.enabled=true \
  --set 'exampleCluster.topics[0].name=x' --set 'exampleCluster.topics[0].messageType=BULK' --set 'exampleCluster.topics[0].queues=1'
check "a ServiceMonitor without the metrics Service is refused" refused "needs metrics.service.enabled" \
  helm_ template t "$CHART" --kube-version "$K8S_MINOR" --set metrics.serviceMonitor.enabled=true --set metrics.service.enabled=false

echo "== helm template, validated offline (kubernetes-validate --strict, Kubernetes $K8S_MINOR schemas)"
for name in default example scoped monitored monitoring; do
  # shellcheck disable=SC2086
  helm_ template ferromq "$CHART" --namespace dry-run --kube-version "$K8S_MINOR" ${SETS[$name]} >"$state/render-$name.yaml"
  check "rendered $name set is valid Kubernetes" "$VENV/bin/kubernetes-validate" --strict --quiet --no-warn \
    -k "$K8S_MINOR" "$state/render-$name.yaml"
done
check "the example set renders the cluster and the helm test pod" bash -c \
  "grep -q '^kind: Broker' '$state/render-example.yaml' && grep -q 'helm.sh/hook: test' '$state/render-example.yaml'"
check "the example set renders the NetworkPolicies of the internal ports" bash -c \
  "grep -q 'name: demo-broker-internal' '$state/render-example.yaml' && grep -q 'port: 10911' '$state/render-example.yaml' && grep -q 'name: demo-names-internal' '$state/render-example.yaml'"

# Which ports each rendered policy admits and from whom, exactly.
example_policies() {
  py - "$state/render-example.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
pols = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}
assert set(pols) == {"demo-broker-internal", "demo-names-internal"}, sorted(pols)
def rules(spec):
    out = []
    for r in spec["ingress"]:
        ports = sorted((p["port"], p["protocol"]) for p in r["ports"])
        sources = sorted(tuple(sorted(f["podSelector"]["matchLabels"].items())) for f in r.get("from", [])) or ["anyone"]
        out.append((ports, sources))
    return out
inst = lambda n: (("app.kubernetes.io/instance", n),)
for name, selects, want in [
    ("demo-broker-internal", {"app.kubernetes.io/instance": "demo", "app.kubernetes.io/component": "broker"},
     [([(10911, "TCP")], [inst("demo")]), ([(9090, "TCP")], ["anyone"])]),
    ("demo-names-internal", {"app.kubernetes.io/instance": "demo-names", "app.kubernetes.io/component": "nameserver"},
     [([(9876, "TCP")], [inst("demo"), inst("demo-names")]), ([(9090, "TCP")], ["anyone"])]),
]:
    spec = pols[name]
    assert spec["podSelector"]["matchLabels"] == selects, (name, spec["podSelector"])
    assert spec["policyTypes"] == ["Ingress"], (name, spec["policyTypes"])
    got = rules(spec)
    assert got == want, (name, got)
    print(name, "admits", got)
PY
}
check "the NetworkPolicies admit exactly 10911 from the Broker's pods, 9876 from those and the name servers, 9090 from anyone" example_policies
example_internal_tls() {
  py - "$state/render-example.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
ns = next(d for d in docs if d["kind"] == "Nameserver")
assert ns["spec"]["internalTls"] == {"enabled": True}, ns["spec"].get("internalTls")
print("example Nameserver internalTls:", ns["spec"]["internalTls"])
PY
}
check "the example cluster turns internal TLS on (Nameserver spec.internalTls)" example_internal_tls
check "exampleCluster.internalTls=false leaves internal links plaintext" bash -c \
  "! '$HELM' template t '$CHART' --kube-version '$K8S_MINOR' --set exampleCluster.enabled=true --set exampleCluster.internalTls=false | grep -q internalTls"

example_service() {
  py - "$state/render-monitored.yaml" "$state/render-example.yaml" <<'PY'
import sys, yaml
def broker(path):
    return next(d for d in yaml.safe_load_all(open(path)) if d and d["kind"] == "Broker")
svc = broker(sys.argv[1])["spec"]["compute"]["service"]
assert svc == {"type": "LoadBalancer", "annotations": {"example.com/scheme": "internet-facing"}}, svc
assert "service" not in broker(sys.argv[2])["spec"]["compute"], "ClusterIP without annotations: the operator's default"
print("client Service:", svc)
PY
}
check "exampleCluster.serviceType and serviceAnnotations reach the Broker's compute.service" example_service
example_auth() {
  py - "$state/render-example.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
broker = next(d for d in docs if d["kind"] == "Broker")
assert broker["spec"]["auth"] == {"enabled": True}, broker["spec"].get("auth")
pod = next(d for d in docs if d["kind"] == "Pod" and d["metadata"]["annotations"].get("helm.sh/hook") == "test")
env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in pod["spec"]["containers"][0]["env"]}
assert env["FERROMQ_ACCESS_KEY"] == {"name": "demo-superuser", "key": "accessKey"}, env
assert env["FERROMQ_SECRET_KEY"] == {"name": "demo-superuser", "key": "secretKey"}, env
print("example Broker auth:", broker["spec"]["auth"], "; helm test signs as", env["FERROMQ_ACCESS_KEY"])
PY
}
check "the example cluster runs with authentication and helm test signs as its super user" example_auth
check "values schema refuses an unknown Service type" refused "serviceType" \
  helm_ template t "$CHART" --kube-version "$K8S_MINOR" --set exampleCluster.enabled=true --set exampleCluster.serviceType=External

echo "== monitoring: PodMonitor, PrometheusRule, dashboards; promtool"
check "monitoring objects are off by default" bash -c \
  "! grep -Eq '^kind: (PodMonitor|PrometheusRule)$|grafana_dashboard' '$state/render-default.yaml'"
check "a misspelt monitoring key is refused" refused "additional properties 'podMonitr' not allowed" \
  helm_ template t "$CHART" --kube-version "$K8S_MINOR" --set monitoring.podMonitr.enabled=true
# monitoring_checks FILE: what the monitoring set must render (python, the venv has PyYAML).
monitoring_renders() {
  py - "$state/render-monitoring.yaml" "$CHART" "$state" <<'PY'
import json, pathlib, sys, yaml
render, chart, state = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
docs = [d for d in yaml.safe_load_all(open(render)) if d]
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], []).append(d)
pm = by_kind["PodMonitor"]
assert len(pm) == 1, pm
spec = pm[0]["spec"]
assert pm[0]["metadata"]["labels"]["release"] == "prom"
assert spec["selector"]["matchLabels"] == {"app.kubernetes.io/name": "ferromq"}, spec["selector"]
comps = spec["selector"]["matchExpressions"][0]
assert comps["key"] == "app.kubernetes.io/component" and sorted(comps["values"]) == ["broker", "nameserver", "proxy"], comps
assert spec["namespaceSelector"] == {"matchNames": ["apps"]}, "watchNamespace limits the PodMonitor"
ep = spec["podMetricsEndpoints"][0]
assert ep["port"] == "http" and ep["path"] == "/metrics" and ep["honorLabels"] is True, ep
assert {r["targetLabel"] for r in ep["relabelings"]} == {"cluster", "node_type", "broker_group"}, ep
json.dump(spec, open(state / "podmonitor.json", "w"))
rules = by_kind["PrometheusRule"]
assert len(rules) == 1
want = yaml.safe_load(open(chart / "files/prometheus-rules.yaml"))["groups"]
assert rules[0]["spec"]["groups"] == want, "the PrometheusRule carries files/prometheus-rules.yaml"
yaml.safe_dump({"groups": rules[0]["spec"]["groups"]}, open(state / "rendered-rules.yaml", "w"))
alerts = {r["alert"] for g in want for r in g["rules"]}
for a in ["FerroMQDiskNearlyFull", "FerroMQDiskFull", "FerroMQConsumerLagGrowing", "FerroMQRPCErrors",
          "FerroMQDeadLetters", "FerroMQGroupWithoutLeader", "FerroMQInSyncBelowMinimum", "FerroMQReplicaNeedsRebuild", "FerroMQResourceNotReady"]:
    assert a in alerts, a
cms = [d for d in by_kind["ConfigMap"] if d["metadata"]["labels"].get("grafana_dashboard") == "1"]
files = sorted(p.name for p in (chart / "dashboards").glob("*.json"))
assert sorted(k for d in cms for k in d["data"]) == files, (files, [list(d["data"]) for d in cms])
uids, titles = set(), set()
for d in cms:
    assert d["metadata"]["annotations"] == {"grafana_folder": "FerroMQ"}
    for key, body in d["data"].items():
        board = json.loads(body)
        assert board == json.load(open(chart / "dashboards" / key)), key
        uids.add(board["uid"]); titles.add(board["title"])
        assert board["panels"] and all(p.get("title") for p in board["panels"]), key
        for p in board["panels"]:
            for t in p.get("targets", []):
                assert t["expr"].strip() and t["datasource"]["uid"] == "${datasource}", (key, p["title"])
assert len(uids) == len(cms) == 4, uids
print(f"PodMonitor ok, {len(alerts)} alerts, dashboards: {sorted(titles)}")
PY
}
check "the monitoring set renders the PodMonitor, the rules and four dashboards" monitoring_renders
dashboards_generated() {
  python3 "$ROOT/tests/monitoring/generate_dashboards.py" "$state/dashboards-regen" && \
    diff -r "$CHART/dashboards" "$state/dashboards-regen"
}
mkdir -p "$state/dashboards-regen"
check "the dashboards are the generated ones (tests/monitoring/generate_dashboards.py)" dashboards_generated
check "promtool check rules: the chart's rules" "$PROMTOOL" check rules "$CHART/files/prometheus-rules.yaml"
check "promtool check rules: the rendered PrometheusRule" "$PROMTOOL" check rules "$state/rendered-rules.yaml"
check "promtool test rules: every alert fires when it should and only then" \
  "$PROMTOOL" test rules "$ROOT/tests/monitoring/prometheus-rules.test.yaml"

echo "== real API server: server-side dry-run, helm install, the operator under the chart's ServiceAccount"
t=$SECONDS
bash "$ENV" start "$cp_dir"
start_s=$((SECONDS - t))
# shellcheck disable=SC1091
source "$cp_dir/env"
HELM_ENV=(env "KUBECONFIG=$cp_dir/kubeconfig" "HELM_CACHE_HOME=$state/helm/cache" "HELM_CONFIG_HOME=$state/helm/config" "HELM_DATA_HOME=$state/helm/data")
helm_k() { "${HELM_ENV[@]}" "$HELM" "$@"; }

t=$SECONDS
check "helm install (CRDs from the chart, example cluster on)" helm_k install ferromq "$CHART" \
  --namespace ferromq-system --create-namespace \
  --set exampleCluster.enabled=true --set exampleCluster.image=ferromq:e2e --set image.tag=e2e
jp() { k -n ferromq-system get "$1" "$2" -o "jsonpath=$3" 2>/dev/null; }
equals() { [[ "$(jp "$1" "$2" "$3")" == "$4" ]]; }
check "CRDs are established" k wait --for condition=established --timeout=60s \
  crd/nameservers.ferromq.io crd/brokers.ferromq.io crd/topics.ferromq.io
check "the installed CRDs carry the schema revision" bash -c \
  "[[ \$('$KUBECTL' get crd brokers.ferromq.io -o jsonpath='{.metadata.annotations.ferromq\.io/schema-revision}') == \$(sed -n 's/.*ferromq.io\/schema-revision: \"\\([0-9]*\\)\"/\\1/p' '$CHART/Chart.yaml') ]]"
check "operator Deployment runs as the chart's ServiceAccount" equals deployment ferromq '{.spec.template.spec.serviceAccountName}' ferromq
check "operator pods are non-root with a read-only root" equals deployment ferromq \
  '{.spec.template.spec.containers[0].securityContext.readOnlyRootFilesystem}' true
check "the Lease namespace comes from the pod's namespace" bash -c \
  "'$KUBECTL' -n ferromq-system get deployment ferromq -o json | grep -q '\"fieldPath\": \"metadata.namespace\"'"
check "metrics Service selects the operator" equals service ferromq-metrics '{.spec.ports[0].port}' 8080
check "ClusterRoleBinding binds the ServiceAccount" bash -c \
  "[[ \$('$KUBECTL' get clusterrolebinding ferromq -o jsonpath='{.subjects[0].name}/{.subjects[0].namespace}') == ferromq/ferromq-system ]]"
check "leader-election Role is namespaced" equals role ferromq-leader-election '{.rules[0].resources[0]}' leases
check "example Nameserver, Broker and Topic exist" bash -c \
  "'$KUBECTL' -n ferromq-system get nameserver demo-names && '$KUBECTL' -n ferromq-system get broker demo && '$KUBECTL' -n ferromq-system get topic demo-normal"
# grep reads everything (no -q): an early exit would kill helm with SIGPIPE under pipefail.
has_test_hook() { helm_k get hooks ferromq -n ferromq-system | grep 'ferromq-test-produce-consume' >/dev/null; }
check "helm records the test hook" has_test_hook

# The aggregate roles for real: only kube-controller-manager's clusterrole-aggregation
# controller copies their rules into the built-in admin/edit/view roles, so it runs (alone) here.
bash "$ENV" start-controller-manager "$cp_dir" clusterrole-aggregation
aggregated() { k get clusterrole "$1" -o json | grep -q "$2"; }
check "the built-in edit role aggregates the chart's Broker rules" wait_for 60 aggregated edit '"brokers/scale"'
check "the built-in view role aggregates the chart's status rules" wait_for 60 aggregated view '"topics/status"'
k create namespace rbac-check >/dev/null
k -n rbac-check create rolebinding alice-edit --clusterrole=edit --user=alice >/dev/null
k -n rbac-check create rolebinding victor-view --clusterrole=view --user=victor >/dev/null
# can USER ANSWER VERB RESOURCE [FLAGS...]
can() {
  local user="$1" want="$2"
  shift 2
  [[ "$(k auth can-i "$@" -n rbac-check --as "$user" 2>/dev/null)" == "$want" ]]
}
check "a user bound to edit may create Brokers" can alice yes create brokers.ferromq.io
check "a user bound to edit may scale Brokers" can alice yes update brokers.ferromq.io --subresource=scale
check "a user bound to view may list Topics" can victor yes list topics.ferromq.io
check "a user bound to view may not delete Topics" can victor no delete topics.ferromq.io
kill "$(cat "$cp_dir/controller-manager.pid")" 2>/dev/null || true
rm -f "$cp_dir/controller-manager.pid"

k create namespace dry-run >/dev/null
dry_run() {
  # Server-side dry-run of a rendering; ServiceMonitor, PodMonitor and PrometheusRule are
  # dropped (their CRDs belong to the Prometheus Operator, not installed here). Cluster-scoped
  # names are unique per set.
  py - "$1" >"$state/dry.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1]))
        if d and d.get("kind") not in ("ServiceMonitor", "PodMonitor", "PrometheusRule")]
print(yaml.safe_dump_all(docs))
PY
  k apply --dry-run=server -f "$state/dry.yaml"
}
for name in default example scoped monitored monitoring; do
  check "server-side dry-run accepts the $name set" dry_run "$state/render-$name.yaml"
done

# sa_kubeconfig SERVICEACCOUNT FILE: a kubeconfig authenticating only with a token of that
# ServiceAccount of ferromq-system.
api="$(k config view --minify -o jsonpath='{.clusters[0].cluster.server}')"
sa_kubeconfig() {
  local token
  token="$(k -n ferromq-system create token "$1" --duration 1h)"
  cat >"$2" <<KCFG
apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {server: "$api", insecure-skip-tls-verify: true}
users:
- name: sa
  user: {token: "$token"}
contexts:
- name: sa
  context: {cluster: test, user: sa, namespace: ferromq-system}
current-context: sa
KCFG
}
# The operator, authenticated only by a token of the chart's ServiceAccount.
sa_kubeconfig ferromq "$state/sa.kubeconfig"
cargo build -p ferromq -p ferromq-operator --locked --quiet
BIN_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/debug"
grpc_port="$(free_port)"
sa_http="$(free_port)"
op_http="$(free_port)"
# The same settings the chart's Deployment passes (lease in the release namespace, named after
# the release), plus the out-of-cluster admin address.
KUBECONFIG="$state/sa.kubeconfig" POD_NAME=ferromq-test FERROMQ_OPERATOR_LEASE_NAMESPACE=ferromq-system \
  FERROMQ_OPERATOR_LEASE_NAME=ferromq FERROMQ_OPERATOR_LEASE_SECONDS=15 \
  "$BIN_DIR/ferromq-operator" run --http-addr "127.0.0.1:$op_http" --admin-address "127.0.0.1:$grpc_port" \
  --log-format text >"$state/operator.log" 2>&1 &
op_pid=$!
check "the operator takes the chart's Lease" wait_for 30 equals lease ferromq '{.spec.holderIdentity}' ferromq-test
# Internal TLS (on in the example cluster): the operator generates the cluster CA and issues
# the proxies' certificate, which also names 127.0.0.1. The standalone that stands in for the
# proxies serves that certificate, and the operator's admin calls (registered for the admin
# address) dial TLS and verify it against the cluster CA.
secret_key() { k -n ferromq-system get secret "$1" -o "jsonpath={.data.${2//./\\.}}" 2>/dev/null | base64 -d; }
check "the operator generates the cluster CA (Secret demo-names-cluster-ca)" wait_for 60 \
  bash -c "[[ -n \"\$('$KUBECTL' -n ferromq-system get secret demo-names-cluster-ca -o jsonpath='{.data.ca\\.key}')\" ]]"
check "the operator issues the proxies' certificate (Secret demo-proxy-tls)" wait_for 60 \
  bash -c "[[ -n \"\$('$KUBECTL' -n ferromq-system get secret demo-proxy-tls -o jsonpath='{.data.tls\\.crt}')\" ]]"
secret_key demo-proxy-tls tls.crt >"$state/proxy.crt"
secret_key demo-proxy-tls tls.key >"$state/proxy.key"
secret_key demo-names-cluster-ca ca.crt >"$state/cluster-ca.crt"
check "the proxies' certificate chains to the cluster CA for the Service's name and 127.0.0.1" bash -c \
  "openssl verify -CAfile '$state/cluster-ca.crt' -verify_hostname demo.ferromq-system.svc '$state/proxy.crt' && openssl verify -CAfile '$state/cluster-ca.crt' -verify_ip 127.0.0.1 '$state/proxy.crt'"
check "each broker group and the name servers get their certificate" wait_for 60 bash -c \
  "'$KUBECTL' -n ferromq-system get secret demo-group-0-internal-tls demo-names-internal-tls >/dev/null"
"$BIN_DIR/ferromq" standalone --data-dir "$state/standalone" --grpc-addr "127.0.0.1:$grpc_port" \
  --http-addr "127.0.0.1:$sa_http" --remoting-addr off \
  --tls-cert "$state/proxy.crt" --tls-key "$state/proxy.key" >"$state/standalone.log" 2>&1 &
sa_pid=$!
check "ferromq standalone becomes ready" wait_for 60 curl -sf "http://127.0.0.1:$sa_http/readyz"
check "the standalone serves the operator-issued certificate (verified against the cluster CA)" bash -c \
  "openssl s_client -connect 127.0.0.1:$grpc_port -CAfile '$state/cluster-ca.crt' -verify_return_error -verify_ip 127.0.0.1 -alpn h2 </dev/null 2>&1 | grep -q 'Verify return code: 0 (ok)'"
check "name server pods serve TLS only and verify peers against the cluster CA" bash -c \
  "[[ \"\$('$KUBECTL' -n ferromq-system get statefulset demo-names -o jsonpath='{.spec.template.spec.containers[0].args}')\" == *'\"--tls\",\"required\"'*'--tls-ca'* ]]"
check "broker pods serve TLS only and verify peers against the cluster CA" wait_for 30 bash -c \
  "[[ \"\$('$KUBECTL' -n ferromq-system get statefulset demo-group-0 -o jsonpath='{.spec.template.spec.containers[0].args}')\" == *'\"--tls\",\"required\"'*'--tls-ca'* ]]"
check "proxies serve their cluster certificate on 8081 and verify what they dial" bash -c \
  "[[ \"\$('$KUBECTL' -n ferromq-system get deployment demo-proxy -o jsonpath='{.spec.template.spec.containers[0].args}')\" == *'/etc/ferromq/internal-tls/tls.crt'*'--tls-ca'* ]]"
check "pod templates carry the mounted Secrets' hash" bash -c \
  "[[ -n \"\$('$KUBECTL' -n ferromq-system get statefulset demo-group-0 -o jsonpath='{.spec.template.metadata.annotations.ferromq\\.io/secrets-hash}')\" ]]"
check "name server StatefulSet created" wait_for 60 equals statefulset demo-names '{.spec.replicas}' 1
check "broker group StatefulSet created" wait_for 60 equals statefulset demo-group-0 '{.spec.replicas}' 1
check "proxy Deployment created" wait_for 60 equals deployment demo-proxy '{.spec.replicas}' 1
check "example topic is created on the real cluster over TLS (Ready/Synced)" wait_for 120 equals topic demo-normal \
  '{.status.conditions[?(@.type=="Ready")].reason}' Synced
check "ferromq admin shows the example topic" "$BIN_DIR/ferromq" admin --server "127.0.0.1:$grpc_port" topic describe demo-normal
check "the example Broker runs with authentication: the operator generated its super-user Secret" wait_for 60 \
  equals secret demo-superuser '{.data.accessKey}' "$(printf admin | base64)"
check "the broker pods bootstrap that super user from the Secret" equals statefulset demo-group-0 \
  '{.spec.template.spec.containers[0].env[?(@.name=="FERROMQ_AUTH_SUPER_USER")].valueFrom.secretKeyRef.name}' demo-superuser

# Monitoring against the real operator: its readiness family (what FerroMQResourceNotReady
# reads), the PodMonitor's selector and port on the pods it creates, and spec.logging.
op_metrics() { curl -sf "http://127.0.0.1:$op_http/metrics"; }
ready_sample() { op_metrics | grep -qF "ferromq_operator_resource_ready{kind=\"$1\",namespace=\"ferromq-system\",name=\"$2\"} $3"; }
check "the operator exports a Ready Topic as 1" wait_for 30 ready_sample Topic demo-normal 1
check "the operator exports the Broker whose pods never start (no kubelet) as not Ready" wait_for 30 ready_sample Broker demo 0
podmonitor_selects() {
  k -n ferromq-system get statefulset demo-names demo-group-0 -o json >"$state/sts.json"
  k -n ferromq-system get deployment demo-proxy -o json >"$state/deploy.json"
  py - "$state/podmonitor.json" "$state/sts.json" "$state/deploy.json" <<'PY'
import json, sys
pm = json.load(open(sys.argv[1]))
templates = [i["spec"]["template"] for i in json.load(open(sys.argv[2]))["items"]]
templates.append(json.load(open(sys.argv[3]))["spec"]["template"])
want = pm["selector"]["matchLabels"]
expr = pm["selector"]["matchExpressions"][0]
port = pm["podMetricsEndpoints"][0]["port"]
seen = set()
for t in templates:
    labels = t["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in want.items()), labels
    assert labels[expr["key"]] in expr["values"], labels
    seen.add(labels[expr["key"]])
    ports = {p.get("name") for c in t["spec"]["containers"] for p in c.get("ports", [])}
    assert port in ports, (labels, ports)
assert seen == {"nameserver", "broker", "proxy"}, seen
print("the PodMonitor selects", sorted(seen), "on port", port)
PY
}
check "the PodMonitor selects the name server, broker and proxy pods the operator made, on their metrics port" podmonitor_selects
bad_level() {
  k -n ferromq-system patch broker demo --type merge --dry-run=server -p '{"spec":{"logging":{"level":"loud"}}}'
}
check "a Broker with an unknown log level is refused by the CRD" refused "spec.logging.level" bad_level
k -n ferromq-system patch broker demo --type merge -p '{"spec":{"logging":{"level":"debug,ferromq_store=trace","format":"Json"}}}' >/dev/null
proxy_env() {
  [[ "$(jp deployment demo-proxy "{.spec.template.spec.containers[0].env[?(@.name==\"$1\")].value}")" == "$2" ]]
}
check "spec.logging reaches the proxies as FERROMQ_LOG" wait_for 60 proxy_env FERROMQ_LOG "debug,ferromq_store=trace"
check "spec.logging reaches the proxies as FERROMQ_LOG_FORMAT" wait_for 60 proxy_env FERROMQ_LOG_FORMAT json
check "the Broker's name is the cluster label of its metrics (FERROMQ_CLUSTER_NAME)" proxy_env FERROMQ_CLUSTER_NAME demo

# examples/ (what tests/e2e/kind.sh and the README apply) against the same operator: each of
# the four topics, one per message type, is created on the real standalone.
k create namespace examples >/dev/null
check "examples/ are accepted by the API server" k -n examples apply -f "$ROOT/examples/"
topics_synced() {
  local t
  for t in orders payments-fifo reminders-delay checkout-tx; do
    [[ "$(k -n examples get topic "$t" -o jsonpath='{.status.conditions[?(@.type=="Ready")].reason}')" == Synced ]] || return 1
  done
}
check "every example topic is created on the real cluster" wait_for 60 topics_synced
check "the FIFO example topic has the type it asked for" bash -c \
  "'$BIN_DIR/ferromq' admin --server 127.0.0.1:$grpc_port -o json topic describe payments_fifo | grep -q '\"type\": *\"fifo\"'"
k -n examples delete topic --all --wait=false >/dev/null
check "deleting the example topics removes them from the cluster" wait_for 60 bash -c \
  "! '$BIN_DIR/ferromq' admin --server 127.0.0.1:$grpc_port topic describe checkout_tx >/dev/null 2>&1"
k -n examples delete broker,nameserver --all >/dev/null
check "tests/e2e/kind.sh is valid bash" bash -n "$ROOT/tests/e2e/kind.sh"

k annotate crd brokers.ferromq.io ferromq.io/schema-revision=0 --overwrite >/dev/null
check "an older CRD makes the operator stop and say why (Degraded/CRDsOutdated)" wait_for 60 equals broker demo \
  '{.status.conditions[?(@.type=="Degraded")].reason}' CRDsOutdated
check "the condition tells the user what to run" bash -c \
  "'$KUBECTL' -n ferromq-system get broker demo -o jsonpath='{.status.conditions[?(@.type==\"Degraded\")].message}' | grep -q 'kubectl apply --server-side -f crds/'"
k apply --server-side --force-conflicts -f "$CHART/crds/" >/dev/null
check "upgrading the CRDs lets the operator carry on" wait_for 60 bash -c \
  "[[ \$('$KUBECTL' -n ferromq-system get broker demo -o jsonpath='{.status.conditions[?(@.type==\"Degraded\")].reason}') != CRDsOutdated ]]"

check "helm upgrade changes the operator Deployment" helm_k upgrade ferromq "$CHART" --namespace ferromq-system \
  --reuse-values --set replicaCount=2
check "the upgrade reached the Deployment" wait_for 10 equals deployment ferromq '{.spec.replicas}' 2

# helm uninstall runs the pre-delete hook Job `ferromq-operator cleanup`. No kubelet runs Jobs
# here, so the suite does what the Job does: it creates the hook's ServiceAccount and Role from
# the chart and runs the same command with that account's token, while the operator still runs.
helm_ template ferromq "$CHART" --namespace ferromq-system --kube-version "$K8S_MINOR" --set exampleCluster.enabled=true \
  --show-only templates/example-cluster-cleanup.yaml >"$state/hook.yaml"
hook_args() {
  py - "$state/hook.yaml" <<'PY'
import sys, yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d and d["kind"] == "Job":
        print("\n".join(d["spec"]["template"]["spec"]["containers"][0]["args"]))
PY
}
py - "$state/hook.yaml" >"$state/hook-rbac.yaml" <<'PY'
import sys, yaml
print(yaml.safe_dump_all([d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] != "Job"]))
PY
k apply -f "$state/hook-rbac.yaml" >/dev/null
sa_kubeconfig ferromq-cleanup "$state/cleanup.kubeconfig"
mapfile -t cleanup_args < <(hook_args)
run_cleanup() { KUBECONFIG="$state/cleanup.kubeconfig" "$BIN_DIR/ferromq-operator" "${cleanup_args[@]}"; }
check "the pre-delete cleanup (hook's command and RBAC) deletes the example cluster" run_cleanup
check "the example topic went through its finalizer (deleted on the cluster)" bash -c \
  "! '$BIN_DIR/ferromq' admin --server 127.0.0.1:$grpc_port topic describe demo-normal >/dev/null 2>&1"
check "no Broker, Nameserver or Topic is left" bash -c "[[ -z \$('$KUBECTL' -n ferromq-system get ferromq -o name) ]]"
op_status=0
stop_proc "$op_pid" || op_status=$?
op_pid=""
check "the operator exits cleanly on SIGTERM" test "$op_status" -eq 0
check "the chart's RBAC covered everything the operator did" bash -c "! grep -i 'forbidden' '$state/operator.log'"
check "helm uninstall succeeds (hooks already run above)" helm_k uninstall ferromq --namespace ferromq-system --no-hooks --wait --timeout 60s
check "the operator Deployment is gone" wait_for 30 bash -c "! '$KUBECTL' -n ferromq-system get deployment ferromq >/dev/null 2>&1"
check "CRDs stay after uninstall (Helm never deletes them)" k get crd brokers.ferromq.io
stop_proc "$sa_pid" || true; sa_pid=""
install_s=$((SECONDS - t))

echo "== container images (buildah)"
t=$SECONDS
images_init "$state/images"
if command -v buildah >/dev/null; then
  images_debian_base
  check "broker image builds from broker/Dockerfile" images_build_prebuilt "$ROOT/broker/Dockerfile" ferromq:e2e "$BIN_DIR/ferromq"
  check "operator image builds from operator/Dockerfile" images_build_prebuilt "$ROOT/operator/Dockerfile" ferromq-operator:e2e \
    "$BIN_DIR/ferromq-operator"
  run_in() { # run_in IMAGE CMD...: runs CMD in a container of IMAGE as the image's user
    local c status=0
    c="$("${B[@]}" from -q "$1")"
    shift
    "${B[@]}" run --isolation chroot "$c" -- "$@" || status=$?
    "${B[@]}" rm "$c" >/dev/null
    return "$status"
  }
  check "broker image: ferromq --version" run_in ferromq:e2e ferromq --version
  runs_as_65532() { [[ "$(run_in "$1" id -u)" == 65532 ]]; }
  check "broker image runs as uid 65532, not root" runs_as_65532 ferromq:e2e
  entrypoint_is() {
    [[ "$("${B[@]}" inspect --format '{{.OCIv1.Config.Entrypoint}} {{.OCIv1.Config.Cmd}}' "$1")" == "$2" ]]
  }
  check "broker image entrypoint and default command" entrypoint_is ferromq:e2e '[ferromq] [standalone --data-dir /var/lib/ferromq]'
  check "operator image entrypoint and default command" entrypoint_is ferromq-operator:e2e '[ferromq-operator] [run]'

  p1="$(free_port)"; p2="$(free_port)"
  check "broker image: standalone serves an admin call and stops cleanly on SIGTERM" run_in ferromq:e2e sh -c "
    ferromq standalone --data-dir /var/lib/ferromq/data --grpc-addr 127.0.0.1:$p1 --http-addr 127.0.0.1:$p2 --remoting-addr off >/tmp/log 2>&1 &
    pid=\$!
    ok=1
    for i in \$(seq 1 100); do
      if ferromq admin --server 127.0.0.1:$p1 topic list >/dev/null 2>&1; then ok=0; break; fi
      sleep 0.1
    done
    kill -TERM \$pid; wait \$pid; status=\$?
    cat /tmp/log | tail -3
    [ \$ok -eq 0 ] && [ \$status -eq 0 ]"
  check "operator image: ferromq-operator --version, no broker binary inside" run_in ferromq-operator:e2e sh -c \
    "ferromq-operator --version && ! command -v ferromq && [ \$(id -u) = 65532 ]"
  crds_from_image() { run_in ferromq-operator:e2e ferromq-operator crds | grep -q 'ferromq.io/schema-revision'; }
  check "operator image prints the CRDs it expects" crds_from_image
else
  check "buildah is available to build the images" false
fi
images_s=$((SECONDS - t))

if ((failed > 0)); then
  for f in operator.log standalone.log; do
    [[ -f "$state/$f" ]] || continue
    echo "--- $f (last 30 lines)"
    tail -30 "$state/$f"
  done
fi
echo "70-helm: timings: tools ${tools_s}s, control plane start ${start_s}s, install+operator ${install_s}s, images ${images_s}s, suite $((SECONDS - suite_start))s"
echo "helm: $passed passed, $failed failed"
((failed == 0))
