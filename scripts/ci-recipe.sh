#!/usr/bin/env bash
# CI recipe: start an application container, checkpoint its SysV message queues, restore them into a fresh
# container and verify, first with ipc-ckpt on the host (npx), then with ipc-ckpt's own image; every step's
# result is a --json document in $OUT (docs/JSON.md). Copy it into a CI job; the container tests run it as is
# (test/container/ci-recipe.test.ts). Run as root on the Docker host (ipc-ckpt reaches /proc/PID/ns/ipc).
#
#   APP_IMAGE=my-app:1.2 HOLD_COMMAND='sleep infinity' CHECK_COMMAND='my-app --self-test' bash scripts/ci-recipe.sh
#
# Environment:
#   APP_IMAGE           the application's image (required)
#   APP_COMMAND         the command of the application container (default: the image's own)
#   READY_LOG           wait until the application's log holds this text (its queues are made) before saving
#   HOLD_COMMAND        what the fresh containers run until their queues are restored (default: sleep infinity)
#   CHECK_COMMAND       run with docker exec in each restored container after verify (the application's own check)
#   DOCKER_RUN_OPTIONS  more `docker run` options for the application containers (e.g. --sysctl kernel.msgmnb=65536)
#   IPC_CKPT            how ipc-ckpt runs on the host (default: npx ipc-ckpt)
#   IPC_CKPT_IMAGE      ipc-ckpt's own image (docker build -t ipc-ckpt .); empty skips the second half
#   OUT                 where the image and the JSON results go (default: ./ipc-ckpt-ci)
# Exit status: 0 when every step succeeded and both restores verified equal; otherwise the failing step's, with
# its JSON document (the result or an error document) printed on stderr. Containers started here are removed.
set -euo pipefail

: "${APP_IMAGE:?APP_IMAGE: the application image to checkpoint}"
APP_COMMAND=${APP_COMMAND:-}
READY_LOG=${READY_LOG:-}
HOLD_COMMAND=${HOLD_COMMAND:-sleep infinity}
CHECK_COMMAND=${CHECK_COMMAND:-}
DOCKER_RUN_OPTIONS=${DOCKER_RUN_OPTIONS:-}
IPC_CKPT=${IPC_CKPT:-npx ipc-ckpt}
IPC_CKPT_IMAGE=${IPC_CKPT_IMAGE:-}
OUT=$(mkdir -p "${OUT:-ipc-ckpt-ci}" && cd "${OUT:-ipc-ckpt-ci}" && pwd)
# What ipc-ckpt's image needs to reach other containers' namespaces (docs/CONTAINERS.md says why, one by one).
readonly TOOL_RUN_OPTIONS="--pid=host --cap-add=SYS_ADMIN --cap-add=SYS_PTRACE --cap-add=IPC_OWNER --security-opt=systempaths=unconfined"
readonly RUN_ID=ipc-ckpt-ci-$$
started=()
trap 'if [ ${#started[@]} -gt 0 ]; then docker rm -f "${started[@]}" >/dev/null; fi' EXIT

log() { echo "ci-recipe: $*" >&2; }

# start NAME COMMAND...: a container of the application image in its own IPC namespace; its pid in $pid.
# (Not printed: a $(start ...) subshell would lose the name in $started, and the container its removal.)
start() {
  local name=$RUN_ID-$1
  shift
  # shellcheck disable=SC2086 # DOCKER_RUN_OPTIONS is a list of options
  docker run -d --name "$name" --ipc=private $DOCKER_RUN_OPTIONS "$APP_IMAGE" "$@" >/dev/null
  started+=("$name")
  pid=$(docker inspect -f '{{.State.Pid}}' "$name")
}

# step NAME COMMAND...: runs an ipc-ckpt command whose --json document goes to $OUT/NAME.json; on failure shows it.
step() {
  local name=$1 status=0
  shift
  "$@" >"$OUT/$name.json" || status=$?
  if [ "$status" -ne 0 ]; then
    log "$name failed (exit $status):"
    cat "$OUT/$name.json" >&2
    exit "$status"
  fi
}

# 1. The application container; wait until it has made its queues.
# shellcheck disable=SC2086 # APP_COMMAND is a command line
start app $APP_COMMAND
app_pid=$pid
if [ -n "$READY_LOG" ]; then
  for _ in $(seq 300); do
    docker logs "$RUN_ID-app" 2>&1 | grep -qF -- "$READY_LOG" && break
    sleep 0.1
  done
  docker logs "$RUN_ID-app" 2>&1 | grep -qF -- "$READY_LOG" || { log "the application never logged '$READY_LOG'"; exit 1; }
fi

# 2. ipc-ckpt on the host: check, save (the application's cgroup frozen meanwhile), restore into a fresh
#    container, verify, then the application's own check there.
step check $IPC_CKPT check --ns "/proc/$app_pid/ns/ipc" --json
step save $IPC_CKPT save --freeze -t "$app_pid" -o "$OUT/queues.img" --json
# shellcheck disable=SC2086 # HOLD_COMMAND is a command line
start restored $HOLD_COMMAND
fresh_pid=$pid
step restore $IPC_CKPT restore --ns "/proc/$fresh_pid/ns/ipc" -i "$OUT/queues.img" --json
step verify $IPC_CKPT verify --ns "/proc/$fresh_pid/ns/ipc" -i "$OUT/queues.img" --json
# shellcheck disable=SC2086 # CHECK_COMMAND is a command line
if [ -n "$CHECK_COMMAND" ]; then docker exec "$RUN_ID-restored" $CHECK_COMMAND; fi

# 3. The same with ipc-ckpt's own image, into a second fresh container.
if [ -n "$IPC_CKPT_IMAGE" ]; then
  # shellcheck disable=SC2086 # TOOL_RUN_OPTIONS is a list of options
  tool() { docker run --rm $TOOL_RUN_OPTIONS -v "$OUT:/data" "$IPC_CKPT_IMAGE" "$@"; }
  step image-save tool save --ns "/proc/$app_pid/ns/ipc" -o /data/image-queues.img --json
  # shellcheck disable=SC2086 # HOLD_COMMAND is a command line
  start image-restored $HOLD_COMMAND
  second_pid=$pid
  step image-restore tool restore --ns "/proc/$second_pid/ns/ipc" -i /data/image-queues.img --json
  step image-verify tool verify --ns "/proc/$second_pid/ns/ipc" -i /data/image-queues.img --json
  # shellcheck disable=SC2086 # CHECK_COMMAND is a command line
  if [ -n "$CHECK_COMMAND" ]; then docker exec "$RUN_ID-image-restored" $CHECK_COMMAND; fi
fi

log "done: results in $OUT ($(cd "$OUT" && echo *.json))"
