#!/usr/bin/env bash
# A real single-node Kubernetes cluster on this machine, without Docker or kind, in the spirit of
# Kubernetes' own hack/local-up-cluster.sh: etcd, kube-apiserver, kube-controller-manager and
# kube-scheduler on the host; a kubelet with containerd and runc, kube-proxy (iptables mode) and
# the reference CNI plugins (bridge + host-local) on a "node" that is a network namespace and a
# mount namespace of its own; CoreDNS as a pod behind the kube-dns Service; a default
# StorageClass with static `local` PersistentVolumes on directories of DIR/volumes (a sparse ext4
# image loop-mounted in the node). Pods run for real:
# images are pulled from nowhere, only what is imported into containerd exists (the sandbox
# "pause" image and CoreDNS's image are built here; see `import`).
#
#   tests/k8s/cluster.sh up DIR           # start; DIR (empty or absent) holds every bit of state.
#                                         # Writes DIR/env (KUBECONFIG, FERROMQ_K8S_* addresses)
#   tests/k8s/cluster.sh down DIR         # stop everything and undo every change to the host
#   tests/k8s/cluster.sh import DIR ARCHIVE...   # docker-archive images into containerd (k8s.io)
#   tests/k8s/cluster.sh tag DIR IMAGE NEW-NAME  # another name for an imported image
#   tests/k8s/cluster.sh node DIR CMD...  # run CMD in the node's network namespace (pod and
#                                         # Service addresses are reachable from the host too)
#
# Binaries: Go modules built and cached by tests/k8s/env.sh (build, build-node); containerd,
# runc, the CNI plugins and iptables are Debian packages (installed when missing, as root).
#
# What it changes on the host, all undone by `down` (and nothing on 127.0.0.1 but etcd's ports):
# - a slot N (1..60) under /run/ferromq-k8s/, so several clusters can run side by side;
# - a veth pair fmqk8s-N (host side 10.250.N.1/30, node side 10.250.N.2) and routes to the
#   Service range 10.96.N.0/24 and the pod range 10.244.N.0/24 through the node; kube-apiserver
#   listens on 10.250.N.1. Every iptables rule (kube-proxy) lives in the node's namespace;
# - cgroups /ferromq-k8s-N in each cgroup hierarchy (the kubelet's cgroupRoot);
# - a loop device for DIR/volumes.img, the sparse ext4 filesystem of the local volumes (mounted
#   in the node's mount namespace only; released with it);
# - the kernel settings the kubelet insists on (vm.overcommit_memory, kernel.panic,
#   kernel.panic_on_oops, ...), restored to their old values when the last cluster goes down.
# Without CAP_SYS_RESOURCE (seen in this machine's sandbox) negative OOM scores are clamped to 0.
# The node's mount namespace gets private /run/containerd, /run/netns and /var/lib/cni (the
# empty mount points are made on the host when missing and removed by the last `down`), so pod
# network namespaces, shim sockets and CNI state never show on the host. cgroups v1 hosts need
# the kubelet's failCgroupV1: false (set here); containerd 1.6 speaks CRI v1.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ENV="$HERE/env.sh"
export FERROMQ_TEST_CACHE="${FERROMQ_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ferromq-tests}"
SLOTS=/run/ferromq-k8s
NODE_NAME=ferromq-node
PAUSE_IMAGE=ferromq.test/pause:1
COREDNS_VERSION="${FERROMQ_COREDNS_VERSION:-1.14.7}"
COREDNS_IMAGE="ferromq.test/coredns:$COREDNS_VERSION"
PV_COUNT="${FERROMQ_K8S_PVS:-12}"
VOLUME_SIZE="${FERROMQ_K8S_VOLUME_SIZE:-32G}"
KERNEL_SETTINGS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes)

log() { echo "k8s-cluster: $*" >&2; }
die() { log "$*"; exit 1; }

