#!/usr/bin/env bash
# The native addon under AddressSanitizer + UndefinedBehaviorSanitizer and under valgrind memcheck.
#   1. builds build-asan/Release/ipc_ckpt.node with cmake-js -DIPC_CKPT_SANITIZE=ON
#   2. runs scripts/sanitize-exercise.js (every native call) and the jest "native" project
#      (test/native + test/ns, CLI children included) against it, libasan preloaded into node
#   3. runs scripts/sanitize-exercise.js under valgrind memcheck against the normal build
# Exit 0 only when no sanitizer and no valgrind report was written. Run from anywhere, as root.
# SANITIZE_SKIP_BUILD=1 reuses an existing build-asan; SANITIZE_SKIP_VALGRIND=1 skips step 3.
set -euo pipefail
cd "$(dirname "$0")/.."

ASAN_ADDON=build-asan/Release/ipc_ckpt.node
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
status=0

say() { printf 'sanitize: %s\n' "$*" >&2; }

libasan=$(gcc -print-file-name=libasan.so)
if [ ! -e "$libasan" ]; then
  say "libasan.so not found (gcc -print-file-name=libasan.so gave '$libasan'): install gcc's libasan"
  exit 1
fi

if [ "${SANITIZE_SKIP_BUILD:-0}" != 1 ] || [ ! -e "$ASAN_ADDON" ]; then
  say "building $ASAN_ADDON (-fsanitize=address,undefined)"
  npx cmake-js rebuild --out build-asan --CDIPC_CKPT_SANITIZE=ON >"$logs/build.txt" 2>&1 || { cat "$logs/build.txt" >&2; exit 1; }
fi
# A build without instrumentation would pass everything: prove it is there.
symbols=$(nm -D "$ASAN_ADDON")
if ! grep -q __asan_report_load <<<"$symbols" || ! grep -q __ubsan_handle <<<"$symbols"; then
  say "$ASAN_ADDON is not instrumented"
  exit 1
fi

# node is not instrumented: libasan must be loaded first. node frees not everything at exit, so no
# leak check here (valgrind below checks the addon's leaks). UBSan reports and goes on; ASan stops.
sanitized_env=(
  LD_PRELOAD="$libasan"
  ASAN_OPTIONS="detect_leaks=0:log_path=$logs/asan:print_summary=1"
  UBSAN_OPTIONS="print_stacktrace=1:log_path=$logs/ubsan"
  IPC_CKPT_ADDON="$ASAN_ADDON"
)
say "ASan+UBSan: scripts/sanitize-exercise.js"
env "${sanitized_env[@]}" node scripts/sanitize-exercise.js || status=1
say "ASan+UBSan: jest --selectProjects native --runInBand"
env "${sanitized_env[@]}" npx jest --selectProjects native --runInBand || status=1

shopt -s nullglob
reports=("$logs"/asan.* "$logs"/ubsan.*)
if [ ${#reports[@]} -gt 0 ]; then
  status=1
  for report in "${reports[@]}"; do
    say "report $report:"
    cat "$report" >&2
  done
  say "${#reports[@]} sanitizer report file(s); the addon's own frames name native/*.cc"
else
  say "ASan+UBSan: no report"
fi

if [ "${SANITIZE_SKIP_VALGRIND:-0}" != 1 ]; then
  if ! command -v valgrind >/dev/null; then
    say "valgrind is not installed (apt-get install valgrind)"
    exit 1
  fi
  say "valgrind memcheck: scripts/sanitize-exercise.js"
  # The normal build: IPC_CKPT_ADDON unset means build/Release (npm install's node-gyp build).
  if env -u IPC_CKPT_ADDON valgrind --tool=memcheck --error-exitcode=99 --leak-check=full --show-leak-kinds=definite \
    --errors-for-leak-kinds=definite --num-callers=40 --log-file="$logs/valgrind.txt" \
    node scripts/sanitize-exercise.js; then
    say "valgrind: $(grep -h 'ERROR SUMMARY' "$logs"/valgrind.txt* | head -1 | sed 's/^==[0-9]*== //')"
  else
    status=1
    cat "$logs"/valgrind.txt* >&2
    say "valgrind reported errors (frames in ipc_ckpt.node are the addon's)"
  fi
fi

exit $status
