// One dedicated std::thread per session: it enters the IPC namespace, then runs jobs in order.
// Never the libuv pool: setns() moves only the calling thread, and pool threads are shared and reused.
#pragma once

#include <napi.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "errno_error.h"
#include "namespace_target.h"

class NamespaceThread {
 public:
  // Builds a job's JS result on the main thread from the plain data the job produced.
  using ResultBuilder = std::function<Napi::Value(Napi::Env)>;
  // Runs on the session thread; throws ErrnoError on failure.
  using JobWork = std::function<ResultBuilder()>;
  // Runs on the main thread just before the job's promise settles; the flag says whether it succeeded.
  using SettleHook = std::function<void(Napi::Env, bool)>;

  // Main thread. Starts the thread; its first job enters `target`, then settles `opened` with onOpened's value.
  NamespaceThread(Napi::Env env, const NamespaceTarget& target, napi_deferred opened, ResultBuilder onOpened,
                  SettleHook afterOpen);
  // Main thread. Lets the thread finish the jobs queued so far, then joins it.
  ~NamespaceThread();
  NamespaceThread(const NamespaceThread&) = delete;
  NamespaceThread& operator=(const NamespaceThread&) = delete;

  // Main thread. Queues work; its result settles deferred. Rejects at once after Close() or a failed open.
  void Enqueue(Napi::Env env, JobWork work, napi_deferred deferred);
  // Main thread. The thread ends after the jobs queued so far; deferred resolves once it has been joined.
  void Close(Napi::Env env, napi_deferred deferred);
  // Main thread. Joins the thread once it has ended by itself (after a failed open).
  void JoinEnded();

 private:
  enum class JobEnd { kContinue, kStopAfter, kStopOnFailure };
  struct Job {
    JobWork work;
    napi_deferred deferred;
    JobEnd end;
    SettleHook hook;
  };
  struct Completion;
  // The thread-safe function's context: main-thread bookkeeping that outlives this object.
  struct DeliveryState;
  static void Settle(Napi::Env env, Napi::Function unused, DeliveryState* state, Completion* completion);
  using Delivery = Napi::TypedThreadSafeFunction<DeliveryState, Completion, &NamespaceThread::Settle>;

  void Push(Napi::Env env, Job job);
  void Run();
  // Main thread: lets the thread finish its queued jobs, then joins it.
  void StopAndJoin();
  // Node tears thread-safe functions down at exit before it collects objects: the thread must end first.
  static void StopAtEnvironmentExit(void* self);
  void Deliver(std::unique_ptr<Completion> completion);

  const NamespaceTarget& target_;
  napi_env env_;
  bool exitHookRegistered_ = false;  // main thread only
  Delivery delivery_;
  DeliveryState* deliveryState_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Job> jobs_;
  bool stopRequested_ = false;  // under mutex_
  bool ended_ = false;          // under mutex_: the thread takes no more jobs
  bool closing_ = false;        // main thread only
  // Shared with Close()'s settle hook, which joins it even if this object is gone by then.
  std::shared_ptr<std::thread> thread_;
};
