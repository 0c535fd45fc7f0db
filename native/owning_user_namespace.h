// The user namespace that owns the session's IPC namespace, and its uid/gid maps as ipc-ckpt's own
// user namespace sees them (the ids msgctl reports to the session thread).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "namespace_target.h"

struct OwningUserNamespace {
  uint64_t device = 0;
  uint64_t inode = 0;
  // The IPC namespace belongs to ipc-ckpt's own user namespace: ids need no translation, maps stay empty.
  bool callerOwn = false;
  // /proc/PID/uid_map and gid_map text ("INSIDE OUTSIDE COUNT" lines).
  std::string uidMap;
  std::string gidMap;
  // Where the maps came from: "own", "process" (a process living in that user namespace) or "child"
  // (a short-lived child of the session thread that setns()ed into it, when no process lives there).
  std::string mapSource;
  pid_t mapPid = 0;
};

// Session thread only (it has joined the IPC namespace): NS_GET_USERNS on the IPC namespace itself,
// so a bind-mounted nsfs file with no process in it works too. Throws ErrnoError.
OwningUserNamespace ReadOwningUserNamespace(const NamespaceTarget& target);
