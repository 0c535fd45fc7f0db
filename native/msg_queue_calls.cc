#include "msg_queue_calls.h"

#include <linux/capability.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>

#include "creator_identity.h"
#include "errno_error.h"

namespace {

// ids are seq * IPCMNI + index (the kernel's default IPCMNI, without ipcmni_extend).
constexpr int32_t kIpcMni = 32768;
// The MSG_COPY buffer never starts below this when it has to grow.
constexpr size_t kMinimumGrownBuffer = 64;

std::string Hex(uint32_t value) {
  char text[16];
  snprintf(text, sizeof(text), "0x%x", value);
  return text;
}

std::string Octal(uint32_t value) {
  char text[16];
  snprintf(text, sizeof(text), "0%o", value);
  return text;
}

QueueStat ToQueueStat(int32_t id, const struct msqid_ds& ds) {
  QueueStat stat{};
  stat.id = id;
  stat.key = static_cast<uint32_t>(ds.msg_perm.__key);
  stat.uid = ds.msg_perm.uid;
  stat.gid = ds.msg_perm.gid;
  stat.cuid = ds.msg_perm.cuid;
  stat.cgid = ds.msg_perm.cgid;
  stat.mode = ds.msg_perm.mode & 0777;
  stat.stime = ds.msg_stime;
  stat.rtime = ds.msg_rtime;
  stat.ctime = ds.msg_ctime;
  stat.cbytes = ds.__msg_cbytes;
  stat.qnum = ds.msg_qnum;
  stat.qbytes = ds.msg_qbytes;
  stat.lspid = ds.msg_lspid;
  stat.lrpid = ds.msg_lrpid;
  return stat;
}

std::string QueueName(int32_t id) {
  return "queue id " + std::to_string(id) + " (index " + std::to_string(id % kIpcMni) + ", seq " +
         std::to_string(id / kIpcMni) + ")";
}

}  // namespace

std::vector<QueueStat> MsgQueueCalls::ListQueues() const {
  struct msginfo info {};
  const int highestIndex = msgctl(0, MSG_INFO, reinterpret_cast<struct msqid_ds*>(&info));
  if (highestIndex < 0) throw ErrnoError::FromErrno(errno, "msgctl", "MSG_INFO " + target_.where());
  std::vector<QueueStat> queues;
  for (int index = 0; index <= highestIndex; index++) {
    struct msqid_ds ds {};
    const int id = msgctl(index, MSG_STAT_ANY, &ds);
    if (id < 0) {
      if (errno == EINVAL) continue;  // an unused index below the highest one
      throw ErrnoError::FromErrno(errno, "msgctl", "MSG_STAT_ANY of index " + std::to_string(index) + " " + target_.where());
    }
    queues.push_back(ToQueueStat(id, ds));
  }
  return queues;
}

QueueStat MsgQueueCalls::StatQueue(int32_t id) const {
  struct msqid_ds ds {};
  if (msgctl(id, IPC_STAT, &ds) != 0) {
    const int errnum = errno;
    const std::string hint = errnum == EINVAL || errnum == EIDRM ? " (no such queue: removed, or never created)" : "";
    ErrnoError error = ErrnoError::FromErrno(errnum, "msgctl", "IPC_STAT of " + QueueName(id) + " " + target_.where());
    throw ErrnoError(error.code(), errnum, error.syscall(), error.what() + hint);
  }
  return ToQueueStat(id, ds);
}

std::unique_ptr<CopiedBatch> MsgQueueCalls::CopyMessages(int32_t id, uint32_t first, uint32_t maxCount, size_t maxBytes,
                                                         size_t bufferSize) const {
  // The kernel caps a MSG_COPY buffer at the current msgmax, so a larger buffer would only cost a bigger copy.
  const size_t msgmax = static_cast<size_t>(sysctls_.Read("msgmax"));
  size_t copyBufferSize = bufferSize < msgmax ? bufferSize : msgmax;
  auto batch = std::make_unique<CopiedBatch>();
  batch->statBefore = StatQueue(id);
  CopyInto(id, first, maxCount, maxBytes, copyBufferSize, msgmax, batch->data, batch->count, batch->end);
  batch->bufferSize = copyBufferSize;
  batch->statAfter = StatQueue(id);
  return batch;
}

