# shellcheck shell=bash
# Container images for the Kubernetes suites, built with buildah (vfs storage, chroot isolation:
# no Docker engine, no registry). Sourced, not executed; used by suite 70 (images built and
# started), tests/k8s/cluster.sh (the pause and CoreDNS images of the test node) and suite 75
# (the images that run as real pods).
#
#   images_init DIR            buildah storage under DIR; sets the command array B
#   images_debian_base         makes docker.io/library/debian:bookworm-slim (the Dockerfiles' base)
#                              from a debootstrap, cached under $FERROMQ_TEST_CACHE/images
#   images_build_prebuilt DOCKERFILE TAG BINARY...
#                              the Dockerfile's `prebuilt` target with those binaries in prebuilt/
#                              (debug info stripped: the release profile keeps it for profiling,
#                              which would make the images five times larger)
#   images_scratch TAG ENTRYPOINT FILE...
#                              an image FROM scratch holding each FILE at / and running ENTRYPOINT
#   images_save TAG ARCHIVE    a docker-archive (what `ctr images import` and `kind load` read)
#   images_cleanup             removes the storage made by images_init

images_init() {
  IMAGES_DIR="$1"
  mkdir -p "$IMAGES_DIR"
  if ! command -v buildah >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah >/dev/null
  fi
  B=(buildah --root "$IMAGES_DIR/root" --runroot "$IMAGES_DIR/run" --storage-driver vfs)
}

images_debian_base() {
  local base_tar="$FERROMQ_TEST_CACHE/images/debian-bookworm-minbase.tar.gz" rootfs="$IMAGES_DIR/rootfs" c
  if [[ ! -f "$base_tar" ]]; then
    command -v debootstrap >/dev/null ||
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
    mkdir -p "$(dirname "$base_tar")"
    rm -rf "$rootfs"
    debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >"$IMAGES_DIR/debootstrap.log" 2>&1 ||
      { tail -20 "$IMAGES_DIR/debootstrap.log" >&2; return 1; }
    rm -rf "$rootfs/var/lib/apt/lists"/* "$rootfs/usr/share/doc" "$rootfs/usr/share/man"
    tar -C "$rootfs" -czf "$base_tar.tmp" . && mv "$base_tar.tmp" "$base_tar"
    rm -rf "$rootfs"
  fi
  c="$("${B[@]}" from scratch)"
  "${B[@]}" add "$c" "$base_tar" / >/dev/null
  "${B[@]}" commit -q "$c" docker.io/library/debian:bookworm-slim >/dev/null
  "${B[@]}" rm "$c" >/dev/null
}

images_build_prebuilt() {
  local dockerfile="$1" tag="$2" ctx
  shift 2
  ctx="$IMAGES_DIR/ctx-${tag//[\/:]/_}"
  rm -rf "$ctx" && mkdir -p "$ctx/prebuilt"
  cp "$@" "$ctx/prebuilt/"
  if command -v strip >/dev/null; then strip --strip-debug "$ctx"/prebuilt/*; fi
  "${B[@]}" bud --isolation chroot --pull=never --target prebuilt -f "$dockerfile" -t "$tag" "$ctx"
}

images_scratch() {
  local tag="$1" entrypoint="$2" c f
  shift 2
  c="$("${B[@]}" from scratch)"
  for f in "$@"; do "${B[@]}" copy "$c" "$f" / >/dev/null; done
  "${B[@]}" config --entrypoint "[\"$entrypoint\"]" "$c"
  "${B[@]}" commit -q "$c" "$tag" >/dev/null
  "${B[@]}" rm "$c" >/dev/null
}

images_save() {
  rm -f "$2"
  "${B[@]}" push -q "$1" "docker-archive:$2:$1" >/dev/null
}

images_cleanup() {
  [[ -n "${IMAGES_DIR:-}" && -d "$IMAGES_DIR" ]] || return 0
  "${B[@]}" rm --all >/dev/null 2>&1 || true
  "${B[@]}" rmi --all --force >/dev/null 2>&1 || true
  rm -rf "$IMAGES_DIR" 2>/dev/null || true
}
