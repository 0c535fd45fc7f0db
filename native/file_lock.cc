#include "file_lock.h"

#include <errno.h>
#include <sys/file.h>

#include <string>

#include "errno_error.h"

Napi::Value LockFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber() || !info[1].IsString()) {
    throw ArgumentError(env, "lockFile(fd, 'shared' | 'exclusive' | 'unlock')");
  }
  const int fd = info[0].As<Napi::Number>().Int32Value();
  const std::string mode = info[1].As<Napi::String>().Utf8Value();
  const int operation = mode == "shared" ? LOCK_SH : mode == "exclusive" ? LOCK_EX : LOCK_UN;
  if (flock(fd, operation | LOCK_NB) == 0) return Napi::Boolean::New(env, true);
  if (errno == EWOULDBLOCK) return Napi::Boolean::New(env, false);
  throw ErrnoError::FromErrno(errno, "flock", "locking fd " + std::to_string(fd)).ToJs(env);
}