need_packages() {
  local missing=() cmd pkg
  for cmd in containerd:containerd runc:runc iptables:iptables nsenter:util-linux /usr/lib/cni/bridge:containernetworking-plugins gcc:gcc mkfs.ext4:e2fsprogs losetup:mount; do
    pkg="${cmd#*:}"; cmd="${cmd%%:*}"
    if [[ "$cmd" == /* ]]; then [[ -x "$cmd" ]] || missing+=("$pkg"); else command -v "$cmd" >/dev/null || missing+=("$pkg"); fi
  done
  if ((${#missing[@]})); then
    log "installing ${missing[*]} (Debian packages)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# Per-slot addresses; sets N and the variables below from DIR/slot.
load_slot() {
  N="$(cat "$DIR/slot")"
  HOST_IP="10.250.$N.1"
  NODE_IP="10.250.$N.2"
  SERVICE_CIDR="10.96.$N.0/24"
  DNS_IP="10.96.$N.10"
  POD_CIDR="10.244.$N.0/24"
  VETH="fmqk8s-$N"
  CGROUP_ROOT="/ferromq-k8s-$N"
  NS="$DIR/ns"
}

claim_slot() {
  mkdir -p "$SLOTS"
  local n owner
  for n in $(seq 1 60); do
    if [[ -d "$SLOTS/$n" ]]; then
      owner="$(cat "$SLOTS/$n/dir" 2>/dev/null || true)"
      # A slot whose cluster directory is gone and whose veth is gone is stale: reclaim it.
      if [[ -n "$owner" && ! -e "$owner/slot" ]] && ! ip link show "fmqk8s-$n" >/dev/null 2>&1; then
        rm -rf "${SLOTS:?}/$n"
      else
        continue
      fi
    fi
    if mkdir "$SLOTS/$n" 2>/dev/null; then
      echo "$DIR" >"$SLOTS/$n/dir"
      echo "$n" >"$DIR/slot"
      return 0
    fi
  done
  die "no free slot under $SLOTS (60 clusters running?)"
}

# in_node CMD...: CMD inside the node's mount and network namespaces.
in_node() { nsenter --mount="$NS/mnt" --net="$NS/net" -- "$@"; }

ctr_() { ctr --address "$DIR/node/containerd.sock" --namespace k8s.io "$@"; }

# The pause and CoreDNS images, built once per version into the cache (docker-archive files).
node_images() {
  local out="$FERROMQ_TEST_CACHE/k8s/images" sum
  sum="$(sha256sum "$HERE/node/pause.c" | cut -c1-12)"
  PAUSE_TAR="$out/pause-$sum.tar"
  COREDNS_TAR="$out/coredns-$COREDNS_VERSION.tar"
  [[ -f "$PAUSE_TAR" && -f "$COREDNS_TAR" ]] && return 0
  mkdir -p "$out"
  # shellcheck source=images.sh
  source "$HERE/images.sh"
  images_init "$DIR/images"
  mkdir -p "$DIR/images/files"
  if [[ ! -f "$PAUSE_TAR" ]]; then
    gcc -static -Os -o "$DIR/images/files/pause" "$HERE/node/pause.c"
    images_scratch "$PAUSE_IMAGE" /pause "$DIR/images/files/pause"
    images_save "$PAUSE_IMAGE" "$PAUSE_TAR.tmp" && mv "$PAUSE_TAR.tmp" "$PAUSE_TAR"
  fi
  if [[ ! -f "$COREDNS_TAR" ]]; then
    cp "$(bash "$ENV" coredns)" "$DIR/images/files/coredns"
    images_scratch "$COREDNS_IMAGE" /coredns "$DIR/images/files/coredns"
    images_save "$COREDNS_IMAGE" "$COREDNS_TAR.tmp" && mv "$COREDNS_TAR.tmp" "$COREDNS_TAR"
  fi
  images_cleanup
}

# start NAME CMD...: a background process of the cluster, its pid in DIR/pids/NAME.
start() {
  local name="$1"
  shift
  "$@" >"$DIR/logs/$name.log" 2>&1 &
  echo $! >"$DIR/pids/$name"
}

alive() { [[ -f "$DIR/pids/$1" ]] && kill -0 "$(cat "$DIR/pids/$1")" 2>/dev/null; }

# wait_until SECONDS WHAT CMD...: polls CMD; on time-out shows the logs of the processes.
wait_until() {
  local limit="$1" what="$2" end
  shift 2
  end=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= end)); then
      log "$what: not after ${limit}s"
      local f
      for f in "$DIR"/logs/*.log; do echo "--- $f" >&2; tail -15 "$f" >&2; done
      return 1
    fi
    sleep 0.5
  done
}

stop_pid() {
  local name="$1" pid i
  [[ -f "$DIR/pids/$name" ]] || return 0
  pid="$(cat "$DIR/pids/$name")"
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$DIR/pids/$name"
}

setup_namespaces() {
  mkdir -p "$NS" "$DIR/node"/{run-containerd,run-netns,var-lib-cni}
  # Persisting a namespace bind-mounts its file; the directory must not be a shared mount.
  mount --bind "$NS" "$NS"
  mount --make-private "$NS"
  touch "$NS/mnt" "$NS/net"
  unshare --mount="$NS/mnt" --net="$NS/net" --propagation private true
  # Directories the runtime uses at fixed paths get private copies inside the node.
  local d
  for d in /run/containerd /run/netns /var/lib/cni; do
    [[ -d "$d" ]] && continue
    mkdir -p "$d"
    echo "$d" >>"$SLOTS/made-dirs"
  done
  in_node mount --bind "$DIR/node/run-containerd" /run/containerd
  in_node mount --bind "$DIR/node/run-netns" /run/netns
  in_node mount --bind "$DIR/node/var-lib-cni" /var/lib/cni
  # The local volumes live on a filesystem of their own (a sparse ext4 image, loop-mounted in the
  # node only): brokers measure the free space of their data directory, and the host's shared
  # disk filling up must not look like a full broker volume. It goes with the node's namespace.
  truncate -s "$VOLUME_SIZE" "$DIR/volumes.img"
  mkfs.ext4 -q -F -m 0 -N 65536 -E lazy_itable_init=1,lazy_journal_init=1 "$DIR/volumes.img"
  mkdir -p "$DIR/volumes"
  in_node mount -o loop "$DIR/volumes.img" "$DIR/volumes"

  ip link add "$VETH" type veth peer name eth0 netns "$NS/net"
  ip addr add "$HOST_IP/30" dev "$VETH"
  ip link set "$VETH" up
  in_node ip link set lo up
  in_node ip addr add "$NODE_IP/30" dev eth0
  in_node ip link set eth0 up
  in_node ip route add default via "$HOST_IP"
  ip route add "$SERVICE_CIDR" via "$NODE_IP" dev "$VETH"
  ip route add "$POD_CIDR" via "$NODE_IP" dev "$VETH"
  in_node sysctl -qw net.ipv4.ip_forward=1
  # Pod -> Service -> pod on the same bridge needs bridged traffic to pass iptables.
  in_node sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null ||
    log "note: net.bridge.bridge-nf-call-iptables is not available in the node namespace"
}

setup_cgroups() {
  local h
  for h in /sys/fs/cgroup/*/; do
    [[ -d "$h" ]] && mkdir -p "$h${CGROUP_ROOT#/}"
  done
}

remember_kernel_settings() {
  # The kubelet sets these (they are not per namespace); the first cluster keeps the old values.
  [[ -f "$SLOTS/kernel-settings" ]] && return 0
  local k
  for k in "${KERNEL_SETTINGS[@]}"; do echo "$k=$(sysctl -n "$k")"; done >"$SLOTS/kernel-settings"
}

write_configs() {
  mkdir -p "$DIR/cni/net.d" "$DIR/containerd" "$DIR/kubelet"
  cat >"$DIR/cni/net.d/10-ferromq.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "ferromq-$N",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_CIDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
  cat >"$DIR/containerd/config.toml" <<TOML
version = 2
root = "$DIR/containerd/root"
state = "$DIR/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = "$DIR/node/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$DIR/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  stream_server_address = "127.0.0.1"
  disable_apparmor = true
  # Kubelet asks for negative OOM scores (-998 for critical pods, -997 for Guaranteed ones);
  # lowering a score needs CAP_SYS_RESOURCE, which this machine's sandbox withholds even from
  # root (runc then fails with "can't get final child's PID from pipe"). Clamp at containerd's.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$DIR/cni/net.d"
TOML
  printf 'nameserver %s\n' "$DNS_IP" >"$DIR/kubelet/resolv.conf"
  cat >"$DIR/kubelet/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This host has cgroups v1; kubelet 1.35 refuses them unless told otherwise.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: $CGROUP_ROOT
containerRuntimeEndpoint: unix://$DIR/node/containerd.sock
address: $NODE_IP
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
clusterDNS: [$DNS_IP]
clusterDomain: cluster.local
resolvConf: $DIR/kubelet/resolv.conf
podLogsDir: $DIR/logs/pods
failSwapOn: false
protectKernelDefaults: false
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
volumePluginDir: $DIR/kubelet/volume-plugins
rotateCertificates: false
YAML
  cat >"$DIR/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $DIR/cp/kubeconfig}
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $POD_CIDR
bindAddress: 0.0.0.0
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# Leave the conntrack table settings (global to the host) alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
iptables: {localhostNodePorts: false}
YAML
}

# The cluster add-ons: CoreDNS behind kube-dns, the default StorageClass and its volumes.
addons() {
  local i pvs=""
  for i in $(seq 0 $((PV_COUNT - 1))); do
    in_node mkdir -p "$DIR/volumes/pv-$i"
    pvs+="---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: local-pv-$i
  labels: {ferromq.test/volume: \"true\"}
spec:
  capacity: {storage: 20Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: local
  local: {path: $DIR/volumes/pv-$i}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions:
        - {key: kubernetes.io/hostname, operator: In, values: [$NODE_NAME]}
"
  done
  sed -e "s#@DNS_IP@#$DNS_IP#g" -e "s#@COREDNS_IMAGE@#$COREDNS_IMAGE#g" "$HERE/node/addons.yaml" | kube apply -f - >/dev/null
  printf '%s' "$pvs" | kube apply -f - >/dev/null
}

kube() { "$KUBECTL" --kubeconfig "$DIR/cp/kubeconfig" "$@"; }

node_ready() {
  [[ "$(kube get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]]
}

cmd_up() {
  [[ $(id -u) == 0 ]] || die "must run as root (namespaces, mounts, cgroups)"
  trap 'log "start-up failed; logs in $DIR/logs; undo everything with: $0 down $DIR"' ERR
  mkdir -p "$DIR"
  DIR="$(cd "$DIR" && pwd)"
  [[ -z "$(ls -A "$DIR")" ]] || die "$DIR is not empty"
  local t0=$SECONDS t
  need_packages
  t=$SECONDS
  BIN="$(bash "$ENV" build-node)"
  KUBECTL="$(bash "$ENV" kubectl)"
  node_images
  local build_s=$((SECONDS - t))
  mkdir -p "$DIR/logs/pods" "$DIR/pids"
  claim_slot
  load_slot
  echo "$BIN" >"$DIR/bin"
  setup_namespaces
  setup_cgroups
  remember_kernel_settings
  write_configs

  bash "$ENV" start "$DIR/cp" --address "$HOST_IP" --service-cidr "$SERVICE_CIDR" --service-accounts \
    --with-controller-manager
  start scheduler "$BIN/kube-scheduler" --kubeconfig="$DIR/cp/kubeconfig" --leader-elect=false \
    --secure-port=0
  start containerd nsenter --mount="$NS/mnt" --net="$NS/net" -- containerd --config "$DIR/containerd/config.toml"
  wait_until 30 "containerd" ctr_ version
  ctr_ images import "$PAUSE_TAR" >/dev/null
  ctr_ images import "$COREDNS_TAR" >/dev/null
  start kubelet nsenter --mount="$NS/mnt" --net="$NS/net" -- "$BIN/kubelet" --config="$DIR/kubelet/config.yaml" \
    --kubeconfig="$DIR/cp/kubeconfig" --root-dir="$DIR/kubelet/root" --cert-dir="$DIR/kubelet/pki" \
    --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --v=1
  start kube-proxy nsenter --mount="$NS/mnt" --net="$NS/net" -- "$BIN/kube-proxy" --config="$DIR/kube-proxy.yaml"
  wait_until 120 "node $NODE_NAME Ready" node_ready
  # Nothing is scheduled before the controller manager has made the default ServiceAccount.
  wait_until 60 "default ServiceAccount" kube -n default get serviceaccount default
  addons
  wait_until 120 "CoreDNS Ready" kube -n kube-system wait --for=condition=Available deployment/coredns --timeout=1s

  {
    cat "$DIR/cp/env"
    echo "export FERROMQ_K8S_DIR=$DIR"
    echo "export FERROMQ_K8S_NODE_IP=$NODE_IP"
    echo "export FERROMQ_K8S_DNS_IP=$DNS_IP"
    echo "export FERROMQ_K8S_SERVICE_CIDR=$SERVICE_CIDR"
    echo "export FERROMQ_K8S_POD_CIDR=$POD_CIDR"
  } >"$DIR/env"
  log "cluster up in $((SECONDS - t0))s (binaries and node images ${build_s}s); source $DIR/env"
}

# Kills every process left in the node: those in its mount namespace (containerd, shims, the
# kubelet) and those in its pods' cgroups. Nothing else can be in either.
kill_node_processes() {
  local mnt p cg
  mnt="$(stat -L -c %i "$NS/mnt" 2>/dev/null || true)"
  for p in /proc/[0-9]*; do
    p="${p#/proc/}"
    if [[ -n "$mnt" && "$(stat -L -c %i "/proc/$p/ns/mnt" 2>/dev/null)" == "$mnt" ]]; then
      kill -KILL "$p" 2>/dev/null || true
      continue
    fi
    cg="$(cat "/proc/$p/cgroup" 2>/dev/null || true)"
    if [[ "$cg" == *":$CGROUP_ROOT/"* ]]; then kill -KILL "$p" 2>/dev/null || true; fi
  done
}

remove_cgroups() {
  local h d
  for h in /sys/fs/cgroup/*/; do
    [[ -d "$h${CGROUP_ROOT#/}" ]] || continue
    # Deepest first; a cgroup goes once its processes have exited.
    find "$h${CGROUP_ROOT#/}" -depth -type d 2>/dev/null | while read -r d; do
      for _ in 1 2 3 4 5 6 7 8 9 10; do rmdir "$d" 2>/dev/null && break; sleep 0.2; done
    done
  done
}

cmd_down() {
  [[ -d "$DIR" ]] || return 0
  DIR="$(cd "$DIR" && pwd)"
  [[ -f "$DIR/slot" ]] || { rm -rf "$DIR"; return 0; }
  load_slot
  # Everything of the node lives in its namespaces and cgroups: stop the node's processes, kill
  # what the pods left, then the control plane.
  stop_pid kube-proxy
  stop_pid kubelet
  local task
  for task in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s SIGKILL "$task" >/dev/null 2>&1 || true; done
  stop_pid containerd
  kill_node_processes
  stop_pid scheduler
  bash "$ENV" stop "$DIR/cp" || true
  # The namespaces go with their last reference; their mounts (pod network namespaces, overlay
  # roots, volumes) with them.
  umount "$NS/mnt" 2>/dev/null || true
  umount "$NS/net" 2>/dev/null || true
  umount "$NS" 2>/dev/null || true
  ip link del "$VETH" 2>/dev/null || true
  # The volumes' loop device is released with the namespace's last mount (autoclear).
  local i
  for i in $(seq 1 40); do
    [[ -z "$(losetup -j "$DIR/volumes.img" 2>/dev/null)" ]] && break
    sleep 0.25
  done
  losetup -j "$DIR/volumes.img" 2>/dev/null | cut -d: -f1 | while read -r d; do losetup -d "$d" || true; done
  remove_cgroups
  rm -rf "${SLOTS:?}/$N"
  if [[ -f "$SLOTS/kernel-settings" ]] && ! ls -d "$SLOTS"/[0-9]* >/dev/null 2>&1; then
    local kv
    while read -r kv; do sysctl -qw "$kv" || true; done <"$SLOTS/kernel-settings"
    rm -f "$SLOTS/kernel-settings"
  fi
  # The last cluster removes the mount points it had to make on the host (if still empty).
  if [[ -f "$SLOTS/made-dirs" ]] && ! ls -d "$SLOTS"/[0-9]* >/dev/null 2>&1; then
    local d
    while read -r d; do rmdir "$d" 2>/dev/null || true; done <"$SLOTS/made-dirs"
    rm -f "$SLOTS/made-dirs"
    rmdir "$SLOTS" 2>/dev/null || true
  fi
  rm -rf "$DIR"
  if ! leftovers >&2; then
    log "cluster in slot $N is down, but the host still holds what is listed above"
    return 1
  fi
  log "cluster in slot $N is down; no process, mount, namespace, link, route, cgroup or iptables rule of it is left"
}

# Lists what a stopped cluster left on the host; fails when anything is listed.
leftovers() {
  local found=0 p h
  for p in /proc/[0-9]*; do
    # Every process of the cluster names DIR in its command line (shims, kubelet, etcd, ...).
    [[ "${p#/proc/}" == "$$" ]] && continue
    if tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -qF "$DIR/"; then
      echo "left: process ${p#/proc/}: $(tr '\0' ' ' <"$p/cmdline" | cut -c1-120)"
      found=1
    fi
  done
  if grep -F "$DIR" /proc/self/mountinfo; then found=1; fi
  if losetup -l -n -O NAME,BACK-FILE 2>/dev/null | grep -F "$DIR/"; then found=1; fi
  if ip link show "$VETH" >/dev/null 2>&1; then echo "left: link $VETH"; found=1; fi
  if ip route | grep -E "^(${SERVICE_CIDR%/*}|${POD_CIDR%/*})/"; then found=1; fi
  for h in /sys/fs/cgroup/*/; do
    if [[ -d "$h${CGROUP_ROOT#/}" ]]; then echo "left: cgroup $h${CGROUP_ROOT#/}"; found=1; fi
  done
  if iptables-save 2>/dev/null | grep -E -- "KUBE-|CNI-|${SERVICE_CIDR%.*}\.|${POD_CIDR%.*}\."; then found=1; fi
  return "$found"
}

cmd_import() {
  DIR="$(cd "$DIR" && pwd)"
  local f
  for f in "$@"; do ctr_ images import "$f" >/dev/null; done
}

cmd_tag() {
  DIR="$(cd "$DIR" && pwd)"
  ctr_ images tag --force "$1" "$2" >/dev/null
}

cmd_node() {
  DIR="$(cd "$DIR" && pwd)"
  load_slot
  in_node "$@"
}

case "${1:-}" in
  up) DIR="${2:?up needs a directory}"; cmd_up ;;
  down) DIR="${2:?down needs the directory}"; cmd_down ;;
  import) DIR="${2:?import needs the directory}"; shift 2; cmd_import "$@" ;;
  tag) DIR="${2:?tag needs the directory}"; shift 2; cmd_tag "$@" ;;
  node) DIR="${2:?node needs the directory}"; shift 2; cmd_node "$@" ;;
  *) echo "usage: $0 up DIR | down DIR | import DIR ARCHIVE... | tag DIR IMAGE NEW-NAME | node DIR CMD..." >&2; exit 2 ;;
esac
