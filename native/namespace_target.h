// The IPC namespace a session works in: an nsfs file of type IPC, or '' for the caller's own.
#pragma once

#include <string>

class NamespaceTarget {
 public:
  explicit NamespaceTarget(std::string path);

  // Checks the path is an IPC namespace and setns()es the calling thread into it; no-op for ''.
  // Throws ErrnoError (E_TARGET or the errno name) naming the path. Call only on the session thread.
  void JoinOnThisThread() const;

  const std::string& path() const { return path_; }
  // "in /proc/42/ns/ipc" or "in the caller's IPC namespace", to end error messages with.
  const std::string& where() const { return where_; }

 private:
  std::string path_;
  std::string where_;
};
