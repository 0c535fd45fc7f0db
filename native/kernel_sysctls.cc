#include "kernel_sysctls.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include "errno_error.h"

namespace {

const char kSysctlDirectory[] = "/proc/sys/kernel/";

std::string SysctlPath(const std::string& name) { return kSysctlDirectory + name; }

}  // namespace

bool KernelSysctls::IsMsgSysctl(const std::string& name) {
  return name == "msgmax" || name == "msgmnb" || name == "msgmni" || name == "msg_next_id";
}

int64_t KernelSysctls::Read(const std::string& name) const {
  const std::string path = SysctlPath(name);
  const std::string doing = "read " + path + " " + target_.where();
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw ErrnoError::FromErrno(errno, "open", doing);
  char text[64];
  const ssize_t length = read(fd, text, sizeof(text) - 1);
  const int readErrno = errno;
  close(fd);
  if (length < 0) throw ErrnoError::FromErrno(readErrno, "read", doing);
  text[length] = '\0';
  char* end = nullptr;
  errno = 0;
  const long long value = strtoll(text, &end, 10);
  if (errno != 0 || end == text) {
    throw ErrnoError::Project("E_INTERNAL", doing + ": not a number: '" + std::string(text, length) + "'");
  }
  return value;
}

void KernelSysctls::Write(const std::string& name, int64_t value) const {
  const std::string path = SysctlPath(name);
  const std::string doing = "write " + std::to_string(value) + " to " + path + " " + target_.where();
  const int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) throw ErrnoError::FromErrno(errno, "open", doing);
  const std::string text = std::to_string(value) + "\n";
  const ssize_t written = write(fd, text.data(), text.size());
  const int writeErrno = errno;
  close(fd);
  if (written < 0) throw ErrnoError::FromErrno(writeErrno, "write", doing);
  if (static_cast<size_t>(written) != text.size()) {
    throw ErrnoError::Project("E_INTERNAL", doing + ": short write of " + std::to_string(written) + " bytes");
  }
}

void KernelSysctls::ReadUnsigned(const std::string& name, uint64_t* values, size_t count) const {
  const std::string path = SysctlPath(name);
  const std::string doing = "read " + path + " " + target_.where();
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw ErrnoError::FromErrno(errno, "open", doing);
  char text[128];
  const ssize_t length = read(fd, text, sizeof(text) - 1);
  const int readErrno = errno;
  close(fd);
  if (length < 0) throw ErrnoError::FromErrno(readErrno, "read", doing);
  text[length] = '\0';
  const char* cursor = text;
  for (size_t i = 0; i < count; i++) {
    char* end = nullptr;
    errno = 0;
    values[i] = strtoull(cursor, &end, 10);
    if (errno != 0 || end == cursor) {
      throw ErrnoError::Project("E_INTERNAL", doing + ": expected " + std::to_string(count) + " numbers: '" + std::string(text, length) + "'");
    }
    cursor = end;
  }
}

IpcSysctls KernelSysctls::ReadLimits() const {
  IpcSysctls limits{Read("msgmax"), Read("msgmnb"), Read("msgmni"), 0, 0, Read("shmmni"), {0, 0, 0, 0}};
  ReadUnsigned("shmmax", &limits.shmmax, 1);
  ReadUnsigned("shmall", &limits.shmall, 1);
  uint64_t sem[4];
  ReadUnsigned("sem", sem, 4);
  for (size_t i = 0; i < 4; i++) limits.sem[i] = static_cast<int64_t>(sem[i]);
  return limits;
}

int KernelSysctls::NextIdWritableErrno() const {
  const int fd = open(SysctlPath("msg_next_id").c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  close(fd);
  return 0;
}
