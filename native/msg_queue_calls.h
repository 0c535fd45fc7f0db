// The SysV message queue system calls of one session, run on the session thread only.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "errno_error.h"
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

// The effective uid and gid of the calling thread.
struct ThreadIds {
  uid_t uid;
  gid_t gid;
};

// One queue of a createQueues batch: msgget as cuid/cgid at the exact id, then IPC_SET of owner, mode and qbytes
// (left out when msgget made them so: owner = creator, qbytes = msgmnb).
struct NewQueue {
  CreateQueueRequest create;
  SetQueueRequest set;
};

// What a createQueues batch did: it stops at the first failure.
struct CreatedQueues {
  // Ids of the queues that exist now and were made by this batch, in request order.
  std::vector<int32_t> created;
  // The failure, if any: the request's index, whether that queue was made (its IPC_SET failed), and why.
  std::optional<ErrnoError> failure;
  size_t failedIndex = 0;
  bool failedQueueCreated = false;
};

// One queue of a copyQueues batch: stat (unless the caller's fresh listing stands in for it), MSG_COPY of
// messages 0, 1, ... (at most maxCount, within maxBytes), stat.
struct QueueCopyRequest {
  int32_t id;
  uint32_t maxCount;
  size_t maxBytes;
  size_t bufferSize;
  bool statBefore = true;
};

// One queue's part of a copyQueues batch (its messages are data[offset, offset + length) of the batch).
struct CopiedQueue {
  size_t offset = 0;
  size_t length = 0;
  uint32_t count = 0;
  bool end = false;
  size_t bufferSize = 0;
  QueueStat statBefore{};
  QueueStat statAfter{};
  // Set when a call failed for this queue (the batch goes on with the next queue).
  std::optional<ErrnoError> error;
};

struct CopiedQueues {
  PackedBatch data;
  std::vector<CopiedQueue> queues;
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

  // Batches (native/msg_queue_batches.cc): many queues in one crossing, with exact per-queue results.
  CreatedQueues CreateQueues(const std::vector<NewQueue>& queues) const;
  std::unique_ptr<CopiedQueues> CopyQueues(const std::vector<QueueCopyRequest>& requests) const;
  // Sends counts[i] packed messages to ids[i], for i in order; the error carries `sent` (in all) and `queueIndex`.
  uint32_t SendQueueMessages(const std::vector<int32_t>& ids, const std::vector<uint32_t>& counts, uint8_t* packed) const;

 private:
  // After a failed create: makes sure msg_next_id no longer points anywhere. Returns a note for the
  // error message when it could not ("" when all is well).
  std::string ClearNextId() const;
  // msg_next_id = request.id through nextId, msgget as the creator, the id check (see CreateQueue).
  // self: the session thread's effective ids (a creator with these needs no switch), read once per batch.
  int32_t CreateAt(const CreateQueueRequest& request, const SysctlFile& nextId, const ThreadIds& self) const;
  // msgsnd of `count` packed messages from `message`; returns the address after them. Errors say `sent` in all.
  uint8_t* SendRun(int32_t id, uint8_t* message, uint32_t count, uint32_t sentBefore, int64_t queueIndex) const;
  // The error of a msgget at an id: what was asked, with the kernel's reason.
  std::string CreateDoing(const CreateQueueRequest& request) const;
  // One queue's copies into `batch` (see CopyMessages); throws ErrnoError.
  void CopyInto(int32_t id, uint64_t first, uint32_t maxCount, size_t maxBytes, size_t& bufferSize, size_t msgmax,
                PackedBatch& data, uint32_t& count, bool& end) const;

  const NamespaceTarget& target_;
  KernelSysctls sysctls_;
};
