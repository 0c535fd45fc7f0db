// Gives the session thread, and only it, a queue creator's effective uid and gid for one scope.
#pragma once

#include <sys/types.h>

#include <string>

class CreatorIdentity {
 public:
  // Switches the calling thread's effective gid, then uid. Throws ErrnoError, with nothing left switched.
  // role names the ids in error messages ("creator", "namespace root").
  CreatorIdentity(uid_t uid, gid_t gid, const std::string& where, const std::string& role = "creator");
  // Switches back if Restore() was not called; aborts if it cannot (a thread stuck with foreign ids must not go on).
  ~CreatorIdentity();
  CreatorIdentity(const CreatorIdentity&) = delete;
  CreatorIdentity& operator=(const CreatorIdentity&) = delete;

  // Switches back to the original effective ids; throws ErrnoError if the kernel refuses.
  void Restore();

 private:
  uid_t originalUid_;
  gid_t originalGid_;
  bool switched_ = false;
};
