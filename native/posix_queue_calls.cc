#include "posix_queue_calls.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <mqueue.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "creator_identity.h"
#include "errno_error.h"

namespace {

const char kLimitDirectory[] = "/proc/sys/fs/mqueue/";
// The copy child's name in ps and /proc/PID/comm (at most 15 characters): tests wait for it by this name.
const char kCopyChildName[] = "ipc-ckpt-mqcopy";

// Shared between the session thread and the copy child (a MAP_SHARED memfd): where the copy is.
// Only the child writes it while it runs; the parent reads it after waitpid, and resumes from it
// if the child was killed.
struct CopyProgress {
  enum Phase : uint32_t { kTaking = 0, kPuttingBack = 1, kDone = 2 };
  uint32_t phase;
  int32_t receiveErrno;
  int32_t sendErrno;
  uint32_t refusedFull;
  uint64_t taken;     // messages received and recorded in the buffer
  uint64_t returned;  // of those, sent back
  uint64_t bytes;     // packed bytes recorded
  uint64_t putBackAt;  // packed offset of the next message to send back
};

constexpr size_t kProgressBytes = 64;
static_assert(sizeof(CopyProgress) <= kProgressBytes, "the copy progress fits its slot");

void CloseQuietly(int fd) {
  if (fd >= 0) close(fd);
}

// The take-and-put-back, resumable from `progress`: first every message in delivery order into
// `data`, then every one of them back in the same order. Only raw system calls and plain memory
// access: it runs in a child forked from a multithreaded process (async-signal-safe calls only).
void RunCopy(int readFd, int writeFd, int64_t maxmsg, int64_t msgsize, CopyProgress* progress, uint8_t* data,
             size_t capacity) {
  while (progress->phase == CopyProgress::kTaking) {
    const size_t room = PosixQueueCalls::kPackedHeaderBytes + static_cast<size_t>(msgsize);
    if (progress->taken >= static_cast<uint64_t>(maxmsg) || progress->bytes + room > capacity) {
      progress->phase = CopyProgress::kPuttingBack;
      break;
    }
    uint8_t* slot = data + progress->bytes;
    unsigned int priority = 0;
    const long received = syscall(SYS_mq_timedreceive, readFd, slot + PosixQueueCalls::kPackedHeaderBytes,
                                  static_cast<size_t>(msgsize), &priority, nullptr);
    if (received < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) progress->receiveErrno = errno;
      progress->phase = CopyProgress::kPuttingBack;
      break;
    }
    const uint32_t header[2] = {priority, static_cast<uint32_t>(received)};
    memcpy(slot, header, sizeof(header));
    progress->bytes += PosixQueueCalls::kPackedHeaderBytes + static_cast<size_t>(received);
    progress->taken++;
  }
  while (progress->phase == CopyProgress::kPuttingBack) {
    if (progress->returned >= progress->taken) {
      progress->phase = CopyProgress::kDone;
      break;
    }
    const uint8_t* slot = data + progress->putBackAt;
    uint32_t header[2];
    memcpy(header, slot, sizeof(header));
    // A blocking send: were the queue ever full again, it waits for room rather than lose the message.
    if (syscall(SYS_mq_timedsend, writeFd, slot + PosixQueueCalls::kPackedHeaderBytes, static_cast<size_t>(header[1]),
                header[0], nullptr) != 0) {
      if (errno == EINTR) continue;
      progress->sendErrno = errno;
      return;
    }
    progress->putBackAt += PosixQueueCalls::kPackedHeaderBytes + header[1];
    progress->returned++;
  }
}