void MsgQueueCalls::CopyInto(int32_t id, uint64_t first, uint32_t maxCount, size_t maxBytes, size_t& copyBufferSize,
                             size_t msgmax, PackedBatch& data, uint32_t& count, bool& end) const {
  const size_t startSize = data.size();
  for (uint64_t position = first; count < maxCount; position++) {
    ssize_t bodySize;
    for (;;) {
      void* slot = data.ReceiveSlot(copyBufferSize);
      bodySize = msgrcv(id, slot, copyBufferSize, static_cast<long>(position), IPC_NOWAIT | MSG_COPY);
      if (bodySize >= 0) break;
      const int errnum = errno;
      if (errnum == ENOMSG) {
        end = true;
        break;
      }
      const std::string doing = "MSG_COPY of message " + std::to_string(position) + " of " + QueueName(id) + " " +
                                target_.where();
      if (errnum != E2BIG) throw ErrnoError::FromErrno(errnum, "msgrcv", doing);
      if (copyBufferSize >= msgmax) {
        throw ErrnoError("E2BIG", E2BIG, "msgrcv",
                         doing + ": the message is larger than the namespace's msgmax (" + std::to_string(msgmax) +
                             " bytes); msgmax must be raised to copy it");
      }
      const size_t doubled = copyBufferSize * 2 > kMinimumGrownBuffer ? copyBufferSize * 2 : kMinimumGrownBuffer;
      copyBufferSize = doubled < msgmax ? doubled : msgmax;
    }
    if (end) break;
    const size_t bytes = static_cast<size_t>(bodySize);
    // The first message always goes in, so a batch makes progress whatever maxBytes says.
    if (count > 0 && data.size() - startSize + PackedBatch::PackedSize(bytes) > maxBytes) break;
    data.CommitReceived(bytes);
    count++;
  }
}

std::string MsgQueueCalls::CreateDoing(const CreateQueueRequest& request) const {
  return "msgget key " + Hex(request.key) + " at id " + std::to_string(request.id) + " as uid " +
         std::to_string(request.cuid) + " gid " + std::to_string(request.cgid) + " " + target_.where();
}

int32_t MsgQueueCalls::CreateQueue(const CreateQueueRequest& request) const {
  const std::unique_ptr<SysctlFile> nextId = sysctls_.OpenFile("msg_next_id");
  return CreateAt(request, *nextId, ThreadIds{geteuid(), getegid()});
}

int32_t MsgQueueCalls::CreateAt(const CreateQueueRequest& request, const SysctlFile& nextId, const ThreadIds& self) const {
  nextId.Write(request.id);
  int created;
  int msggetErrno = 0;
  const int flags = static_cast<int>(request.mode & 0777) | IPC_CREAT | IPC_EXCL;
  // The thread's own ids need no switch: msgget records the effective ids as the creator either way.
  if (request.cuid == self.uid && request.cgid == self.gid) {
    created = msgget(static_cast<key_t>(request.key), flags);
    msggetErrno = errno;
  } else {
    try {
      CreatorIdentity creator(request.cuid, request.cgid, target_.where());
      created = msgget(static_cast<key_t>(request.key), flags);
      msggetErrno = errno;
      creator.Restore();
    } catch (const ErrnoError& error) {
      throw ErrnoError(error.code(), error.errnum(), error.syscall(), error.what() + ClearNextId());
    }
  }
  if (created < 0) {
    const ErrnoError error = ErrnoError::FromErrno(msggetErrno, "msgget", CreateDoing(request));
    throw ErrnoError(error.code(), msggetErrno, error.syscall(), error.what() + ClearNextId());
  }
  if (created != request.id) {
    const int removed = msgctl(created, IPC_RMID, nullptr);
    const std::string cleanup = removed == 0 ? "it was removed again" : "removing it failed too";
    throw ErrnoError::Project("E_ID_MISMATCH", CreateDoing(request) + ": the kernel gave id " + std::to_string(created) +
                                                   " instead (the id is taken or out of range); " + cleanup);
  }
  return created;
}

std::string MsgQueueCalls::ClearNextId() const {
  try {
    const int64_t pending = sysctls_.Read("msg_next_id");
    if (pending < 0) return "";
    // msg_next_id takes no -1 from userspace (its minimum is 0): let a throwaway queue use it up, as msgget would.
    const int throwaway = msgget(IPC_PRIVATE, IPC_CREAT | 0600);
    if (throwaway < 0) {
      return " (msg_next_id is left at " + std::to_string(pending) + ": the throwaway msgget that clears it failed: " +
             strerror(errno) + ")";
    }
    if (msgctl(throwaway, IPC_RMID, nullptr) != 0) {
      return " (removing the throwaway queue " + std::to_string(throwaway) + " that cleared msg_next_id failed: " +
             strerror(errno) + ")";
    }
    return "";
  } catch (const ErrnoError& error) {
    return std::string(" (") + error.what() + ")";
  }
}

