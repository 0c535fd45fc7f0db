// Batches of many queues in one crossing (see lib/native.ts): create at exact ids for a restore,
// stat and copy for a save. Each reports exactly what it did per queue, so lib/ can roll back exactly.
#include <sys/ipc.h>
#include <sys/msg.h>
#include <unistd.h>

#include "msg_queue_calls.h"

CreatedQueues MsgQueueCalls::CreateQueues(const std::vector<NewQueue>& queues) const {
  CreatedQueues result;
  result.created.reserve(queues.size());
  std::unique_ptr<SysctlFile> nextId;
  const ThreadIds self{geteuid(), getegid()};
  // What msgget gives a new queue besides its creator ids and mode: an IPC_SET to the same is left out.
  uint64_t defaultQbytes = 0;
  for (size_t index = 0; index < queues.size(); index++) {
    const NewQueue& queue = queues[index];
    int32_t id;
    try {
      if (!nextId) {
        nextId = sysctls_.OpenFile("msg_next_id");
        defaultQbytes = static_cast<uint64_t>(sysctls_.Read("msgmnb"));
      }
      id = CreateAt(queue.create, *nextId, self);
    } catch (const ErrnoError& error) {
      // Not made, or made at another id and removed again (CreateAt): nothing of it is ours.
      result.failure = error;
      result.failedIndex = index;
      return result;
    }
    result.created.push_back(id);
    const bool asMade = queue.set.uid == queue.create.cuid && queue.set.gid == queue.create.cgid &&
                        (queue.set.mode & 0777) == (queue.create.mode & 0777) && queue.set.qbytes == defaultQbytes;
    if (asMade) continue;
    try {
      SetQueue(id, queue.set);
    } catch (const ErrnoError& error) {
      result.failure = error;
      result.failedIndex = index;
      result.failedQueueCreated = true;
      return result;
    }
  }
  return result;
}

std::unique_ptr<CopiedQueues> MsgQueueCalls::CopyQueues(const std::vector<QueueCopyRequest>& requests) const {
  // The kernel caps a MSG_COPY buffer at the current msgmax, so a larger buffer would only cost a bigger copy.
  const size_t msgmax = static_cast<size_t>(sysctls_.Read("msgmax"));
  auto batch = std::make_unique<CopiedQueues>();
  batch->queues.resize(requests.size());
  for (size_t index = 0; index < requests.size(); index++) {
    const QueueCopyRequest& request = requests[index];
    CopiedQueue& queue = batch->queues[index];
    queue.offset = batch->data.size();
    size_t bufferSize = request.bufferSize < msgmax ? request.bufferSize : msgmax;
    try {
      if (request.statBefore) queue.statBefore = StatQueue(request.id);
      CopyInto(request.id, 0, request.maxCount, request.maxBytes, bufferSize, msgmax, batch->data, queue.count,
               queue.end);
      queue.statAfter = StatQueue(request.id);
    } catch (const ErrnoError& error) {
      // This queue's part is dropped; lib/ copies it again on its own (raising msgmax, or finding it gone).
      batch->data.Truncate(queue.offset);
      queue.count = 0;
      queue.end = false;
      queue.error = error;
    }
    queue.length = batch->data.size() - queue.offset;
    queue.bufferSize = bufferSize;
  }
  return batch;
}
