#include "namespace_target.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <linux/nsfs.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "errno_error.h"

namespace {

// Closes the namespace file on every path out of JoinOnThisThread.
class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  ~FileDescriptor() {
    if (fd_ >= 0) close(fd_);
  }
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

std::string NamespaceTypeName(int type) {
  switch (type) {
    case CLONE_NEWIPC: return "an IPC";
    case CLONE_NEWNET: return "a net";
    case CLONE_NEWUTS: return "a uts";
    case CLONE_NEWNS: return "a mount";
    case CLONE_NEWPID: return "a pid";
    case CLONE_NEWUSER: return "a user";
    case CLONE_NEWCGROUP: return "a cgroup";
    case CLONE_NEWTIME: return "a time";
    default: return "an unknown (type " + std::to_string(type) + ")";
  }
}

}  // namespace

NamespaceTarget::NamespaceTarget(std::string path)
    : path_(std::move(path)), where_(path_.empty() ? "in the caller's IPC namespace" : "in " + path_) {}

void NamespaceTarget::JoinOnThisThread() const {
  if (path_.empty()) return;
  // O_NONBLOCK: a FIFO given by mistake must fail the type check, not hang the open.
  FileDescriptor file(open(path_.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (file.get() < 0) {
    throw ErrnoError::FromErrno(errno, "open", "cannot open the IPC namespace file " + path_);
  }
  struct statfs filesystem {};
  if (fstatfs(file.get(), &filesystem) != 0) {
    throw ErrnoError::FromErrno(errno, "fstatfs", "cannot inspect the IPC namespace file " + path_);
  }
  if (filesystem.f_type != NSFS_MAGIC) {
    throw ErrnoError::Project("E_TARGET", path_ + " is not a namespace file (expected /proc/PID/ns/ipc or a bind mount of one)");
  }
  const int type = ioctl(file.get(), NS_GET_NSTYPE);
  if (type < 0) {
    const int errnum = errno;
    throw ErrnoError::Project("E_TARGET", path_ + " is not a namespace file (ioctl NS_GET_NSTYPE: " + strerror(errnum) + ")",
                              errnum, "ioctl");
  }
  if (type != CLONE_NEWIPC) {
    throw ErrnoError::Project("E_TARGET", path_ + " is " + NamespaceTypeName(type) + " namespace, not an IPC namespace");
  }
  if (setns(file.get(), CLONE_NEWIPC) != 0) {
    throw ErrnoError::FromErrno(errno, "setns", "cannot enter the IPC namespace " + path_);
  }
}
