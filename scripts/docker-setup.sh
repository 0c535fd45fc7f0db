#!/usr/bin/env bash
# Starts (or stops) a Docker engine for the container tests: Debian's docker.io, dockerd run by this script.
# Usage: scripts/docker-setup.sh start | stop | status
# `start` is a no-op when an engine already answers; `stop` only stops a dockerd that `start` launched.
set -euo pipefail

readonly STATE_DIR=${IPC_CKPT_DOCKER_STATE:-/var/run/ipc-ckpt-docker}
readonly PID_FILE=$STATE_DIR/dockerd.pid
readonly LOG_FILE=$STATE_DIR/dockerd.log
# Seconds to wait for a fresh dockerd to answer (first start initialises its data root).
readonly START_TIMEOUT=${IPC_CKPT_DOCKER_START_TIMEOUT:-90}

log() { echo "docker-setup: $*" >&2; }

engine_answers() { timeout 10 docker info >/dev/null 2>&1; }

install_engine() {
  # /usr/local/bin/docker may be a client only; the engine (dockerd, containerd, runc) comes from Debian.
  command -v dockerd >/dev/null && return
  log "installing Debian's docker.io (dockerd, containerd, runc)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d 101: the package must not try to start a service manager's docker; this script runs dockerd itself.
  local policy=/usr/sbin/policy-rc.d created_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
  fi
  apt-get install -y -qq --no-install-recommends docker.io >/dev/null
  [[ $created_policy == 1 ]] && rm -f "$policy"
  command -v dockerd >/dev/null || { log "docker.io installed no dockerd"; exit 1; }
}

start() {
  if engine_answers; then
    log "an engine already answers; leaving it as it is"
    return
  fi
  install_engine
  mkdir -p "$STATE_DIR"
  if [[ -f $PID_FILE ]] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
    log "dockerd $(cat "$PID_FILE") is running but does not answer yet"
  else
    log "starting dockerd (log: $LOG_FILE)"
    # setsid: dockerd outlives this script and the caller's process group; the pid file is how stop finds it.
    setsid dockerd --host unix:///var/run/docker.sock >"$LOG_FILE" 2>&1 </dev/null &
    echo $! >"$PID_FILE"
  fi
  local waited=0
  until engine_answers; do
    if ! kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
      log "dockerd exited; last lines of its log:"
      tail -n 30 "$LOG_FILE" >&2
      rm -f "$PID_FILE"
      exit 1
    fi
    if ((waited >= START_TIMEOUT)); then
      log "dockerd did not answer within ${START_TIMEOUT}s; last lines of its log:"
      tail -n 30 "$LOG_FILE" >&2
      exit 1
    fi
    sleep 1
    waited=$((waited + 1))
  done
  log "engine ready after ${waited}s: $(docker version --format 'server {{.Server.Version}}, API {{.Server.APIVersion}}')"
}

stop() {
  if [[ ! -f $PID_FILE ]]; then
    log "no dockerd started by this script; nothing to stop"
    return
  fi
  local pid
  pid=$(cat "$PID_FILE")
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping dockerd $pid"
    kill -TERM "$pid"
    # dockerd stops its containers and its managed containerd before it exits.
    for _ in $(seq 1 60); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "dockerd $pid still running after 60s; sending SIGKILL"
      kill -KILL "$pid"
    fi
  fi
  rm -f "$PID_FILE"
}

status() {
  if engine_answers; then
    docker version --format 'engine answers: server {{.Server.Version}}, API {{.Server.APIVersion}}'
  else
    echo "no engine answers"
    return 1
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
