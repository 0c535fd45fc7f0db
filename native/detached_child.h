// A child program started without Node's child_process (lib/rollback-guardian.ts's guardian): posix_spawn
// in its own session, talking over two pipes, reaped by pid. Spares the CLI loading child_process, net and
// readline, and a spawn that costs milliseconds.
#pragma once

#include <napi.h>

// spawnDetached(program, args, inheritFd): { pid, input, output }. The child runs in a new session with
// default signal dispositions; its stdin reads `input` (ours to write), its stdout writes `output` (ours to
// read), stderr is ours; inheritFd, when >= 0, becomes its fd 3. Both pipe ends are close-on-exec here.
Napi::Value SpawnDetached(const Napi::CallbackInfo& info);

// reapChild(pid, wait): undefined while the child runs (wait false), else { code, signal } once it ended
// (waitpid; wait true blocks until then). Only for a child of spawnDetached.
Napi::Value ReapChild(const Napi::CallbackInfo& info);
