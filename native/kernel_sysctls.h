// The msg sysctls under /proc/sys/kernel, which show the IPC namespace of the calling thread.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "namespace_target.h"

// Every limit the v16 IPC_NS record holds: the msg limits plus the shm and sem ones, as read.
struct IpcSysctls {
  int64_t msgmax;
  int64_t msgmnb;
  int64_t msgmni;
  uint64_t shmmax;
  uint64_t shmall;
  int64_t shmmni;
  // /proc/sys/kernel/sem: SEMMSL SEMMNS SEMOPM SEMMNI.
  int64_t sem[4];
};

// The effective ids a write is made with: a user-namespaced IPC namespace lets only its own root
// (the host uid its user namespace maps 0 to) write msgmax, msgmnb and msgmni.
struct SysctlWriter {
  uid_t uid;
  gid_t gid;
};

// A /proc/sys file of the calling thread's IPC namespace that holds one number (the msg sysctls, the
// mqueue limits). `where` ends error messages. Throws ErrnoError.
int64_t ReadProcSysNumber(const std::string& path, const std::string& where);
// Writes value with `as` as the thread's effective ids for the open and the write (the kernel checks both).
void WriteProcSysNumber(const std::string& path, int64_t value, const std::optional<SysctlWriter>& as,
                        const std::string& where);

// One sysctl file kept open for many writes (msg_next_id before every msgget of a batch).
class SysctlFile {
 public:
  SysctlFile(const std::string& path, const std::string& where);
  ~SysctlFile();
  SysctlFile(const SysctlFile&) = delete;
  SysctlFile& operator=(const SysctlFile&) = delete;
  // Writes value at offset 0 (a sysctl takes each write whole); throws ErrnoError.
  void Write(int64_t value) const;

 private:
  std::string path_;
  std::string where_;
  int fd_;
};

class KernelSysctls {
 public:
  explicit KernelSysctls(const NamespaceTarget& target) : target_(target) {}

  // True for the names a session may read and write: msgmax, msgmnb, msgmni, msg_next_id.
  static bool IsMsgSysctl(const std::string& name);

  // Session thread only: /proc/sys/kernel/<name> of the session's namespace.
  int64_t Read(const std::string& name) const;
  // Whitespace-separated unsigned numbers (shmmax and shmall exceed INT64_MAX; sem holds four).
  void ReadUnsigned(const std::string& name, uint64_t* values, size_t count) const;
  // With `as`, only the calling thread takes those effective ids for the open and the write.
  void Write(const std::string& name, int64_t value, const std::optional<SysctlWriter>& as = std::nullopt) const;
  IpcSysctls ReadLimits() const;
  // Opens /proc/sys/kernel/<name> for several writes.
  std::unique_ptr<SysctlFile> OpenFile(const std::string& name) const;

  // Opens msg_next_id for writing without writing: 0 when the session may set ids, else the errno.
  int NextIdWritableErrno() const;
  // Opens <name> for writing (as `as`, when given) without writing: 0 when it may be written, else the errno.
  int WritableErrno(const std::string& name, const std::optional<SysctlWriter>& as = std::nullopt) const;

 private:
  std::string ReadText(const std::string& name) const;

  const NamespaceTarget& target_;
};
