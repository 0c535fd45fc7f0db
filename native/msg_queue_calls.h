// The SysV message queue system calls of one session, run on the session thread only.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernel_sysctls.h"
#include "namespace_target.h"
#include "packed_batch.h"

// Every field of one queue's msqid64_ds.
struct QueueStat {
  int32_t id;
  uint32_t key;
  uint32_t uid;
  uint32_t gid;
  uint32_t cuid;
  uint32_t cgid;
  uint32_t mode;
  int64_t stime;
  int64_t rtime;
  int64_t ctime;
  uint64_t cbytes;
  uint64_t qnum;
  uint64_t qbytes;
  int32_t lspid;
  int32_t lrpid;
};

struct CopiedBatch {
  PackedBatch data;
  uint32_t count = 0;
  bool end = false;
  size_t bufferSize = 0;
  QueueStat statBefore{};
  QueueStat statAfter{};
};

struct CreateQueueRequest {
  uint32_t key;
  int32_t id;
  uint32_t mode;
  uid_t cuid;
  gid_t cgid;
};

struct SetQueueRequest {
  uid_t uid;
  gid_t gid;
  uint32_t mode;
  uint64_t qbytes;
};

struct NamespaceProbe {
  int msgCopyErrno;
  int nextIdWritableErrno;
  uint64_t effectiveCapabilities;
};

class MsgQueueCalls {
 public:
  explicit MsgQueueCalls(const NamespaceTarget& target) : target_(target), sysctls_(target) {}

  std::vector<QueueStat> ListQueues() const;
  QueueStat StatQueue(int32_t id) const;
  // MSG_COPY of messages first, first + 1, ... (see NativeNamespace.copyMessages in lib/native.ts).
  std::unique_ptr<CopiedBatch> CopyMessages(int32_t id, uint32_t first, uint32_t maxCount, size_t maxBytes,
                                            size_t bufferSize) const;
  int32_t CreateQueue(const CreateQueueRequest& request) const;
  void SetQueue(int32_t id, const SetQueueRequest& request) const;
  // Sends `count` packed messages (already validated) in order; rewrites `packed` in place.
  uint32_t SendMessages(int32_t id, uint8_t* packed, uint32_t count) const;
  void RemoveQueue(int32_t id) const;
  NamespaceProbe Probe() const;

 private:
  // After a failed create: makes sure msg_next_id no longer points anywhere. Returns a note for the
  // error message when it could not ("" when all is well).
  std::string ClearNextId() const;

  const NamespaceTarget& target_;
  KernelSysctls sysctls_;
};
