#!/usr/bin/env bash
# A throw-away Kubernetes control plane (etcd + kube-apiserver, RBAC on) on 127.0.0.1 for the
# operator's integration tests. No Docker, no kind: both binaries are built from their Go
# modules (see shared K8S-TEST-ENV.md) and cached under "$FERROMQ_TEST_CACHE/k8s/", keyed by
# version, so only the first run on a machine pays for the compile.
#
#   tests/k8s/env.sh build        # make sure the binaries exist; prints their directory
#   tests/k8s/env.sh build-node   # also kube-scheduler, kubelet, kube-proxy and CoreDNS (the node
#                                 # of tests/k8s/cluster.sh); prints the directory of the k8s ones
#   tests/k8s/env.sh start DIR [--with-controller-manager] [--address IP] [--service-cidr CIDR]
#                              [--service-accounts]
#                                 # start etcd + kube-apiserver with state in DIR (must be empty
#                                 # or absent); writes DIR/kubeconfig and DIR/env, waits for /readyz.
#                                 # With the flag, kube-controller-manager runs too (StatefulSets
#                                 # make Pods and PVCs, garbage collection, ...); pods still never
#                                 # run unless tests/k8s/cluster.sh adds a node (or a test harness
#                                 # plays the kubelet). --address serves and advertises the API on
#                                 # IP instead of 127.0.0.1 (pods reach it there); --service-accounts
#                                 # keeps the ServiceAccount admission plugin (pods get tokens; needs
#                                 # the controller manager, which creates each namespace's account).
#   tests/k8s/env.sh start-controller-manager DIR [CONTROLLERS]
#                                 # add kube-controller-manager later (after CRDs); CONTROLLERS
#                                 # is its --controllers list (default '*', all of them)
#   tests/k8s/env.sh stop DIR     # stop both processes (by the pids stored in DIR) and remove DIR
#   tests/k8s/env.sh kubectl      # print the path of a kubectl (the machine's, or one built here)
#   tests/k8s/env.sh helm         # print the path of a helm built from helm.sh/helm/v3 (cached)
#   tests/k8s/env.sh coredns      # print the path of a CoreDNS built from its Go module (cached)
#
# DIR/kubeconfig authenticates as an admin (system:masters); DIR/operator.kubeconfig as the
# user "ferromq-operator" with no groups, so RBAC decides what the operator may do.
#
# Versions are pinned here; change them and the cache key changes with them.
set -euo pipefail

K8S_VERSION="${FERROMQ_K8S_VERSION:-1.35.4}"
ETCD_VERSION="${FERROMQ_ETCD_VERSION:-3.6.16}"
HELM_VERSION="${FERROMQ_HELM_VERSION:-3.22.0}"
COREDNS_VERSION="${FERROMQ_COREDNS_VERSION:-1.14.7}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${FERROMQ_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ferromq-tests}/k8s"
BIN="$CACHE/bin-k8s${K8S_VERSION}-etcd${ETCD_VERSION}"

log() { echo "k8s-env: $*" >&2; }

need_go() {
  if ! command -v go >/dev/null; then
    log "installing Go from Debian packages"
    apt-get update -qq && apt-get install -y -qq golang-go >/dev/null
  fi
}

build_etcd() {
  local work="$CACHE/work/etcd-$ETCD_VERSION"
  rm -rf "$work" && mkdir -p "$work"
  local start=$SECONDS
  log "building etcd v$ETCD_VERSION (throw-away module; server/v3's own replace lines block go install)"
  (
    cd "$work"
    go mod init local/etcdbuild >/dev/null 2>&1
    go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >/dev/null
    CGO_ENABLED=0 go build -trimpath -o "$BIN/etcd.tmp" go.etcd.io/etcd/server/v3
  )
  mv "$BIN/etcd.tmp" "$BIN/etcd"
  log "etcd built in $((SECONDS - start))s"
}

