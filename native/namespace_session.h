// The JS object behind NativeNamespace (lib/native.ts): turns each method call into one job on
// the session's NamespaceThread and its result into JS values. Argument checks belong to lib/;
// the ones here only keep malformed calls from reaching a system call.
#pragma once

#include <napi.h>

#include <memory>
#include <optional>

#include "msg_queue_calls.h"
#include "namespace_target.h"
#include "namespace_thread.h"
#include "posix_queue_calls.h"

class NamespaceSession : public Napi::ObjectWrap<NamespaceSession> {
 public:
  // Defines the class and keeps its constructor for OpenNamespace.
  static void Register(Napi::Env env);
  // openNamespace(path): resolves to a session once its thread has entered the namespace.
  static Napi::Value OpenNamespace(const Napi::CallbackInfo& info);

  explicit NamespaceSession(const Napi::CallbackInfo& info);
  // Ends the thread of a session collected without close(), after the jobs it still holds.
  ~NamespaceSession() override;

 private:
  void Start(Napi::Env env, napi_deferred opened);
  // Queues the job that prepare() returns; a Napi::Error thrown by prepare() rejects instead.
  template <typename Prepare>
  Napi::Value RunJob(const Napi::CallbackInfo& info, Prepare prepare);

  Napi::Value ListQueues(const Napi::CallbackInfo& info);
  Napi::Value ListQueueStats(const Napi::CallbackInfo& info);
  Napi::Value StatQueue(const Napi::CallbackInfo& info);
  Napi::Value CopyMessages(const Napi::CallbackInfo& info);
  Napi::Value ReadSysctls(const Napi::CallbackInfo& info);
  Napi::Value WriteSysctl(const Napi::CallbackInfo& info);
  Napi::Value SysctlWritable(const Napi::CallbackInfo& info);
  Napi::Value UserNamespace(const Napi::CallbackInfo& info);
  Napi::Value CreateQueue(const Napi::CallbackInfo& info);
  Napi::Value SetQueue(const Napi::CallbackInfo& info);
  Napi::Value SendMessages(const Napi::CallbackInfo& info);
  Napi::Value RemoveQueue(const Napi::CallbackInfo& info);
  Napi::Value CreateQueues(const Napi::CallbackInfo& info);
  Napi::Value CopyQueues(const Napi::CallbackInfo& info);
  Napi::Value SendQueueMessages(const Napi::CallbackInfo& info);
  Napi::Value Probe(const Napi::CallbackInfo& info);
  Napi::Value ListPosixQueues(const Napi::CallbackInfo& info);
  Napi::Value TakePosixMessages(const Napi::CallbackInfo& info);
  Napi::Value CreatePosixQueue(const Napi::CallbackInfo& info);
  Napi::Value SendPosixMessages(const Napi::CallbackInfo& info);
  Napi::Value RemovePosixQueue(const Napi::CallbackInfo& info);
  Napi::Value ReadMqueueLimits(const Napi::CallbackInfo& info);
  Napi::Value WriteMqueueLimit(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  // Declaration order matters: thread_ is destroyed (joined) first, before what its jobs use.
  NamespaceTarget target_;
  MsgQueueCalls calls_;
  KernelSysctls sysctls_;
  PosixQueueCalls posixCalls_;
  std::unique_ptr<NamespaceThread> thread_;
};
