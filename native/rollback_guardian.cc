// ipc-ckpt-guardian: a small program (not part of the addon) that undoes an ipc-ckpt run's changes if
// ipc-ckpt dies before it says "done" (SIGKILL included). lib/rollback-guardian.ts starts it and
// speaks its protocol; one line each on stdin, acknowledged with "ok" on stdout:
//   queues ID KEY [ID KEY ...]   queues about to be created (decimal id, decimal unsigned key)
//   forget ID [ID ...]           queues ipc-ckpt removed itself
//   file UID GID VALUE PATH      write VALUE back to PATH (a sysctl, a freezer state); UID/GID '-' or
//                                the effective ids to write it with (a user-namespaced IPC ns's root)
//   temp PATH / untemp PATH      a temporary file to remove / no longer to remove
//   mqueue HEX / forget-mqueue HEX  a POSIX queue (name in hex, without its '/') to unlink / not to
//   nextid                       msg_next_id may be left set (written before a msgget that never came)
//   done                         ipc-ckpt finished or rolled back by itself: exit, touching nothing
// On end of file it removes the registered queues that still hold their registered key (one walk
// over the namespace's queue slots, however many are registered), writes the files back newest
// first, unsets a msg_next_id left set (the kernel refuses -1 there: a msgget consumes it, and the
// queue it makes is removed at once), removes the temporary files and exits. argv[1], when given, is the nsfs file of the IPC
// namespace to join first; it prints "ready" once it is in place, or "error TEXT" and exits 1.
// fd 3, when open, is ipc-ckpt's namespace lock: kept open so the lock outlives ipc-ckpt until the
// rollback is over.
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/msg.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#ifndef MSG_STAT_ANY
#define MSG_STAT_ANY 13
#endif

namespace {

struct FileRestore {
  long uid;  // -1: as we are
  long gid;
  std::string value;
  std::string path;
};

std::unordered_map<int, unsigned int> queues;
std::vector<FileRestore> files;
std::vector<std::string> temporaries;
bool resetNextId = false;
std::vector<std::string> posixQueues;

std::string FromHex(const std::string& hex) {
  std::string bytes;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) bytes.push_back(static_cast<char>(strtol(hex.substr(i, 2).c_str(), nullptr, 16)));
  return bytes;
}

void Reply(const char* text) {
  fputs(text, stdout);
  fputc('\n', stdout);
  fflush(stdout);
}

std::vector<std::string> Words(const std::string& line, size_t limit) {
  std::vector<std::string> words;
  size_t at = 0;
  while (at < line.size() && words.size() + 1 < limit) {
    while (at < line.size() && line[at] == ' ') at++;
    if (at >= line.size()) break;
    size_t end = line.find(' ', at);
    if (end == std::string::npos) end = line.size();
    words.push_back(line.substr(at, end - at));
    at = end;
  }
  while (at < line.size() && line[at] == ' ') at++;
  if (at < line.size()) words.push_back(line.substr(at));
  return words;
}

long IdOrUnchanged(const std::string& word) { return word == "-" ? -1 : strtol(word.c_str(), nullptr, 10); }

// Raw system calls: only this thread's effective ids change, and back again.
bool SetEffectiveIds(long uid, long gid) {
  if (gid >= 0 && syscall(SYS_setresgid, -1, gid, -1) != 0) return false;
  if (uid >= 0 && syscall(SYS_setresuid, -1, uid, -1) != 0) return false;
  return true;
}

void ResetEffectiveIds() {
  syscall(SYS_setresuid, -1, 0, -1);
  syscall(SYS_setresgid, -1, 0, -1);
}

bool Handle(const std::string& line) {
  const size_t space = line.find(' ');
  const std::string verb = line.substr(0, space);
  const std::string rest = space == std::string::npos ? "" : line.substr(space + 1);
  if (verb == "queues") {
    std::vector<std::string> words = Words(rest, static_cast<size_t>(-1));
    for (size_t i = 0; i + 1 < words.size(); i += 2) {
      queues[static_cast<int>(strtol(words[i].c_str(), nullptr, 10))] =
          static_cast<unsigned int>(strtoul(words[i + 1].c_str(), nullptr, 10));
    }
  } else if (verb == "forget") {
    for (const std::string& word : Words(rest, static_cast<size_t>(-1))) queues.erase(static_cast<int>(strtol(word.c_str(), nullptr, 10)));
  } else if (verb == "file") {
    std::vector<std::string> words = Words(rest, 4);
    if (words.size() != 4) return false;
    files.push_back({IdOrUnchanged(words[0]), IdOrUnchanged(words[1]), words[2], words[3]});
  } else if (verb == "mqueue") {
    posixQueues.push_back(FromHex(rest));
  } else if (verb == "forget-mqueue") {
    const std::string name = FromHex(rest);
    for (auto it = posixQueues.begin(); it != posixQueues.end(); ++it) {
      if (*it == name) {
        posixQueues.erase(it);
        break;
      }
    }
  } else if (verb == "nextid") {
    resetNextId = true;
  } else if (verb == "temp") {
    temporaries.push_back(rest);
  } else if (verb == "untemp") {
    for (auto it = temporaries.begin(); it != temporaries.end(); ++it) {
      if (*it == rest) {
        temporaries.erase(it);
        break;
      }
    }
  } else {
    return false;
  }
  return true;
}

