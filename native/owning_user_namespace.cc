#include "owning_user_namespace.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/nsfs.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>

#include "errno_error.h"

namespace {

class Descriptor {
 public:
  explicit Descriptor(int fd = -1) : fd_(fd) {}
  ~Descriptor() { Reset(); }
  Descriptor(const Descriptor&) = delete;
  Descriptor& operator=(const Descriptor&) = delete;
  int get() const { return fd_; }
  void Reset(int fd = -1) {
    if (fd_ >= 0) close(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};

bool SameFile(const struct stat& a, const struct stat& b) { return a.st_dev == b.st_dev && a.st_ino == b.st_ino; }

// The whole of a small /proc file; false when it cannot be read (the process may be gone).
bool ReadSmallFile(const std::string& path, std::string& text) {
  Descriptor file(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (file.get() < 0) return false;
  text.clear();
  char buffer[4096];
  for (;;) {
    const ssize_t length = read(file.get(), buffer, sizeof(buffer));
    if (length < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (length == 0) return true;
    text.append(buffer, static_cast<size_t>(length));
  }
}

bool ReadMaps(pid_t pid, OwningUserNamespace& owner) {
  const std::string base = "/proc/" + std::to_string(pid) + "/";
  return ReadSmallFile(base + "uid_map", owner.uidMap) && ReadSmallFile(base + "gid_map", owner.gidMap);
}

// Maps of a process living in the user namespace; the link is checked again after reading (pids are reused).
bool ReadMapsOfAMember(const struct stat& userNamespace, OwningUserNamespace& owner) {
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return false;
  bool found = false;
  while (!found) {
    const struct dirent* entry = readdir(proc);
    if (entry == nullptr) break;
    if (!isdigit(static_cast<unsigned char>(entry->d_name[0]))) continue;
    const std::string link = std::string("/proc/") + entry->d_name + "/ns/user";
    struct stat member {};
    if (stat(link.c_str(), &member) != 0 || !SameFile(member, userNamespace)) continue;
    const pid_t pid = static_cast<pid_t>(atoi(entry->d_name));
    if (!ReadMaps(pid, owner)) continue;
    struct stat again {};
    if (stat(link.c_str(), &again) != 0 || !SameFile(again, userNamespace)) continue;
    owner.mapSource = "process";
    owner.mapPid = pid;
    found = true;
  }
  closedir(proc);
  return found;
}

// No process lives in the user namespace: a forked child (single-threaded, so setns(CLONE_NEWUSER) is
// allowed) joins it and waits while this thread reads its maps. The child makes system calls only.
void ReadMapsThroughChild(int userNamespaceFd, const NamespaceTarget& target, OwningUserNamespace& owner) {
  const std::string doing = "read the uid/gid maps of the user namespace that owns the IPC namespace " + target.where();
  int ready[2];
  int hold[2];
  if (pipe2(ready, O_CLOEXEC) != 0) throw ErrnoError::FromErrno(errno, "pipe2", doing);
  Descriptor readyRead(ready[0]);
  Descriptor readyWrite(ready[1]);
  if (pipe2(hold, O_CLOEXEC) != 0) throw ErrnoError::FromErrno(errno, "pipe2", doing);
  Descriptor holdRead(hold[0]);
  Descriptor holdWrite(hold[1]);
  const pid_t child = fork();
  if (child < 0) throw ErrnoError::FromErrno(errno, "fork", doing);
  if (child == 0) {
    // Only the ends this child uses: the hold pipe must reach EOF once the parent's end closes.
    close(ready[0]);
    close(hold[1]);
    const unsigned char status = setns(userNamespaceFd, CLONE_NEWUSER) == 0 ? 0 : static_cast<unsigned char>(errno);
    if (write(ready[1], &status, 1) != 1) _exit(1);
    char byte;
    // Until this thread closes its end (or the whole process dies).
    while (read(hold[0], &byte, 1) < 0 && errno == EINTR) {
    }
    _exit(0);
  }
  readyWrite.Reset();
  holdRead.Reset();
  unsigned char status = 0;
  ssize_t got;
  do {
    got = read(readyRead.get(), &status, 1);
  } while (got < 0 && errno == EINTR);
  const bool joined = got == 1 && status == 0;
  const bool mapsRead = joined && ReadMaps(child, owner);
  const int readErrno = errno;
  holdWrite.Reset();
  int waitStatus = 0;
  while (waitpid(child, &waitStatus, 0) < 0 && errno == EINTR) {
  }
  if (got != 1) throw ErrnoError::Project("E_INTERNAL", doing + ": the helper child ended before it joined");
  if (!joined) throw ErrnoError::FromErrno(status, "setns", doing + " (a helper child joining it)");
  if (!mapsRead) throw ErrnoError::FromErrno(readErrno, "open", doing + " (/proc/" + std::to_string(child) + "/uid_map)");
  owner.mapSource = "child";
  owner.mapPid = child;
}

}  // namespace

OwningUserNamespace ReadOwningUserNamespace(const NamespaceTarget& target) {
  const std::string doing = "find the user namespace that owns the IPC namespace " + target.where();
  // The session thread has joined the target: its own IPC namespace link is the target.
  Descriptor ipc(open("/proc/thread-self/ns/ipc", O_RDONLY | O_CLOEXEC));
  if (ipc.get() < 0) throw ErrnoError::FromErrno(errno, "open", doing);
  Descriptor user(ioctl(ipc.get(), NS_GET_USERNS));
  if (user.get() < 0) {
    const int errnum = errno;
    const std::string why = errnum == EPERM ? " (it lies outside ipc-ckpt's own user namespace)" : "";
    throw ErrnoError::FromErrno(errnum, "ioctl", doing + " (NS_GET_USERNS)" + why);
  }
  struct stat userNamespace {};
  if (fstat(user.get(), &userNamespace) != 0) throw ErrnoError::FromErrno(errno, "fstat", doing);
  struct stat own {};
  if (stat("/proc/self/ns/user", &own) != 0) throw ErrnoError::FromErrno(errno, "stat", doing + " (/proc/self/ns/user)");
  OwningUserNamespace owner;
  owner.device = userNamespace.st_dev;
  owner.inode = userNamespace.st_ino;
  if (SameFile(userNamespace, own)) {
    owner.callerOwn = true;
    owner.mapSource = "own";
    return owner;
  }
  if (!ReadMapsOfAMember(userNamespace, owner)) ReadMapsThroughChild(user.get(), target, owner);
  return owner;
}
