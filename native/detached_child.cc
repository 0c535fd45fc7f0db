#include "detached_child.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "errno_error.h"

extern char** environ;

namespace {

// Descriptors the child's dup2 reads from sit above the standard ones, so no dup2 has the same fd on both
// sides (that would leave close-on-exec set).
constexpr int kSourceFdFloor = 10;

// Closes the descriptors it owns on every path out.
struct Descriptors {
  std::vector<int> fds;
  ~Descriptors() {
    for (int fd : fds) close(fd);
  }
  int Keep(int fd) {
    fds.push_back(fd);
    return fd;
  }
  // Hands one over to the caller: it is no longer closed here.
  int Release(int fd) {
    for (auto it = fds.begin(); it != fds.end(); ++it) {
      if (*it == fd) {
        fds.erase(it);
        break;
      }
    }
    return fd;
  }
};

}  // namespace

Napi::Value SpawnDetached(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString() || !info[1].IsArray() || !info[2].IsNumber()) throw ArgumentError(env, "spawnDetached(program, args, inheritFd)");
  const std::string program = info[0].As<Napi::String>().Utf8Value();
  std::vector<std::string> args{program};
  Napi::Array list = info[1].As<Napi::Array>();
  for (uint32_t i = 0; i < list.Length(); i++) args.push_back(list.Get(i).As<Napi::String>().Utf8Value());
  const int inheritFd = info[2].As<Napi::Number>().Int32Value();

  Descriptors owned;
  int toChild[2];
  int fromChild[2];
  if (pipe2(toChild, O_CLOEXEC) != 0) throw ErrnoError::FromErrno(errno, "pipe2", "starting " + program).ToJs(env);
  owned.Keep(toChild[0]);
  owned.Keep(toChild[1]);
  if (pipe2(fromChild, O_CLOEXEC) != 0) throw ErrnoError::FromErrno(errno, "pipe2", "starting " + program).ToJs(env);
  owned.Keep(fromChild[0]);
  owned.Keep(fromChild[1]);
  const int childStdin = owned.Keep(fcntl(toChild[0], F_DUPFD_CLOEXEC, kSourceFdFloor));
  const int childStdout = owned.Keep(fcntl(fromChild[1], F_DUPFD_CLOEXEC, kSourceFdFloor));
  const int childFd3 = inheritFd >= 0 ? owned.Keep(fcntl(inheritFd, F_DUPFD_CLOEXEC, kSourceFdFloor)) : -1;
  if (childStdin < 0 || childStdout < 0 || (inheritFd >= 0 && childFd3 < 0)) throw ErrnoError::FromErrno(errno, "fcntl", "starting " + program).ToJs(env);
  // Our stderr is close-on-exec when Node made it a pipe: the child gets it by an explicit dup2 (none if it is closed).
  const int childStderr = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, kSourceFdFloor);
  if (childStderr >= 0) owned.Keep(childStderr);

  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attributes;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attributes);
  posix_spawn_file_actions_adddup2(&actions, childStdin, STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&actions, childStdout, STDOUT_FILENO);
  if (childStderr >= 0) posix_spawn_file_actions_adddup2(&actions, childStderr, STDERR_FILENO);
  if (childFd3 >= 0) posix_spawn_file_actions_adddup2(&actions, childFd3, 3);
  // Its own session: a Ctrl-C or a kill of our process group must not take it down with us.
  sigset_t all;
  sigset_t none;
  sigfillset(&all);
  sigemptyset(&none);
  posix_spawnattr_setsigdefault(&attributes, &all);
  posix_spawnattr_setsigmask(&attributes, &none);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  const int failed = posix_spawn(&pid, program.c_str(), &actions, &attributes, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attributes);
  if (failed != 0) throw ErrnoError::FromErrno(failed, "posix_spawn", "starting " + program).ToJs(env);

  Napi::Object child = Napi::Object::New(env);
  child.Set("pid", Napi::Number::New(env, pid));
  child.Set("input", Napi::Number::New(env, owned.Release(toChild[1])));
  child.Set("output", Napi::Number::New(env, owned.Release(fromChild[0])));
  return child;
}

Napi::Value ReapChild(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber() || !info[1].IsBoolean()) throw ArgumentError(env, "reapChild(pid, wait)");
  const pid_t pid = info[0].As<Napi::Number>().Int32Value();
  const bool wait = info[1].As<Napi::Boolean>().Value();
  int status = 0;
  pid_t reaped;
  do {
    reaped = waitpid(pid, &status, wait ? 0 : WNOHANG);
  } while (reaped < 0 && errno == EINTR);
  if (reaped < 0) throw ErrnoError::FromErrno(errno, "waitpid", "waiting for process " + std::to_string(pid)).ToJs(env);
  if (reaped == 0) return env.Undefined();
  Napi::Object ended = Napi::Object::New(env);
  ended.Set("code", WIFEXITED(status) ? Napi::Value(Napi::Number::New(env, WEXITSTATUS(status))) : env.Null());
  ended.Set("signal", WIFSIGNALED(status) ? Napi::Value(Napi::Number::New(env, WTERMSIG(status))) : env.Null());
  return ended;
}