void MsgQueueCalls::SetQueue(int32_t id, const SetQueueRequest& request) const {
  struct msqid_ds ds {};
  ds.msg_perm.uid = request.uid;
  ds.msg_perm.gid = request.gid;
  ds.msg_perm.mode = request.mode & 0777;
  ds.msg_qbytes = request.qbytes;
  if (msgctl(id, IPC_SET, &ds) == 0) return;
  const int errnum = errno;
  const std::string doing = "IPC_SET of " + QueueName(id) + " to uid " + std::to_string(request.uid) + " gid " +
                            std::to_string(request.gid) + " mode " + Octal(request.mode) + " qbytes " +
                            std::to_string(request.qbytes) + " " + target_.where();
  ErrnoError error = ErrnoError::FromErrno(errnum, "msgctl", doing);
  if (errnum == EPERM) {
    const int64_t msgmnb = sysctls_.Read("msgmnb");
    if (request.qbytes > static_cast<uint64_t>(msgmnb)) {
      throw ErrnoError(error.code(), errnum, error.syscall(),
                       std::string(error.what()) + " (qbytes above msgmnb " + std::to_string(msgmnb) +
                           " needs CAP_SYS_RESOURCE: raise msgmnb first)");
    }
  }
  throw error;
}

uint32_t MsgQueueCalls::SendMessages(int32_t id, uint8_t* packed, uint32_t count) const {
  SendRun(id, packed, count, 0, -1);
  return count;
}

uint32_t MsgQueueCalls::SendQueueMessages(const std::vector<int32_t>& ids, const std::vector<uint32_t>& counts,
                                          uint8_t* packed) const {
  uint8_t* message = packed;
  uint32_t sent = 0;
  for (size_t index = 0; index < ids.size(); index++) {
    message = SendRun(ids[index], message, counts[index], sent, static_cast<int64_t>(index));
    sent += counts[index];
  }
  return sent;
}

uint8_t* MsgQueueCalls::SendRun(int32_t id, uint8_t* message, uint32_t count, uint32_t sentBefore,
                                int64_t queueIndex) const {
  for (uint32_t sent = 0; sent < count; sent++) {
    int64_t type;
    uint32_t bodySize;
    void* msgbuf = PackedBatch::ToMsgbufInPlace(message, type, bodySize);
    if (msgsnd(id, msgbuf, bodySize, IPC_NOWAIT) != 0) {
      const int errnum = errno;
      ErrnoError error = ErrnoError::FromErrno(errnum, "msgsnd",
                                               "msgsnd of message " + std::to_string(sent) + " (type " +
                                                   std::to_string(type) + ", " + std::to_string(bodySize) +
                                                   " bytes) to " + QueueName(id) + " " + target_.where() + ", after " +
                                                   std::to_string(sent) + " sent");
      error.WithNumber("sent", sentBefore + sent);
      if (queueIndex >= 0) error.WithNumber("queueIndex", static_cast<double>(queueIndex));
      throw error;
    }
    message += PackedBatch::PackedSize(bodySize);
  }
  return message;
}

void MsgQueueCalls::RemoveQueue(int32_t id) const {
  if (msgctl(id, IPC_RMID, nullptr) != 0) {
    throw ErrnoError::FromErrno(errno, "msgctl", "IPC_RMID of " + QueueName(id) + " " + target_.where());
  }
}

NamespaceProbe MsgQueueCalls::Probe() const {
  NamespaceProbe probe{};
  // No queue has id INT_MAX: with MSG_COPY compiled in the lookup fails (EINVAL), without it msgrcv says ENOSYS.
  struct {
    long mtype;
    char mtext[1];
  } buffer{};
  if (msgrcv(INT_MAX, &buffer, sizeof(buffer.mtext), 0, IPC_NOWAIT | MSG_COPY) < 0) {
    probe.msgCopyErrno = errno == EINVAL || errno == ENOMSG || errno == E2BIG ? 0 : errno;
  }
  probe.nextIdWritableErrno = sysctls_.NextIdWritableErrno();
  struct __user_cap_header_struct header {};
  header.version = _LINUX_CAPABILITY_VERSION_3;
  header.pid = 0;  // the calling thread: the session thread's own capabilities
  struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  if (syscall(SYS_capget, &header, data) != 0) {
    throw ErrnoError::FromErrno(errno, "capget", "read the session thread's capabilities " + target_.where());
  }
  probe.effectiveCapabilities = static_cast<uint64_t>(data[1].effective) << 32 | data[0].effective;
  return probe;
}