# A throw-away module whose staging replace lines let `go build` compile k8s.io/kubernetes
# commands. Set up once per version and kept, so later commands reuse its downloads.
prepare_k8s_module() {
  local work="$CACHE/work/k8s-$K8S_VERSION"
  if [[ -f "$work/.ready" ]]; then echo "$work"; return; fi
  rm -rf "$work" && mkdir -p "$work"
  (
    cd "$work"
    go mod init local/k8sbuild >/dev/null 2>&1
    local gomod
    gomod="$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')"
    [[ -f "$gomod" ]] || { log "cannot download k8s.io/kubernetes@v$K8S_VERSION"; exit 1; }
    # Use the Go language level and godebug defaults kubernetes itself declares.
    local goline
    goline="$(awk '$1=="go"{print $2; exit}' "$gomod")"
    go mod edit -go="$goline"
    if grep -q '^godebug default=' "$gomod"; then
      grep '^godebug default=' "$gomod" >>go.mod
    fi
    # Every "k8s.io/X => ./staging/src/k8s.io/X" becomes "k8s.io/X => k8s.io/X@v0.<minor>.<patch>".
    local staging_version="v0.${K8S_VERSION#1.}"
    local m
    for m in $(sed -n 's#^[[:space:]]*\(k8s\.io/[A-Za-z0-9._-]*\) => \./staging/src/k8s\.io/.*#\1#p' "$gomod"); do
      go mod edit -replace="$m=$m@$staging_version"
    done
    touch .ready
  ) >&2
  echo "$work"
}

# build_k8s_cmd NAME...: builds k8s.io/kubernetes/cmd/NAME (one `go build` for all of them, so
# shared packages compile once) into $BIN with a proper version stamp (without it /version says
# v0.0.0-master).
build_k8s_cmd() {
  local start=$SECONDS work name pkgs=()
  for name in "$@"; do pkgs+=("k8s.io/kubernetes/cmd/$name"); done
  log "building $* v$K8S_VERSION (staging modules replaced by their v0.x tags)"
  work="$(prepare_k8s_module)"
  rm -rf "$BIN/.tmp" && mkdir -p "$BIN/.tmp"
  (
    cd "$work"
    go get "${pkgs[@]/%/@v$K8S_VERSION}" >/dev/null
    local minor="${K8S_VERSION#1.}"; minor="${minor%%.*}"
    CGO_ENABLED=0 go build -trimpath -o "$BIN/.tmp/" \
      -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor" \
      "${pkgs[@]}"
  )
  for name in "$@"; do mv "$BIN/.tmp/$name" "$BIN/$name"; done
  rmdir "$BIN/.tmp"
  log "$* built in $((SECONDS - start))s"
}

# cached_go_build NAME VERSION STEPS: builds $CACHE/NAME-VERSION/NAME once, in a throw-away
# module $CACHE/work/NAME-VERSION; STEPS (a function) runs in that module's directory with the
# output path as its argument. Prints the binary's path.
cached_go_build() {
  local name="$1" version="$2" steps="$3" dir="$CACHE/$1-$2"
  if [[ ! -x "$dir/$name" ]]; then
    need_go
    mkdir -p "$dir"
    local work="$CACHE/work/$name-$version" start=$SECONDS
    rm -rf "$work" && mkdir -p "$work"
    (
      cd "$work"
      go mod init "local/${name}build" >/dev/null 2>&1
      "$steps" "$dir/$name.tmp"
    ) >&2
    mv "$dir/$name.tmp" "$dir/$name"
    log "$name built in $((SECONDS - start))s"
  fi
  echo "$dir/$name"
}