// The forked child: its own session, deaf to the signals a terminal or a kill of our group sends, and
// holding no descriptor but the queue's, so it outlives ipc-ckpt and lets no pipe hang on it.
[[noreturn]] void CopyChild(int readFd, int writeFd, int64_t maxmsg, int64_t msgsize, CopyProgress* progress,
                            uint8_t* data, size_t capacity) {
  prctl(PR_SET_NAME, kCopyChildName, 0, 0, 0);
  setsid();
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  for (const int signal : {SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGQUIT, SIGUSR1, SIGUSR2}) sigaction(signal, &ignore, nullptr);
  const int low = readFd < writeFd ? readFd : writeFd;
  const int high = readFd < writeFd ? writeFd : readFd;
  if (low > 0) syscall(SYS_close_range, 0U, static_cast<unsigned>(low - 1), 0U);
  if (high > low + 1) syscall(SYS_close_range, static_cast<unsigned>(low + 1), static_cast<unsigned>(high - 1), 0U);
  syscall(SYS_close_range, static_cast<unsigned>(high + 1), ~0U, 0U);
  // The parent checked before fork; a queue that filled since would let a blocked sender in.
  struct mq_attr attr {};
  if (syscall(SYS_mq_getsetattr, readFd, nullptr, &attr) != 0 || attr.mq_curmsgs >= attr.mq_maxmsg) {
    progress->refusedFull = 1;
    progress->phase = CopyProgress::kDone;
    _exit(0);
  }
  RunCopy(readFd, writeFd, maxmsg, msgsize, progress, data, capacity);
  _exit(progress->phase == CopyProgress::kDone ? 0 : 1);
}

// The session thread, and only it, as a queue's owner for one mq_open: real and effective ids both, since
// the kernel charges a new queue to the real uid's RLIMIT_MSGQUEUE count (cred->ucounts). The saved ids
// stay root's, so the switch back is always allowed. Raw calls: glibc's would change every thread.
class QueueOwnerIdentity {
 public:
  QueueOwnerIdentity(uid_t uid, gid_t gid, const std::string& where) {
    getresuid(&uid_[0], &uid_[1], &uid_[2]);
    getresgid(&gid_[0], &gid_[1], &gid_[2]);
    const std::string ids = "uid " + std::to_string(uid) + " gid " + std::to_string(gid);
    if (syscall(SYS_setresgid, gid, gid, -1) != 0) {
      throw ErrnoError::FromErrno(errno, "setresgid", "switch the session thread to queue owner " + ids + " " + where);
    }
    if (syscall(SYS_setresuid, uid, uid, -1) != 0) {
      const int errnum = errno;
      syscall(SYS_setresgid, gid_[0], gid_[1], -1);
      throw ErrnoError::FromErrno(errnum, "setresuid", "switch the session thread to queue owner " + ids + " " + where);
    }
  }
  // A thread left with foreign ids must not go on.
  ~QueueOwnerIdentity() {
    if (syscall(SYS_setresuid, uid_[0], uid_[1], -1) != 0 || syscall(SYS_setresgid, gid_[0], gid_[1], -1) != 0) {
      fprintf(stderr, "ipc-ckpt: cannot restore the session thread's ids: %s\n", strerror(errno));
      abort();
    }
  }
  QueueOwnerIdentity(const QueueOwnerIdentity&) = delete;
  QueueOwnerIdentity& operator=(const QueueOwnerIdentity&) = delete;

 private:
  uid_t uid_[3]{};
  gid_t gid_[3]{};
};

std::string Octal(uint32_t value) {
  char text[16];
  snprintf(text, sizeof(text), "0%o", value);
  return text;
}

}  // namespace

