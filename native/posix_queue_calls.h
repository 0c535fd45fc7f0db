// The POSIX message queue calls of one session, run on the session thread only. The queues are
// listed through a detached mount of the namespace's own mqueue filesystem (fsopen/fsmount on the
// session thread: the mqueue filesystem binds to the IPC namespace of the thread that creates it).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kernel_sysctls.h"
#include "namespace_target.h"

// What the mqueue filesystem and mq_getattr tell of one queue.
struct PosixQueueStat {
  std::string name;  // without the leading '/'
  uint32_t mode;     // 07777 bits
  uint32_t uid;
  uint32_t gid;
  int64_t maxmsg;
  int64_t msgsize;
  int64_t curmsgs;
  // The queue file's status line: QSIZE NOTIFY SIGNO NOTIFY_PID.
  uint64_t qsize;
  int32_t notify;
  int32_t notifySigno;
  int32_t notifyPid;
};

// /proc/sys/fs/mqueue of the session's namespace.
struct MqueueLimits {
  int64_t queuesMax;
  int64_t msgMax;
  int64_t msgsizeMax;
  int64_t msgDefault;
  int64_t msgsizeDefault;
};

// Every message of one queue, taken and put back, packed: per message u32 priority, u32 size, body.
struct TakenMessages {
  std::vector<uint8_t> packed;
  uint32_t count = 0;
  PosixQueueStat before{};
  PosixQueueStat after{};
};

struct CreatePosixQueueRequest {
  std::string name;
  uint32_t mode;
  uid_t uid;
  gid_t gid;
  int64_t maxmsg;
  int64_t msgsize;
};

class PosixQueueCalls {
 public:
  // Bytes of a packed message's header (u32 priority, u32 size): POSIX_PACKED_HEADER_BYTES in lib/native.ts.
  static constexpr size_t kPackedHeaderBytes = 8;

  explicit PosixQueueCalls(const NamespaceTarget& target) : target_(target) {}

  // Every queue of the namespace, sorted by name.
  std::vector<PosixQueueStat> ListQueues() const;
  PosixQueueStat StatQueue(const std::string& name) const;
  // Takes every message of the queue in delivery order and puts the same messages back in the same
  // order, in a forked child that finishes the put-back even if this process dies; returns the copy.
  // Refuses (E_MQ_FULL, E_MQ_NOTIFY) before taking anything what could not be put back unchanged.
  std::unique_ptr<TakenMessages> TakeAndPutBack(const std::string& name) const;
  // Creates a queue with exactly these attributes, owner and mode (with the owner's real and effective
  // ids, so the kernel charges the owner's RLIMIT_MSGQUEUE); fails with EEXIST if the name is taken.
  void CreateQueue(const CreatePosixQueueRequest& request) const;
  // Why `packed` is not `count` well-formed packed messages ("" when it is).
  static std::string ValidatePacked(const uint8_t* packed, size_t length, uint32_t count);
  // mq_send of `count` packed messages (already validated) in order; returns how many were sent.
  uint32_t SendMessages(const std::string& name, const uint8_t* packed, uint32_t count) const;
  void RemoveQueue(const std::string& name) const;

  // True for queues_max, msg_max, msgsize_max, msg_default, msgsize_default.
  static bool IsLimitName(const std::string& name);
  MqueueLimits ReadLimits() const;
  // As `as` (the namespace's own root, effective ids on this thread only) when given.
  void WriteLimit(const std::string& name, int64_t value, const std::optional<SysctlWriter>& as = std::nullopt) const;

 private:
  // A detached mount of the session's namespace's mqueue filesystem, made on the session thread for one
  // call and closed after it: a mount left open would keep the namespace (and its queues) alive.
  int OpenMount() const;
  int OpenQueueFile(int mount, const std::string& name, int flags) const;
  PosixQueueStat StatOpenQueue(const std::string& name, int fd) const;
  int64_t ReadLimit(const std::string& name) const;
  std::string QueueLabel(const std::string& name) const;

  const NamespaceTarget& target_;
};
