#!/usr/bin/env bash
# Shared helpers of the Kubernetes suites (60-operator, 70-helm); source it after setting
# `state` (a scratch directory) and KUBECTL. Each check prints `ok: NAME` or `FAILED: NAME`
# with the tail of its output, and counts into `passed` / `failed`.

passed=0
failed=0

# need COMMAND DEBIAN_PACKAGE: installs the package when the command is missing.
need() {
  command -v "$1" >/dev/null && return
  echo "installing $2"
  apt-get update -qq && apt-get install -y -qq "$2" >/dev/null
}

k() { "$KUBECTL" "$@"; }

# check NAME CMD...: runs CMD, records the verdict, never exits.
check() {
  local name="$1"
  shift
  if "$@" >"$state/out" 2>&1; then
    passed=$((passed + 1))
    echo "ok: $name"
  else
    failed=$((failed + 1))
    echo "FAILED: $name"
    tail -20 "$state/out" | sed 's/^/    /'
  fi
}

# wait_for SECONDS CMD...: retries CMD every 0.25s until it succeeds or time runs out.
wait_for() {
  local limit="$1"
  shift
  local end=$((SECONDS + limit))
  while ((SECONDS < end)); do
    if "$@"; then return 0; fi
    sleep 0.25
  done
  "$@"
}

# stop_proc PID: SIGTERM, then up to 20s for a clean exit (SIGKILL after that); returns the
# process's exit status, or 124 when it had to be killed.
stop_proc() {
  local pid="$1" i
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 80); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.25
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    return 124
  fi
  local status=0
  wait "$pid" || status=$?
  return "$status"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# refused MESSAGE CMD...: succeeds when CMD fails with output containing MESSAGE.
refused() {
  local msg="$1" out
  shift
  if out="$("$@" 2>&1)"; then
    echo "accepted: $out"
    return 1
  fi
  echo "$out"
  grep -q -- "$msg" <<<"$out"
}
