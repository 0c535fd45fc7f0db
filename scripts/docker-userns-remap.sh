#!/usr/bin/env bash
# A second Docker engine with --userns-remap=default, beside (never instead of) the shared one: its own
# data root, exec root, socket and managed containerd (own containerd namespaces), no iptables rules.
# Usage: scripts/docker-userns-remap.sh start DIR | stop DIR
# `start` makes the dockremap user and its subordinate ids (dockremap:300000:65536) when they are missing,
# starts dockerd with DIR as its home and prints the socket (unix://DIR/docker.sock) once it answers.
set -euo pipefail

readonly SUBORDINATE_RANGE=${IPC_CKPT_DOCKREMAP_RANGE:-300000:65536}
readonly START_TIMEOUT=${IPC_CKPT_DOCKER_START_TIMEOUT:-90}

log() { echo "docker-userns-remap: $*" >&2; }

ensure_dockremap() {
  getent passwd dockremap >/dev/null || useradd --system --no-create-home --shell /usr/sbin/nologin dockremap
  grep -q '^dockremap:' /etc/subuid 2>/dev/null || echo "dockremap:$SUBORDINATE_RANGE" >>/etc/subuid
  grep -q '^dockremap:' /etc/subgid 2>/dev/null || echo "dockremap:$SUBORDINATE_RANGE" >>/etc/subgid
}

start() {
  local dir=$1 socket="unix://$1/docker.sock"
  command -v dockerd >/dev/null || { log "no dockerd (install docker.io: scripts/docker-setup.sh start)"; exit 1; }
  ensure_dockremap
  mkdir -p "$dir"
  # The remapped root must be able to walk into the data root.
  chmod o+x "$dir"
  # Not --bridge=none: a dockerd started so deletes docker0, the shared engine's bridge, and its builds then fail.
  # Its containers run with --network=none, so sharing docker0 allocates nothing on it.
  setsid dockerd --data-root "$dir/data" --exec-root "$dir/exec" --host "$socket" --pidfile "$dir/dockerd.pid" \
    --userns-remap=default --iptables=false --ip-masq=false \
    --containerd-namespace=ipc-ckpt-userns --containerd-plugins-namespace=ipc-ckpt-userns-plugins \
    >"$dir/dockerd.log" 2>&1 </dev/null &
  echo $! >"$dir/dockerd.started"
  local waited=0
  until timeout 10 docker -H "$socket" info >/dev/null 2>&1; do
    if ! kill -0 "$(cat "$dir/dockerd.started")" 2>/dev/null || ((waited >= START_TIMEOUT)); then
      log "dockerd did not come up; last lines of its log:"
      tail -n 30 "$dir/dockerd.log" >&2
      exit 1
    fi
    sleep 1
    waited=$((waited + 1))
  done
  echo "$socket"
}

stop() {
  local dir=$1 pid
  [[ -f $dir/dockerd.started ]] || return 0
  pid=$(cat "$dir/dockerd.started")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    # dockerd stops its containers and its managed containerd before it exits.
    for _ in $(seq 1 60); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  fi
  rm -f "$dir/dockerd.started"
}

case "${1:-}" in
  start) start "${2:?usage: $0 start DIR}" ;;
  stop) stop "${2:?usage: $0 stop DIR}" ;;
  *) echo "usage: $0 start DIR | stop DIR" >&2; exit 2 ;;
esac
