// ipc_ckpt.node: the system-call half of ipc-ckpt. Its surface is declared in lib/native.ts.
#include <napi.h>

#include "detached_child.h"
#include "file_lease.h"
#include "file_lock.h"
#include "heap_policy.h"
#include "namespace_session.h"

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  NamespaceSession::Register(env);
  exports.Set("openNamespace", Napi::Function::New<NamespaceSession::OpenNamespace>(env, "openNamespace"));
  exports.Set("lockFile", Napi::Function::New<LockFile>(env, "lockFile"));
  exports.Set("takeReadLease", Napi::Function::New<TakeReadLease>(env, "takeReadLease"));
  exports.Set("readLeaseHeld", Napi::Function::New<ReadLeaseHeld>(env, "readLeaseHeld"));
  exports.Set("fileSystemMagic", Napi::Function::New<FileSystemMagic>(env, "fileSystemMagic"));
  exports.Set("keepFreedHeap", Napi::Function::New<KeepFreedHeap>(env, "keepFreedHeap"));
  exports.Set("spawnDetached", Napi::Function::New<SpawnDetached>(env, "spawnDetached"));
  exports.Set("reapChild", Napi::Function::New<ReapChild>(env, "reapChild"));
  return exports;
}

}  // namespace

NODE_API_MODULE(ipc_ckpt, Init)
