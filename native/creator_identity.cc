#include "creator_identity.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "errno_error.h"

namespace {

// Raw system calls: glibc's setresuid()/setresgid() broadcast the change to every thread of the process.
long SetThreadEffectiveUid(uid_t uid) { return syscall(SYS_setresuid, -1, uid, -1); }
long SetThreadEffectiveGid(gid_t gid) { return syscall(SYS_setresgid, -1, gid, -1); }

}  // namespace

CreatorIdentity::CreatorIdentity(uid_t uid, gid_t gid, const std::string& where, const std::string& role)
    : originalUid_(geteuid()), originalGid_(getegid()) {
  const std::string ids = "uid " + std::to_string(uid) + " gid " + std::to_string(gid);
  if (SetThreadEffectiveGid(gid) != 0) {
    throw ErrnoError::FromErrno(errno, "setresgid", "switch the session thread to " + role + " " + ids + " " + where);
  }
  if (SetThreadEffectiveUid(uid) != 0) {
    const int errnum = errno;
    SetThreadEffectiveGid(originalGid_);
    throw ErrnoError::FromErrno(errnum, "setresuid", "switch the session thread to " + role + " " + ids + " " + where);
  }
  switched_ = true;
}

CreatorIdentity::~CreatorIdentity() {
  if (!switched_) return;
  try {
    Restore();
  } catch (const ErrnoError& error) {
    fprintf(stderr, "ipc-ckpt: %s\n", error.what());
    abort();
  }
}

void CreatorIdentity::Restore() {
  if (!switched_) return;
  // uid first: with euid back to root the effective capabilities return, so the gid may change too.
  if (SetThreadEffectiveUid(originalUid_) != 0) {
    throw ErrnoError::FromErrno(errno, "setresuid", "restore the session thread's euid " + std::to_string(originalUid_));
  }
  if (SetThreadEffectiveGid(originalGid_) != 0) {
    throw ErrnoError::FromErrno(errno, "setresgid", "restore the session thread's egid " + std::to_string(originalGid_));
  }
  switched_ = false;
}
