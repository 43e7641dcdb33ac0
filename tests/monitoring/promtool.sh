#!/usr/bin/env bash
# Prints the path of a promtool built from the Prometheus Go module (cached under
# $FERROMQ_TEST_CACHE/promtool/<version>/ so only the first run on a machine compiles it).
#
#   tests/monitoring/promtool.sh          # build if missing, print the path
#
# The version is pinned here; change it and the cache key changes with it.
set -euo pipefail

PROMETHEUS_MODULE_VERSION="${FERROMQ_PROMETHEUS_VERSION:-v0.316.0}"
CACHE="${FERROMQ_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ferromq-tests}/promtool/$PROMETHEUS_MODULE_VERSION"

log() { echo "promtool: $*" >&2; }

if [[ ! -x "$CACHE/promtool" ]]; then
  if ! command -v go >/dev/null; then
    log "installing Go from Debian packages"
    apt-get update -qq && apt-get install -y -qq golang-go >/dev/null
  fi
  mkdir -p "$CACHE"
  start=$SECONDS
  log "building promtool from github.com/prometheus/prometheus@$PROMETHEUS_MODULE_VERSION"
  # `go install mod@version` builds the command with the module's own go.mod (no replace lines
  # to work around), into a private GOBIN.
  GOBIN="$CACHE/bin.tmp" CGO_ENABLED=0 GOFLAGS=-trimpath \
    go install "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_MODULE_VERSION" >&2
  mv "$CACHE/bin.tmp/promtool" "$CACHE/promtool"
  rmdir "$CACHE/bin.tmp" 2>/dev/null || true
  log "built in $((SECONDS - start))s"
fi
echo "$CACHE/promtool"