int RemoveQueues() {
  if (queues.empty()) return 0;
  struct msginfo info;
  const int highest = msgctl(0, MSG_INFO, reinterpret_cast<struct msqid_ds*>(&info));
  int removed = 0;
  for (int index = 0; index <= highest; index++) {
    struct msqid_ds ds;
    const int id = msgctl(index, MSG_STAT_ANY, &ds);
    if (id < 0) continue;
    auto found = queues.find(id);
    // Only the queue we made: same id and key (another process may have taken the id meanwhile).
    if (found == queues.end() || found->second != static_cast<unsigned int>(ds.msg_perm.__key)) continue;
    if (msgctl(id, IPC_RMID, nullptr) == 0) removed++;
    else fprintf(stderr, "ipc-ckpt-guardian: removing queue %d: %s\n", id, strerror(errno));
  }
  return removed;
}

// mq_unlink works on the IPC namespace's own mqueue mount: no mount namespace is needed.
int UnlinkPosixQueues() {
  int removed = 0;
  for (const std::string& name : posixQueues) {
    if (syscall(SYS_mq_unlink, name.c_str()) == 0) removed++;
    else if (errno != ENOENT) fprintf(stderr, "ipc-ckpt-guardian: unlinking POSIX queue /%s: %s\n", name.c_str(), strerror(errno));
  }
  return removed;
}

int WriteFilesBack() {
  int written = 0;
  for (auto it = files.rbegin(); it != files.rend(); ++it) {
    bool ok = SetEffectiveIds(it->uid, it->gid);
    int fd = ok ? open(it->path.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC) : -1;
    const std::string text = it->value + "\n";
    ok = fd >= 0 && write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
    const int error = errno;
    if (fd >= 0 && close(fd) != 0) ok = false;
    ResetEffectiveIds();
    if (ok) written++;
    else fprintf(stderr, "ipc-ckpt-guardian: writing %s back to %s: %s\n", it->value.c_str(), it->path.c_str(), strerror(error));
  }
  return written;
}

// msg_next_id reads -1 when unset; writing -1 is refused (its minimum is 0), so a msgget consumes it.
bool UnsetNextId() {
  if (!resetNextId) return false;
  FILE* file = fopen("/proc/sys/kernel/msg_next_id", "re");
  long value = -1;
  if (file == nullptr) return false;
  if (fscanf(file, "%ld", &value) != 1) value = -1;
  fclose(file);
  if (value < 0) return false;
  const int id = msgget(IPC_PRIVATE, IPC_CREAT | 0600);
  if (id < 0) {
    fprintf(stderr, "ipc-ckpt-guardian: unsetting msg_next_id %ld: %s\n", value, strerror(errno));
    return false;
  }
  msgctl(id, IPC_RMID, nullptr);
  return true;
}

int RemoveTemporaries() {
  int removed = 0;
  for (const std::string& path : temporaries) {
    if (unlink(path.c_str()) == 0) removed++;
  }
  return removed;
}

}  // namespace

int main(int argc, char** argv) {
  signal(SIGINT, SIG_IGN);
  signal(SIGTERM, SIG_IGN);
  signal(SIGHUP, SIG_IGN);
  signal(SIGPIPE, SIG_IGN);
  if (argc > 1 && argv[1][0] != '\0') {
    const int fd = open(argv[1], O_RDONLY | O_CLOEXEC);
    if (fd < 0 || setns(fd, CLONE_NEWIPC) != 0) {
      printf("error cannot join the IPC namespace %s: %s\n", argv[1], strerror(errno));
      return 1;
    }
    close(fd);
  }
  Reply("ready");
  char* buffer = nullptr;
  size_t capacity = 0;
  ssize_t length;
  while ((length = getline(&buffer, &capacity, stdin)) >= 0) {
    std::string line(buffer, static_cast<size_t>(length));
    if (!line.empty() && line.back() == '\n') line.pop_back();
    if (line == "done") return 0;
    Reply(Handle(line) ? "ok" : "bad");
  }
  free(buffer);
  // ipc-ckpt is gone without saying "done": undo what it registered.
  const int removed = RemoveQueues() + UnlinkPosixQueues();
  const int written = WriteFilesBack() + (UnsetNextId() ? 1 : 0);
  const int deleted = RemoveTemporaries();
  if (removed + written + deleted > 0) {
    fprintf(stderr, "ipc-ckpt-guardian: ipc-ckpt ended before it was done; rolled back: %d queue(s) removed, %d file(s) written back, %d temporary file(s) removed\n",
            removed, written, deleted);
  }
  return 0;
}
