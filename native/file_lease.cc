#include "file_lease.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/vfs.h>

#include <string>

#include "errno_error.h"

namespace {

int FdArgument(const Napi::CallbackInfo& info, const char* usage) {
  if (!info[0].IsNumber()) throw ArgumentError(info.Env(), usage);
  return info[0].As<Napi::Number>().Int32Value();
}

}  // namespace

Napi::Value TakeReadLease(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int fd = FdArgument(info, "takeReadLease(fd)");
  if (fcntl(fd, F_SETLEASE, F_RDLCK) != 0) {
    if (errno == EAGAIN || errno == EACCES || errno == EINVAL) return Napi::Boolean::New(env, false);
    throw ErrnoError::FromErrno(errno, "fcntl", "taking a read lease on fd " + std::to_string(fd)).ToJs(env);
  }
  // F_SETLEASE made us the fd's owner: with no owner, a lease break sends no signal at all.
  if (fcntl(fd, F_SETOWN, 0) != 0) {
    const int error = errno;
    fcntl(fd, F_SETLEASE, F_UNLCK);
    throw ErrnoError::FromErrno(error, "fcntl", "clearing the owner of leased fd " + std::to_string(fd)).ToJs(env);
  }
  return Napi::Boolean::New(env, true);
}

Napi::Value ReadLeaseHeld(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int fd = FdArgument(info, "readLeaseHeld(fd)");
  const int lease = fcntl(fd, F_GETLEASE);
  if (lease < 0) throw ErrnoError::FromErrno(errno, "fcntl", "reading the lease of fd " + std::to_string(fd)).ToJs(env);
  return Napi::Boolean::New(env, lease == F_RDLCK);
}

Napi::Value FileSystemMagic(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int fd = FdArgument(info, "fileSystemMagic(fd)");
  struct statfs fs;
  if (fstatfs(fd, &fs) != 0) throw ErrnoError::FromErrno(errno, "fstatfs", "fd " + std::to_string(fd)).ToJs(env);
  return Napi::Number::New(env, static_cast<double>(static_cast<unsigned long>(fs.f_type)));
}
