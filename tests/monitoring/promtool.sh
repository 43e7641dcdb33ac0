#!/usr/bin/env bash
# Prints the path of a promtool, fetched once and cached under $FERROMQ_TEST_CACHE/promtool/.
#
#   tests/monitoring/promtool.sh          # fetch if missing, print the path
#
# By default promtool comes out of Debian's `prometheus` package (unpacked, never installed: no
# service starts), which takes seconds. FERROMQ_PROMTOOL_FROM=go builds it from the Prometheus
# Go module instead (FERROMQ_PROMETHEUS_VERSION, default v0.316.0): a newer promtool, but a build
# that takes many minutes on two cores, too long for every fresh CI machine.
set -euo pipefail

ROOT_CACHE="${FERROMQ_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ferromq-tests}/promtool"
log() { echo "promtool: $*" >&2; }

from_debian() {
  local cache="$ROOT_CACHE/debian"
  if [[ ! -x "$cache/promtool" ]]; then
    local work
    work="$(mktemp -d)"
    log "unpacking promtool from Debian's prometheus package"
    (cd "$work" && apt-get download prometheus >/dev/null 2>&1) \
      || { apt-get update -qq >/dev/null && (cd "$work" && apt-get download prometheus >/dev/null 2>&1); } \
      || { rm -rf "$work"; return 1; }
    dpkg-deb -x "$work"/prometheus_*.deb "$work/x"
    mkdir -p "$cache"
    mv "$work/x/usr/bin/promtool" "$cache/promtool"
    rm -rf "$work"
  fi
  echo "$cache/promtool"
}

from_go() {
  local version="${FERROMQ_PROMETHEUS_VERSION:-v0.316.0}"
  local cache="$ROOT_CACHE/$version"
  if [[ ! -x "$cache/promtool" ]]; then
    if ! command -v go >/dev/null; then
      log "installing Go from Debian packages"
      apt-get update -qq && apt-get install -y -qq golang-go >/dev/null
    fi
    mkdir -p "$cache"
    local start=$SECONDS
    log "building promtool from github.com/prometheus/prometheus@$version"
    # `go install mod@version` builds the command with the module's own go.mod, into a
    # private GOBIN.
    GOBIN="$cache/bin.tmp" CGO_ENABLED=0 GOFLAGS=-trimpath \
      go install "github.com/prometheus/prometheus/cmd/promtool@$version" >&2
    mv "$cache/bin.tmp/promtool" "$cache/promtool"
    rmdir "$cache/bin.tmp" 2>/dev/null || true
    log "built in $((SECONDS - start))s"
  fi
  echo "$cache/promtool"
}

case "${FERROMQ_PROMTOOL_FROM:-debian}" in
  go) from_go ;;
  debian) from_debian || { log "no Debian package reachable; building from the Go module"; from_go; } ;;
  *) log "FERROMQ_PROMTOOL_FROM must be debian or go"; exit 2 ;;
esac