# CoreDNS from its Go module, with only the plugins the test cluster's Corefile uses (see
# tests/k8s/node/coredns.go).
coredns_steps() {
  log "building coredns v$COREDNS_VERSION (github.com/coredns/coredns, trimmed plugin list)"
  cp "$HERE/node/coredns.go" main.go
  local pkgs
  pkgs="$(sed -n 's#^[[:space:]]*\(_ \)\{0,1\}"\(github.com/coredns/coredns/[^"]*\)"#\2#p' main.go)"
  # shellcheck disable=SC2046,SC2086
  go get $(printf '%s@v'"$COREDNS_VERSION"' ' $pkgs) >/dev/null
  CGO_ENABLED=0 go build -trimpath -o "$1" -ldflags "-s -w" .
}
cmd_coredns() { cached_go_build coredns "$COREDNS_VERSION" coredns_steps; }

cmd_kubectl() {
  if command -v kubectl >/dev/null; then command -v kubectl; return; fi
  mkdir -p "$BIN"
  if [[ ! -x "$BIN/kubectl" ]]; then
    log "no kubectl on this machine: building one"
    need_go
    build_k8s_cmd kubectl
  fi
  echo "$BIN/kubectl"
}

# helm from its Go module (it does not depend on the k8s version).
helm_steps() {
  log "building helm v$HELM_VERSION from helm.sh/helm/v3"
  go get "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION" >/dev/null
  CGO_ENABLED=0 go build -trimpath -o "$1" \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION" \
    helm.sh/helm/v3/cmd/helm
}
cmd_helm() { cached_go_build helm "$HELM_VERSION" helm_steps; }

cmd_build() {
  mkdir -p "$BIN"
  if [[ ! -x "$BIN/etcd" || ! -x "$BIN/kube-apiserver" || ! -x "$BIN/kube-controller-manager" ]]; then need_go; fi
  [[ -x "$BIN/etcd" ]] || build_etcd
  local missing=() name
  for name in kube-apiserver kube-controller-manager; do [[ -x "$BIN/$name" ]] || missing+=("$name"); done
  if ((${#missing[@]})); then build_k8s_cmd "${missing[@]}"; fi
  echo "$BIN"
}

# The node of a real cluster (tests/k8s/cluster.sh): the same module and cache key as above.
cmd_build_node() {
  cmd_build >/dev/null
  local missing=() name
  for name in kube-scheduler kubelet kube-proxy; do [[ -x "$BIN/$name" ]] || missing+=("$name"); done
  if ((${#missing[@]})); then
    need_go
    build_k8s_cmd "${missing[@]}"
  fi
  cmd_coredns >/dev/null
  echo "$BIN"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

cmd_start() {
  local dir="${1:?start needs a state directory}"
  shift
  local with_kcm=0 address=127.0.0.1 service_cidr=10.0.0.0/24
  local admission=(--disable-admission-plugins=ServiceAccount)
  while (($#)); do
    case "$1" in
      --with-controller-manager) with_kcm=1 ;;
      --address) address="${2:?--address needs an IP}"; shift ;;
      --service-cidr) service_cidr="${2:?--service-cidr needs a CIDR}"; shift ;;
      --service-accounts) admission=() ;;
      *) log "start: unknown option $1"; return 2 ;;
    esac
    shift
  done
  cmd_build >/dev/null
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  local t0=$SECONDS
  local etcd_port etcd_peer api_port
  etcd_port="$(free_port)"; etcd_peer="$(free_port)"; api_port="$(free_port)"

  "$BIN/etcd" --data-dir "$dir/etcd" --name test \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-cluster "test=http://127.0.0.1:$etcd_peer" \
    --unsafe-no-fsync --log-level warn >"$dir/etcd.log" 2>&1 &
  echo $! >"$dir/etcd.pid"

  openssl genrsa -out "$dir/sa.key" 2048 2>/dev/null
  openssl rsa -in "$dir/sa.key" -pubout -out "$dir/sa.pub" 2>/dev/null
  local token op_token
  token="$(openssl rand -hex 24)"
  op_token="$(openssl rand -hex 24)"
  {
    echo "$token,admin,admin-uid,\"system:masters\""
    echo "$op_token,ferromq-operator,operator-uid"
  } >"$dir/tokens.csv"

  "$BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --bind-address="$address" --advertise-address="$address" --secure-port="$api_port" \
    --cert-dir="$dir/certs" \
    --service-cluster-ip-range="$service_cidr" \
    --service-account-issuer=https://kubernetes.default.svc \
    --service-account-key-file="$dir/sa.pub" --service-account-signing-key-file="$dir/sa.key" \
    --token-auth-file="$dir/tokens.csv" \
    --authorization-mode=RBAC \
    --allow-privileged=true \
    --kubelet-preferred-address-types=InternalIP,Hostname \
    "${admission[@]}" \
    >"$dir/apiserver.log" 2>&1 &
  echo $! >"$dir/apiserver.pid"

  cat >"$dir/kubeconfig" <<KCFG
apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: https://$address:$api_port
    insecure-skip-tls-verify: true
users:
- name: admin
  user:
    token: $token
contexts:
- name: test
  context: {cluster: test, user: admin, namespace: default}
current-context: test
KCFG
  sed -e "s/token: $token/token: $op_token/" -e "s/name: admin/name: operator/" -e "s/user: admin/user: operator/" \
    "$dir/kubeconfig" >"$dir/operator.kubeconfig"
  {
    echo "export KUBECONFIG=$dir/kubeconfig"
    echo "export FERROMQ_TEST_APISERVER=https://$address:$api_port"
  } >"$dir/env"

  local i
  for i in $(seq 1 240); do
    if curl -ksf -H "Authorization: Bearer $token" "https://$address:$api_port/readyz" >/dev/null 2>&1; then
      if ((with_kcm)); then cmd_start_kcm "$dir"; fi
      log "control plane ready on $address:$api_port in $((SECONDS - t0))s"
      return 0
    fi
    if ! kill -0 "$(cat "$dir/apiserver.pid")" 2>/dev/null || ! kill -0 "$(cat "$dir/etcd.pid")" 2>/dev/null; then
      log "a control-plane process died; last log lines:"
      tail -20 "$dir/etcd.log" "$dir/apiserver.log" >&2 || true
      cmd_stop "$dir"
      return 1
    fi
    sleep 0.5
  done
  log "kube-apiserver not ready after 120s"; tail -30 "$dir/apiserver.log" >&2 || true
  cmd_stop "$dir"
  return 1
}

# Starts kube-controller-manager against the control plane in DIR. Start it after applying
# CRDs: its garbage collector learns resource types from discovery only every 30s.
cmd_start_kcm() {
  local dir="${1:?start-controller-manager needs the state directory}"
  local controllers="${2:-*}"
  "$BIN/kube-controller-manager" --kubeconfig="$dir/kubeconfig" --leader-elect=false \
    --use-service-account-credentials=false --service-account-private-key-file="$dir/sa.key" \
    --root-ca-file="$dir/certs/apiserver.crt" --controllers="$controllers" --secure-port=0 \
    >"$dir/controller-manager.log" 2>&1 &
  echo $! >"$dir/controller-manager.pid"
}

cmd_stop() {
  local dir="${1:?stop needs the state directory}"
  local f pid
  for f in controller-manager apiserver etcd; do
    [[ -f "$dir/$f.pid" ]] || continue
    pid="$(cat "$dir/$f.pid")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/$f.pid"
  done
  rm -rf "$dir"
}

case "${1:-}" in
  build) cmd_build ;;
  build-node) cmd_build_node ;;
  coredns) cmd_coredns ;;
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  start-controller-manager) shift; cmd_start_kcm "$@" ;;
  kubectl) cmd_kubectl ;;
  helm) cmd_helm ;;
  *) echo "usage: $0 build | build-node | start DIR [--with-controller-manager] [--address IP] [--service-cidr CIDR] [--service-accounts] | start-controller-manager DIR [CONTROLLERS] | stop DIR | kubectl | helm | coredns" >&2; exit 2 ;;
esac
