#include "kernel_sysctls.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>

#include "creator_identity.h"
#include "errno_error.h"

namespace {

const char kSysctlDirectory[] = "/proc/sys/kernel/";

std::string SysctlPath(const std::string& name) { return kSysctlDirectory + name; }

}  // namespace

bool KernelSysctls::IsMsgSysctl(const std::string& name) {
  return name == "msgmax" || name == "msgmnb" || name == "msgmni" || name == "msg_next_id";
}

std::string KernelSysctls::ReadText(const std::string& name) const {
  const std::string path = SysctlPath(name);
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw ErrnoError::FromErrno(errno, "open", "read " + path + " " + target_.where());
  char text[128];
  const ssize_t length = read(fd, text, sizeof(text) - 1);
  const int readErrno = errno;
  close(fd);
  if (length < 0) throw ErrnoError::FromErrno(readErrno, "read", "read " + path + " " + target_.where());
  return std::string(text, static_cast<size_t>(length));
}

int64_t ReadProcSysNumber(const std::string& path, const std::string& where) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw ErrnoError::FromErrno(errno, "open", "read " + path + " " + where);
  char text[128];
  const ssize_t length = read(fd, text, sizeof(text) - 1);
  const int readErrno = errno;
  close(fd);
  if (length < 0) throw ErrnoError::FromErrno(readErrno, "read", "read " + path + " " + where);
  text[length] = '\0';
  char* end = nullptr;
  errno = 0;
  const long long value = strtoll(text, &end, 10);
  if (errno != 0 || end == text) {
    throw ErrnoError::Project("E_INTERNAL", "read " + path + " " + where + ": not a number: '" + text + "'");
  }
  return value;
}

void WriteProcSysNumber(const std::string& path, int64_t value, const std::optional<SysctlWriter>& as,
                        const std::string& where) {
  const std::string asIds = as ? " as uid " + std::to_string(as->uid) + " gid " + std::to_string(as->gid) : "";
  const std::string doing = "write " + std::to_string(value) + " to " + path + asIds + " " + where;
  std::optional<CreatorIdentity> writer;
  if (as) writer.emplace(as->uid, as->gid, where, "namespace root");
  const int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) throw ErrnoError::FromErrno(errno, "open", doing);
  const std::string text = std::to_string(value) + "\n";
  const ssize_t written = write(fd, text.data(), text.size());
  const int writeErrno = errno;
  close(fd);
  if (writer) writer->Restore();
  if (written < 0) throw ErrnoError::FromErrno(writeErrno, "write", doing);
  if (static_cast<size_t>(written) != text.size()) {
    throw ErrnoError::Project("E_INTERNAL", doing + ": short write of " + std::to_string(written) + " bytes");
  }
}

int64_t KernelSysctls::Read(const std::string& name) const { return ReadProcSysNumber(SysctlPath(name), target_.where()); }

void KernelSysctls::Write(const std::string& name, int64_t value, const std::optional<SysctlWriter>& as) const {
  WriteProcSysNumber(SysctlPath(name), value, as, target_.where());
}

void KernelSysctls::ReadUnsigned(const std::string& name, uint64_t* values, size_t count) const {
  const std::string text = ReadText(name);
  const char* cursor = text.c_str();
  for (size_t i = 0; i < count; i++) {
    char* end = nullptr;
    errno = 0;
    values[i] = strtoull(cursor, &end, 10);
    if (errno != 0 || end == cursor) {
      throw ErrnoError::Project("E_INTERNAL", "read " + SysctlPath(name) + " " + target_.where() + ": expected " + std::to_string(count) + " numbers: '" + text + "'");
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

SysctlFile::SysctlFile(const std::string& path, const std::string& where)
    : path_(path), where_(where), fd_(open(path.c_str(), O_WRONLY | O_CLOEXEC)) {
  if (fd_ < 0) throw ErrnoError::FromErrno(errno, "open", "open " + path_ + " for writing " + where_);
}

SysctlFile::~SysctlFile() { close(fd_); }

void SysctlFile::Write(int64_t value) const {
  char text[24];
  const int length = snprintf(text, sizeof(text), "%lld\n", static_cast<long long>(value));
  const ssize_t written = pwrite(fd_, text, static_cast<size_t>(length), 0);
  if (written == length) return;
  const std::string doing = "write " + std::to_string(value) + " to " + path_ + " " + where_;
  if (written < 0) throw ErrnoError::FromErrno(errno, "write", doing);
  throw ErrnoError::Project("E_INTERNAL", doing + ": short write of " + std::to_string(written) + " bytes");
}

std::unique_ptr<SysctlFile> KernelSysctls::OpenFile(const std::string& name) const {
  return std::make_unique<SysctlFile>(SysctlPath(name), target_.where());
}

int KernelSysctls::NextIdWritableErrno() const {
  const int fd = open(SysctlPath("msg_next_id").c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  close(fd);
  return 0;
}

int KernelSysctls::WritableErrno(const std::string& name, const std::optional<SysctlWriter>& as) const {
  std::optional<CreatorIdentity> writer;
  if (as) writer.emplace(as->uid, as->gid, target_.where(), "namespace root");
  const int fd = open(SysctlPath(name).c_str(), O_WRONLY | O_CLOEXEC);
  const int errnum = fd < 0 ? errno : 0;
  if (fd >= 0) close(fd);
  if (writer) writer->Restore();
  return errnum;
}
