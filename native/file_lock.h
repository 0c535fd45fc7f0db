// flock(2) for lib/namespace-lock.ts: Node has no binding for it.
#pragma once

#include <napi.h>

// lockFile(fd, 'shared' | 'exclusive' | 'unlock'): never blocks (LOCK_NB); true when the lock is held
// (or released), false when another open file holds a conflicting lock; throws on any other failure.
Napi::Value LockFile(const Napi::CallbackInfo& info);
