// A failure on the session thread, kept as plain data until the main thread turns it into a JS Error.
#pragma once

#include <napi.h>

#include <exception>
#include <string>
#include <utility>
#include <vector>

class ErrnoError : public std::exception {
 public:
  // code is an errno name ('EPERM') or a project code ('E_TARGET'); errnum 0 when no system call failed.
  ErrnoError(std::string code, int errnum, std::string syscall, std::string message);

  // The failure of `syscall` with `errnum`; message is "<doing>: <strerror>".
  static ErrnoError FromErrno(int errnum, const std::string& syscall, const std::string& doing);

  // An error of the project's own (errno 0 unless a system call lies behind it).
  static ErrnoError Project(const std::string& code, const std::string& message, int errnum = 0,
                            const std::string& syscall = "");

  // The errno name of errnum ('EPERM'), or 'E<number>' when the C library does not know it.
  static std::string ErrnoName(int errnum);

  // Adds a number property to the JS error (e.g. how many messages were sent before the failure).
  ErrnoError& WithNumber(const std::string& name, double value);

  const char* what() const noexcept override { return message_.c_str(); }
  const std::string& code() const { return code_; }
  int errnum() const { return errnum_; }
  const std::string& syscall() const { return syscall_; }

  // Main thread only.
  Napi::Error ToJs(Napi::Env env) const;

 private:
  std::string code_;
  int errnum_;
  std::string syscall_;
  std::string message_;
  std::vector<std::pair<std::string, double>> numbers_;
};

// A call that lib/ should never make (a wrong argument): a TypeError with the same fields as a native
// failure (code E_INTERNAL, errno 0), so fromNative() can wrap it.
Napi::Error ArgumentError(Napi::Env env, const std::string& message);
