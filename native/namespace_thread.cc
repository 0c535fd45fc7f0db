#include "namespace_thread.h"

#include <pthread.h>
#include <signal.h>

// What one job hands back to the main thread.
struct NamespaceThread::Completion {
  napi_deferred deferred;
  ResultBuilder result;
  std::optional<ErrnoError> error;
  SettleHook hook;
};

struct NamespaceThread::DeliveryState {
  napi_threadsafe_function function = nullptr;
  // Jobs queued and not yet settled: the function keeps the event loop alive only while this is above 0.
  size_t pending = 0;
};

namespace {

// Visible in /proc/self/task/*/comm, so tests and operators can tell session threads apart.
const char kThreadName[] = "ipc-ckpt-ns";

void RejectNow(Napi::Env env, napi_deferred deferred, const ErrnoError& error) {
  napi_reject_deferred(env, deferred, error.ToJs(env).Value());
}

ErrnoError SessionClosed(const NamespaceTarget& target) {
  return ErrnoError::Project("E_INTERNAL", "the namespace session " + target.where() + " is closed");
}

}  // namespace

NamespaceThread::NamespaceThread(Napi::Env env, const NamespaceTarget& target, napi_deferred opened,
                                 ResultBuilder onOpened, SettleHook afterOpen)
    : target_(target), env_(env), deliveryState_(new DeliveryState()) {
  delivery_ = Delivery::New(env, "ipc-ckpt namespace session", 0, 1, deliveryState_,
                            [](Napi::Env, void*, DeliveryState* state) { delete state; });
  deliveryState_->function = static_cast<napi_threadsafe_function>(delivery_);
  deliveryState_->pending = 1;  // the open job; the function starts referenced
  const NamespaceTarget* joined = &target_;
  jobs_.push_back(Job{[joined, onOpened]() -> ResultBuilder {
                        joined->JoinOnThisThread();
                        return onOpened;
                      },
                      opened, JobEnd::kStopOnFailure, std::move(afterOpen)});
  try {
    thread_ = std::make_shared<std::thread>(&NamespaceThread::Run, this);
  } catch (...) {
    delivery_.Release();  // no thread will ever deliver: let the function go, or it would hold the event loop
    throw;
  }
  // Registered after the function's own hook, so it runs before it (hooks run last in, first out).
  if (napi_add_env_cleanup_hook(env, &NamespaceThread::StopAtEnvironmentExit, this) == napi_ok) {
    exitHookRegistered_ = true;
  }
}

NamespaceThread::~NamespaceThread() {
  StopAndJoin();
  if (exitHookRegistered_) napi_remove_env_cleanup_hook(env_, &NamespaceThread::StopAtEnvironmentExit, this);
}

void NamespaceThread::StopAtEnvironmentExit(void* self) {
  auto* thread = static_cast<NamespaceThread*>(self);
  thread->exitHookRegistered_ = false;  // Node drops a hook once it has run
  thread->StopAndJoin();
}

void NamespaceThread::StopAndJoin() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopRequested_ = true;
  }
  wake_.notify_one();
  if (thread_->joinable()) thread_->join();
}

void NamespaceThread::Enqueue(Napi::Env env, JobWork work, napi_deferred deferred) {
  if (closing_) {
    RejectNow(env, deferred, SessionClosed(target_));
    return;
  }
  Push(env, Job{std::move(work), deferred, JobEnd::kContinue, nullptr});
}

void NamespaceThread::Close(Napi::Env env, napi_deferred deferred) {
  if (closing_) {
    RejectNow(env, deferred, SessionClosed(target_));
    return;
  }
  closing_ = true;
  std::shared_ptr<std::thread> thread = thread_;
  SettleHook join = [thread](Napi::Env, bool) {
    if (thread->joinable()) thread->join();
  };
  Push(env, Job{[]() -> ResultBuilder { return [](Napi::Env env) { return env.Undefined(); }; }, deferred,
                JobEnd::kStopAfter, std::move(join)});
}

void NamespaceThread::JoinEnded() {
  closing_ = true;
  if (thread_->joinable()) thread_->join();
}

void NamespaceThread::Push(Napi::Env env, Job job) {
  const napi_deferred deferred = job.deferred;
  bool queued = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!ended_) {
      jobs_.push_back(std::move(job));
      queued = true;
    }
  }
  if (!queued) {
    RejectNow(env, deferred, SessionClosed(target_));
    return;
  }
  // The state lives until the thread releases the function, which cannot happen while this main-thread call runs.
  if (deliveryState_->pending++ == 0) delivery_.Ref(env);
  wake_.notify_one();
}

void NamespaceThread::Run() {
  pthread_setname_np(pthread_self(), kThreadName);
  // Process signals belong to Node's own threads, as with libuv's pool.
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);
  for (;;) {
    Job job;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [this] { return !jobs_.empty() || stopRequested_; });
      if (jobs_.empty()) break;
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    auto completion = std::make_unique<Completion>();
    completion->deferred = job.deferred;
    completion->hook = std::move(job.hook);
    try {
      completion->result = job.work();
    } catch (const ErrnoError& error) {
      completion->error = error;
    } catch (const std::exception& error) {
      completion->error = ErrnoError::Project("E_INTERNAL", std::string(error.what()) + " " + target_.where());
    }
    const bool failed = completion->error.has_value();
    Deliver(std::move(completion));
    if (job.end == JobEnd::kStopAfter || (job.end == JobEnd::kStopOnFailure && failed)) break;
  }
  std::deque<Job> abandoned;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ended_ = true;
    abandoned.swap(jobs_);
  }
  for (Job& job : abandoned) {
    auto completion = std::make_unique<Completion>();
    completion->deferred = job.deferred;
    completion->error = SessionClosed(target_);
    Deliver(std::move(completion));
  }
  delivery_.Release();
}

void NamespaceThread::Deliver(std::unique_ptr<Completion> completion) {
  // Fails only while the environment shuts down; then nobody is left to settle the promise.
  if (delivery_.NonBlockingCall(completion.get()) == napi_ok) completion.release();
}

void NamespaceThread::Settle(Napi::Env env, Napi::Function, DeliveryState* state, Completion* raw) {
  std::unique_ptr<Completion> completion(raw);
  if (env == nullptr) return;  // the function is being torn down with the environment
  if (--state->pending == 0) napi_unref_threadsafe_function(env, state->function);
  Napi::HandleScope scope(env);
  std::optional<Napi::Value> value;
  std::optional<Napi::Error> jsError;
  if (completion->error) {
    jsError = completion->error->ToJs(env);
  } else {
    try {
      value = completion->result(env);
    } catch (const Napi::Error& error) {
      jsError = error;
    }
  }
  if (completion->hook) completion->hook(env, !jsError.has_value());
  if (jsError) {
    napi_reject_deferred(env, completion->deferred, jsError->Value());
  } else {
    napi_resolve_deferred(env, completion->deferred, *value);
  }
}
