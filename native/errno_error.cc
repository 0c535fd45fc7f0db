#include "errno_error.h"

#include <string.h>

ErrnoError::ErrnoError(std::string code, int errnum, std::string syscall, std::string message)
    : code_(std::move(code)), errnum_(errnum), syscall_(std::move(syscall)), message_(std::move(message)) {}

ErrnoError ErrnoError::FromErrno(int errnum, const std::string& syscall, const std::string& doing) {
  return ErrnoError(ErrnoName(errnum), errnum, syscall, doing + ": " + strerror(errnum));
}

ErrnoError ErrnoError::Project(const std::string& code, const std::string& message, int errnum,
                               const std::string& syscall) {
  return ErrnoError(code, errnum, syscall, message);
}

std::string ErrnoError::ErrnoName(int errnum) {
  const char* name = strerrorname_np(errnum);
  return name != nullptr ? std::string(name) : "E" + std::to_string(errnum);
}

ErrnoError& ErrnoError::WithNumber(const std::string& name, double value) {
  numbers_.emplace_back(name, value);
  return *this;
}

Napi::Error ArgumentError(Napi::Env env, const std::string& message) {
  Napi::Error error = Napi::TypeError::New(env, message);
  Napi::Object object = error.Value();
  object.Set("code", "E_INTERNAL");
  object.Set("errno", 0);
  object.Set("syscall", "");
  return error;
}

Napi::Error ErrnoError::ToJs(Napi::Env env) const {
  Napi::Error error = Napi::Error::New(env, message_);
  Napi::Object object = error.Value();
  object.Set("code", code_);
  object.Set("errno", errnum_);
  object.Set("syscall", syscall_);
  for (const auto& [name, value] : numbers_) object.Set(name, value);
  return error;
}