// Closes a descriptor at the end of a scope.
class ScopedFd {
 public:
  explicit ScopedFd(int fd) : fd_(fd) {}
  ~ScopedFd() { CloseQuietly(fd_); }
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

std::string PosixQueueCalls::QueueLabel(const std::string& name) const {
  return "POSIX queue '/" + name + "' " + target_.where();
}

int PosixQueueCalls::OpenMount() const {
  const int context = fsopen("mqueue", FSOPEN_CLOEXEC);
  if (context < 0) throw ErrnoError::FromErrno(errno, "fsopen", "open an mqueue filesystem context " + target_.where());
  if (fsconfig(context, FSCONFIG_CMD_CREATE, nullptr, nullptr, 0) != 0) {
    const int errnum = errno;
    close(context);
    throw ErrnoError::FromErrno(errnum, "fsconfig", "create the mqueue filesystem " + target_.where());
  }
  const int mount = fsmount(context, FSMOUNT_CLOEXEC, MOUNT_ATTR_NOEXEC | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
  const int errnum = errno;
  close(context);
  if (mount < 0) throw ErrnoError::FromErrno(errnum, "fsmount", "mount the mqueue filesystem (detached) " + target_.where());
  return mount;
}

int PosixQueueCalls::OpenQueueFile(int mount, const std::string& name, int flags) const {
  const int fd = openat(mount, name.c_str(), flags | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) throw ErrnoError::FromErrno(errno, "openat", "open " + QueueLabel(name));
  return fd;
}

PosixQueueStat PosixQueueCalls::StatOpenQueue(const std::string& name, int fd) const {
  PosixQueueStat stat{};
  stat.name = name;
  struct stat inode {};
  if (fstat(fd, &inode) != 0) throw ErrnoError::FromErrno(errno, "fstat", "stat " + QueueLabel(name));
  stat.mode = inode.st_mode & 07777;
  stat.uid = inode.st_uid;
  stat.gid = inode.st_gid;
  struct mq_attr attr {};
  if (mq_getattr(fd, &attr) != 0) throw ErrnoError::FromErrno(errno, "mq_getattr", "mq_getattr of " + QueueLabel(name));
  stat.maxmsg = attr.mq_maxmsg;
  stat.msgsize = attr.mq_msgsize;
  stat.curmsgs = attr.mq_curmsgs;
  char line[256];
  const ssize_t length = pread(fd, line, sizeof(line) - 1, 0);
  if (length < 0) throw ErrnoError::FromErrno(errno, "read", "read the status of " + QueueLabel(name));
  line[length] = '\0';
  unsigned long long qsize = 0;
  if (sscanf(line, "QSIZE:%llu NOTIFY:%d SIGNO:%d NOTIFY_PID:%d", &qsize, &stat.notify, &stat.notifySigno,
             &stat.notifyPid) != 4) {
    throw ErrnoError::Project("E_INTERNAL", "the status of " + QueueLabel(name) + " is not 'QSIZE NOTIFY SIGNO NOTIFY_PID': '" +
                                                std::string(line) + "'");
  }
  stat.qsize = qsize;
  return stat;
}

std::vector<PosixQueueStat> PosixQueueCalls::ListQueues() const {
  const ScopedFd mount(OpenMount());
  const int directoryFd = openat(mount.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (directoryFd < 0) throw ErrnoError::FromErrno(errno, "openat", "open the mqueue filesystem " + target_.where());
  DIR* directory = fdopendir(directoryFd);
  if (directory == nullptr) {
    const int errnum = errno;
    close(directoryFd);
    throw ErrnoError::FromErrno(errnum, "fdopendir", "list the mqueue filesystem " + target_.where());
  }
  std::vector<std::string> names;
  for (;;) {
    errno = 0;
    const struct dirent* entry = readdir(directory);
    if (entry == nullptr) break;
    if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0) continue;
    names.emplace_back(entry->d_name);
  }
  const int readErrno = errno;
  closedir(directory);
  if (readErrno != 0) throw ErrnoError::FromErrno(readErrno, "readdir", "list the mqueue filesystem " + target_.where());
  std::sort(names.begin(), names.end());
  std::vector<PosixQueueStat> queues;
  for (const std::string& name : names) {
    try {
      const ScopedFd fd(OpenQueueFile(mount.get(), name, O_RDONLY | O_NONBLOCK));
      queues.push_back(StatOpenQueue(name, fd.get()));
    } catch (const ErrnoError& error) {
      if (error.errnum() != ENOENT) throw;  // removed since the listing
    }
  }
  return queues;
}

PosixQueueStat PosixQueueCalls::StatQueue(const std::string& name) const {
  const ScopedFd mount(OpenMount());
  const ScopedFd fd(OpenQueueFile(mount.get(), name, O_RDONLY | O_NONBLOCK));
  return StatOpenQueue(name, fd.get());
}

std::unique_ptr<TakenMessages> PosixQueueCalls::TakeAndPutBack(const std::string& name) const {
  auto taken = std::make_unique<TakenMessages>();
  const ScopedFd mount(OpenMount());
  const int readFd = OpenQueueFile(mount.get(), name, O_RDONLY | O_NONBLOCK);
  int writeFd = -1;
  int memoryFd = -1;
  void* mapping = MAP_FAILED;
  size_t mappingBytes = 0;
  try {
    writeFd = OpenQueueFile(mount.get(), name, O_WRONLY);
    taken->before = StatOpenQueue(name, readFd);
    const PosixQueueStat& before = taken->before;
    if (before.notifyPid != 0) {
      throw ErrnoError::Project("E_MQ_NOTIFY", QueueLabel(name) + " has an mq_notify registration (by pid " +
                                                   std::to_string(before.notifyPid) +
                                                   "): putting its messages back would fire it; nothing was taken");
    }
    if (before.curmsgs >= before.maxmsg) {
      throw ErrnoError::Project("E_MQ_FULL", QueueLabel(name) + " is full (" + std::to_string(before.curmsgs) + " of " +
                                                 std::to_string(before.maxmsg) +
                                                 " messages): taking one would let a blocked sender's message in; nothing was taken");
    }
    if (before.curmsgs > 0) {
      // Room for maxmsg messages of the largest size: the child never needs more, whatever arrives.
      const size_t capacity = static_cast<size_t>(before.maxmsg) * (kPackedHeaderBytes + static_cast<size_t>(before.msgsize));
      mappingBytes = kProgressBytes + capacity;
      memoryFd = memfd_create("ipc-ckpt-mq-copy", MFD_CLOEXEC);
      if (memoryFd < 0) throw ErrnoError::FromErrno(errno, "memfd_create", "make the copy buffer of " + QueueLabel(name));
      if (ftruncate(memoryFd, static_cast<off_t>(mappingBytes)) != 0) {
        throw ErrnoError::FromErrno(errno, "ftruncate", "size the copy buffer of " + QueueLabel(name));
      }
      mapping = mmap(nullptr, mappingBytes, PROT_READ | PROT_WRITE, MAP_SHARED, memoryFd, 0);
      if (mapping == MAP_FAILED) throw ErrnoError::FromErrno(errno, "mmap", "map the copy buffer of " + QueueLabel(name));
      auto* progress = static_cast<CopyProgress*>(mapping);
      uint8_t* data = static_cast<uint8_t*>(mapping) + kProgressBytes;
      const pid_t child = fork();
      if (child < 0) throw ErrnoError::FromErrno(errno, "fork", "start the copy child of " + QueueLabel(name));
      if (child == 0) CopyChild(readFd, writeFd, before.maxmsg, before.msgsize, progress, data, capacity);
      int status = 0;
      while (waitpid(child, &status, 0) < 0) {
        if (errno != EINTR) throw ErrnoError::FromErrno(errno, "waitpid", "wait for the copy child of " + QueueLabel(name));
      }
      // A child killed midway left the copy in `progress`: finish it here, the same way.
      if (progress->phase != CopyProgress::kDone && progress->sendErrno == 0) {
        RunCopy(readFd, writeFd, before.maxmsg, before.msgsize, progress, data, capacity);
      }
      if (progress->refusedFull != 0) {
        throw ErrnoError::Project("E_MQ_FULL", QueueLabel(name) + " became full before its copy began; nothing was taken");
      }
      if (progress->sendErrno != 0) {
        throw ErrnoError::FromErrno(progress->sendErrno, "mq_timedsend",
                                    "put back message " + std::to_string(progress->returned) + " of " +
                                        std::to_string(progress->taken) + " taken from " + QueueLabel(name) +
                                        ": the rest are lost from the queue");
      }
      if (progress->receiveErrno != 0) {
        throw ErrnoError::FromErrno(progress->receiveErrno, "mq_timedreceive",
                                    "take message " + std::to_string(progress->taken) + " of " + QueueLabel(name) +
                                        " (the " + std::to_string(progress->taken) + " taken were put back)");
      }
      taken->count = static_cast<uint32_t>(progress->taken);
      taken->packed.assign(data, data + progress->bytes);
    }
    taken->after = StatOpenQueue(name, readFd);
  } catch (...) {
    if (mapping != MAP_FAILED) munmap(mapping, mappingBytes);
    CloseQuietly(memoryFd);
    CloseQuietly(writeFd);
    close(readFd);
    throw;
  }
  if (mapping != MAP_FAILED) munmap(mapping, mappingBytes);
  CloseQuietly(memoryFd);
  CloseQuietly(writeFd);
  close(readFd);
  return taken;
}

void PosixQueueCalls::CreateQueue(const CreatePosixQueueRequest& request) const {
  const std::string path = "/" + request.name;
  const std::string doing = "create " + QueueLabel(request.name) + " (maxmsg " + std::to_string(request.maxmsg) +
                            ", msgsize " + std::to_string(request.msgsize) + ", mode " + Octal(request.mode) + ") as uid " +
                            std::to_string(request.uid) + " gid " + std::to_string(request.gid);
  struct mq_attr attr {};
  attr.mq_maxmsg = request.maxmsg;
  attr.mq_msgsize = request.msgsize;
  mqd_t queue;
  int openErrno = 0;
  {
    QueueOwnerIdentity owner(request.uid, request.gid, target_.where());
    queue = mq_open(path.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, static_cast<mode_t>(0600), &attr);
    openErrno = errno;
  }
  if (queue == static_cast<mqd_t>(-1)) {
    ErrnoError error = ErrnoError::FromErrno(openErrno, "mq_open", doing);
    std::string hint;
    if (openErrno == EINVAL) hint = " (maxmsg and msgsize must fit the namespace's msg_max and msgsize_max)";
    if (openErrno == EMFILE) hint = " (the owner's RLIMIT_MSGQUEUE would be exceeded)";
    if (openErrno == ENOSPC) hint = " (the namespace's queues_max is reached)";
    throw ErrnoError(error.code(), openErrno, error.syscall(), error.what() + hint);
  }
  // The owner again (a setgid rule may have chosen another group), then the exact mode whatever the
  // umask: in this order, since a chown clears the set-id bits.
  const bool owned = fchown(queue, request.uid, request.gid) == 0;
  if (!owned || fchmod(queue, request.mode & 07777) != 0) {
    const int errnum = errno;
    close(queue);
    mq_unlink(path.c_str());
    throw ErrnoError::FromErrno(errnum, owned ? "fchmod" : "fchown", doing + " (set its owner and mode; the queue was removed again)");
  }
  close(queue);
}

std::string PosixQueueCalls::ValidatePacked(const uint8_t* packed, size_t length, uint32_t count) {
  size_t at = 0;
  for (uint32_t index = 0; index < count; index++) {
    if (length - at < kPackedHeaderBytes) return "message " + std::to_string(index) + " has no complete header";
    uint32_t header[2];
    memcpy(header, packed + at, sizeof(header));
    at += kPackedHeaderBytes;
    if (length - at < header[1]) return "message " + std::to_string(index) + " claims " + std::to_string(header[1]) + " bytes";
    at += header[1];
  }
  if (at != length) return std::to_string(length - at) + " bytes left after " + std::to_string(count) + " messages";
  return "";
}

uint32_t PosixQueueCalls::SendMessages(const std::string& name, const uint8_t* packed, uint32_t count) const {
  const int fd = [&] {
    const ScopedFd mount(OpenMount());
    return OpenQueueFile(mount.get(), name, O_WRONLY | O_NONBLOCK);
  }();
  const uint8_t* message = packed;
  for (uint32_t sent = 0; sent < count; sent++) {
    uint32_t header[2];
    memcpy(header, message, sizeof(header));
    if (mq_send(fd, reinterpret_cast<const char*>(message + kPackedHeaderBytes), header[1], header[0]) != 0) {
      const int errnum = errno;
      close(fd);
      ErrnoError error = ErrnoError::FromErrno(errnum, "mq_send",
                                               "mq_send of message " + std::to_string(sent) + " (priority " +
                                                   std::to_string(header[0]) + ", " + std::to_string(header[1]) +
                                                   " bytes) to " + QueueLabel(name) + ", after " + std::to_string(sent) + " sent");
      error.WithNumber("sent", sent);
      throw error;
    }
    message += kPackedHeaderBytes + header[1];
  }
  close(fd);
  return count;
}

void PosixQueueCalls::RemoveQueue(const std::string& name) const {
  if (mq_unlink(("/" + name).c_str()) != 0) throw ErrnoError::FromErrno(errno, "mq_unlink", "remove " + QueueLabel(name));
}

bool PosixQueueCalls::IsLimitName(const std::string& name) {
  return name == "queues_max" || name == "msg_max" || name == "msgsize_max" || name == "msg_default" ||
         name == "msgsize_default";
}

int64_t PosixQueueCalls::ReadLimit(const std::string& name) const {
  return ReadProcSysNumber(kLimitDirectory + name, target_.where());
}

MqueueLimits PosixQueueCalls::ReadLimits() const {
  return {ReadLimit("queues_max"), ReadLimit("msg_max"), ReadLimit("msgsize_max"), ReadLimit("msg_default"),
          ReadLimit("msgsize_default")};
}

void PosixQueueCalls::WriteLimit(const std::string& name, int64_t value, const std::optional<SysctlWriter>& as) const {
  // Like the msg sysctls: only the namespace's own root may write them.
  WriteProcSysNumber(kLimitDirectory + name, value, as, target_.where());
}
