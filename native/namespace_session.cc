#include "namespace_session.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "errno_error.h"
#include "owning_user_namespace.h"

namespace {

// 2^53 - 1: the largest integer a JS number holds exactly.
constexpr double kMaxSafeInteger = 9007199254740991.0;
constexpr double kMaxUint32 = 4294967295.0;
// uid/gid -1 means "leave unchanged" to the kernel, never a real owner.
constexpr double kMaxOwnerId = kMaxUint32 - 1;

double IntegerValue(Napi::Env env, Napi::Value value, const std::string& what, double min, double max) {
  const double number = value.IsNumber() ? value.As<Napi::Number>().DoubleValue() : std::nan("");
  if (!std::isfinite(number) || std::floor(number) != number || number < min || number > max) {
    throw ArgumentError(env, what + " must be an integer from " + std::to_string(static_cast<int64_t>(min)) + " to " +
                                 std::to_string(static_cast<int64_t>(max)) + ", got " +
                                 value.ToString().Utf8Value());
  }
  return number;
}

double IntegerArgument(const Napi::CallbackInfo& info, size_t index, const std::string& what, double min, double max) {
  return IntegerValue(info.Env(), info[index], what, min, max);
}

double IntegerField(Napi::Env env, Napi::Value object, const char* field, const std::string& what, double min,
                    double max) {
  if (!object.IsObject()) throw ArgumentError(env, what + " must be an object");
  return IntegerValue(env, object.As<Napi::Object>().Get(field), what + "." + field, min, max);
}

int32_t QueueIdArgument(const Napi::CallbackInfo& info, const std::string& method) {
  return static_cast<int32_t>(IntegerArgument(info, 0, method + ": id", 0, std::numeric_limits<int32_t>::max()));
}

std::string StringArgument(const Napi::CallbackInfo& info, size_t index, const std::string& what) {
  if (!info[index].IsString()) throw ArgumentError(info.Env(), what + " must be a string");
  std::string text = info[index].As<Napi::String>().Utf8Value();
  if (text.find('\0') != std::string::npos) throw ArgumentError(info.Env(), what + " must not contain a NUL character");
  return text;
}

// The property names of a QueueStat object, made once per result: tens of thousands of stats cross at once.
class QueueStatWriter {
 public:
  explicit QueueStatWriter(Napi::Env env) : env_(env) {
    for (size_t i = 0; i < kFields; i++) keys_[i] = Napi::String::New(env, kNames[i]);
  }

  // One napi_define_properties call per object, with the names above.
  Napi::Object ToJs(const QueueStat& stat) const {
    const napi_value values[kFields] = {
        Napi::Number::New(env_, stat.id),
        Napi::Number::New(env_, stat.id % 32768),
        Napi::Number::New(env_, stat.id / 32768),
        Napi::Number::New(env_, stat.key),
        Napi::Number::New(env_, stat.uid),
        Napi::Number::New(env_, stat.gid),
        Napi::Number::New(env_, stat.cuid),
        Napi::Number::New(env_, stat.cgid),
        Napi::Number::New(env_, stat.mode),
        Napi::BigInt::New(env_, stat.stime),
        Napi::BigInt::New(env_, stat.rtime),
        Napi::BigInt::New(env_, stat.ctime),
        Napi::Number::New(env_, static_cast<double>(stat.cbytes)),
        Napi::Number::New(env_, static_cast<double>(stat.qnum)),
        Napi::Number::New(env_, static_cast<double>(stat.qbytes)),
        Napi::Number::New(env_, stat.lspid),
        Napi::Number::New(env_, stat.lrpid),
    };
    napi_property_descriptor descriptors[kFields];
    for (size_t i = 0; i < kFields; i++) {
      descriptors[i] = {nullptr, keys_[i], nullptr, nullptr, nullptr, values[i], napi_default_jsproperty, nullptr};
    }
    Napi::Object object = Napi::Object::New(env_);
    NAPI_THROW_IF_FAILED(env_, napi_define_properties(env_, object, kFields, descriptors), Napi::Object());
    return object;
  }

 private:
  static constexpr size_t kFields = 17;
  static constexpr const char* kNames[kFields] = {"id",    "index", "seq",   "key",    "uid",  "gid",
                                                  "cuid",  "cgid",  "mode",  "stime",  "rtime", "ctime",
                                                  "cbytes", "qnum", "qbytes", "lspid", "lrpid"};
  Napi::Env env_;
  napi_value keys_[kFields];
};

// Must match QUEUE_STAT_FIELDS in lib/native.ts (test/native checks it): one double per field, exact
// (ids, counts and seconds all stay below 2^53).
constexpr size_t kPackedStatFields = 15;

void PackQueueStat(const QueueStat& stat, double* out) {
  const double fields[kPackedStatFields] = {
      static_cast<double>(stat.id),     static_cast<double>(stat.key),    static_cast<double>(stat.uid),
      static_cast<double>(stat.gid),    static_cast<double>(stat.cuid),   static_cast<double>(stat.cgid),
      static_cast<double>(stat.mode),   static_cast<double>(stat.stime),  static_cast<double>(stat.rtime),
      static_cast<double>(stat.ctime),  static_cast<double>(stat.cbytes), static_cast<double>(stat.qnum),
      static_cast<double>(stat.qbytes), static_cast<double>(stat.lspid),  static_cast<double>(stat.lrpid)};
  memcpy(out, fields, sizeof(fields));
}

Napi::Float64Array PackedStatsToJs(Napi::Env env, const std::vector<QueueStat>& stats) {
  Napi::Float64Array array = Napi::Float64Array::New(env, stats.size() * kPackedStatFields);
  for (size_t i = 0; i < stats.size(); i++) PackQueueStat(stats[i], array.Data() + i * kPackedStatFields);
  return array;
}

Napi::Object QueueStatToJs(Napi::Env env, const QueueStat& stat) { return QueueStatWriter(env).ToJs(stat); }

Napi::Value PackedBytesToJs(Napi::Env env, PackedBatch& packed) {
  const size_t size = packed.size();
  uint8_t* bytes = packed.Release();
  if (bytes == nullptr) return Napi::Buffer<uint8_t>::New(env, 0);
  // The Buffer takes the batch's memory as it is: no copy, freed when JS lets go of it.
  return Napi::Buffer<uint8_t>::New(env, bytes, size, [](Napi::Env, uint8_t* data) { free(data); });
}

// A per-queue failure inside a batch's result: the fields of a native rejection, as plain data.
Napi::Object ErrorFieldsToJs(Napi::Env env, const ErrnoError& error) {
  Napi::Object object = Napi::Object::New(env);
  object.Set("code", error.code());
  object.Set("errno", error.errnum());
  object.Set("syscall", error.syscall());
  object.Set("message", error.what());
  return object;
}

Napi::Array ArrayArgument(const Napi::CallbackInfo& info, size_t index, const std::string& what) {
  if (!info[index].IsArray()) throw ArgumentError(info.Env(), what + " must be an array");
  return info[index].As<Napi::Array>();
}

// Requests of a batch, packed: `fields` float64s per queue (the field lists in lib/native.ts).
Napi::Float64Array Float64ArrayArgument(const Napi::CallbackInfo& info, size_t index, const std::string& what,
                                        size_t fields) {
  if (!info[index].IsTypedArray() || info[index].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array) {
    throw ArgumentError(info.Env(), what + " must be a Float64Array");
  }
  Napi::Float64Array array = info[index].As<Napi::Float64Array>();
  if (array.ElementLength() % fields != 0) {
    throw ArgumentError(info.Env(), what + " must hold " + std::to_string(fields) + " numbers per queue");
  }
  return array;
}

// One field of request `index` in a packed request array, checked to be an integer in [min, max].
class PackedField {
 public:
  PackedField(Napi::Env env, const Napi::Float64Array& array, size_t fields, size_t index, const char* what)
      : env_(env), values_(array.Data() + index * fields), index_(index), what_(what) {}

  double operator()(size_t offset, const char* name, double min, double max) const {
    const double value = values_[offset];
    if (!std::isfinite(value) || std::floor(value) != value || value < min || value > max) {
      throw ArgumentError(env_, std::string(what_) + "[" + std::to_string(index_) + "]." + name +
                                    " must be an integer from " + std::to_string(static_cast<int64_t>(min)) + " to " +
                                    std::to_string(static_cast<int64_t>(max)) + ", got " + std::to_string(value));
    }
    return value;
  }

 private:
  Napi::Env env_;
  const double* values_;
  size_t index_;
  const char* what_;
};

// The optional `as` argument of writeSysctl/sysctlWritable/writeMqueueLimit: { uid, gid }, or undefined for the session's own ids.
std::optional<SysctlWriter> WriterArgument(const Napi::CallbackInfo& info, size_t index, const std::string& method) {
  if (info[index].IsUndefined()) return std::nullopt;
  const std::string what = method + ": as";
  return SysctlWriter{static_cast<uid_t>(IntegerField(info.Env(), info[index], "uid", what, 0, kMaxOwnerId)),
                      static_cast<gid_t>(IntegerField(info.Env(), info[index], "gid", what, 0, kMaxOwnerId))};
}

std::string MsgSysctlNameArgument(const Napi::CallbackInfo& info, const std::string& method) {
  const std::string name = StringArgument(info, 0, method + ": name");
  if (!KernelSysctls::IsMsgSysctl(name)) {
    throw ArgumentError(info.Env(), method + ": name must be msgmax, msgmnb, msgmni or msg_next_id, got '" + name + "'");
  }
  return name;
}

NamespaceThread::ResultBuilder Undefined() {
  return [](Napi::Env env) { return env.Undefined(); };
}

}  // namespace

void NamespaceSession::Register(Napi::Env env) {
  Napi::Function constructor = DefineClass(
      env, "NativeNamespace",
      {
          InstanceMethod<&NamespaceSession::ListQueues>("listQueues"),
          InstanceMethod<&NamespaceSession::ListQueueStats>("listQueueStats"),
          InstanceMethod<&NamespaceSession::StatQueue>("statQueue"),
          InstanceMethod<&NamespaceSession::CopyMessages>("copyMessages"),
          InstanceMethod<&NamespaceSession::ReadSysctls>("readSysctls"),
          InstanceMethod<&NamespaceSession::WriteSysctl>("writeSysctl"),
          InstanceMethod<&NamespaceSession::SysctlWritable>("sysctlWritable"),
          InstanceMethod<&NamespaceSession::UserNamespace>("userNamespace"),
          InstanceMethod<&NamespaceSession::CreateQueue>("createQueue"),
          InstanceMethod<&NamespaceSession::SetQueue>("setQueue"),
          InstanceMethod<&NamespaceSession::SendMessages>("sendMessages"),
          InstanceMethod<&NamespaceSession::RemoveQueue>("removeQueue"),
          InstanceMethod<&NamespaceSession::CreateQueues>("createQueues"),
          InstanceMethod<&NamespaceSession::CopyQueues>("copyQueues"),
          InstanceMethod<&NamespaceSession::SendQueueMessages>("sendQueueMessages"),
          InstanceMethod<&NamespaceSession::Probe>("probe"),
          InstanceMethod<&NamespaceSession::ListPosixQueues>("listPosixQueues"),
          InstanceMethod<&NamespaceSession::TakePosixMessages>("takePosixMessages"),
          InstanceMethod<&NamespaceSession::CreatePosixQueue>("createPosixQueue"),
          InstanceMethod<&NamespaceSession::SendPosixMessages>("sendPosixMessages"),
          InstanceMethod<&NamespaceSession::RemovePosixQueue>("removePosixQueue"),
          InstanceMethod<&NamespaceSession::ReadMqueueLimits>("readMqueueLimits"),
          InstanceMethod<&NamespaceSession::WriteMqueueLimit>("writeMqueueLimit"),
          InstanceMethod<&NamespaceSession::Close>("close"),
      });
  env.SetInstanceData<Napi::FunctionReference>(new Napi::FunctionReference(Napi::Persistent(constructor)));
}

Napi::Value NamespaceSession::OpenNamespace(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  napi_deferred opened;
  napi_value promise;
  NAPI_THROW_IF_FAILED(env, napi_create_promise(env, &opened, &promise), Napi::Value());
  try {
    const std::string path = StringArgument(info, 0, "openNamespace: nsPath");
    Napi::Object object = env.GetInstanceData<Napi::FunctionReference>()->New({Napi::String::New(env, path)});
    Unwrap(object)->Start(env, opened);
  } catch (const Napi::Error& error) {
    napi_reject_deferred(env, opened, error.Value());
  } catch (const std::exception& error) {
    napi_reject_deferred(env, opened,
                         ErrnoError::Project("E_INTERNAL", std::string("openNamespace: ") + error.what()).ToJs(env).Value());
  }
  return Napi::Value(env, promise);
}

NamespaceSession::NamespaceSession(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<NamespaceSession>(info),
      target_(StringArgument(info, 0, "NativeNamespace: path")),
      calls_(target_),
      sysctls_(target_),
      posixCalls_(target_) {
  info.This().As<Napi::Object>().DefineProperty(
      Napi::PropertyDescriptor::Value("path", Napi::String::New(info.Env(), target_.path()), napi_enumerable));
}

NamespaceSession::~NamespaceSession() { thread_.reset(); }

void NamespaceSession::Start(Napi::Env env, napi_deferred opened) {
  // The session object must outlive the open job, which resolves to it.
  Ref();
  NamespaceSession* session = this;
  auto onOpened = [session](Napi::Env) -> Napi::Value { return session->Value(); };
  auto afterOpen = [session](Napi::Env, bool succeeded) {
    if (!succeeded) session->thread_->JoinEnded();
    session->Unref();
  };
  try {
    thread_ = std::make_unique<NamespaceThread>(env, target_, opened, onOpened, afterOpen);
  } catch (...) {
    Unref();
    throw;
  }
}

template <typename Prepare>
Napi::Value NamespaceSession::RunJob(const Napi::CallbackInfo& info, Prepare prepare) {
  Napi::Env env = info.Env();
  napi_deferred deferred;
  napi_value promise;
  NAPI_THROW_IF_FAILED(env, napi_create_promise(env, &deferred, &promise), Napi::Value());
  try {
    if (!thread_) throw ArgumentError(env, "this NativeNamespace was not made by openNamespace()");
    NamespaceThread::JobWork work = prepare(env);
    thread_->Enqueue(env, std::move(work), deferred);
  } catch (const Napi::Error& error) {
    napi_reject_deferred(env, deferred, error.Value());
  }
  return Napi::Value(env, promise);
}

Napi::Value NamespaceSession::ListQueues(const Napi::CallbackInfo& info) {
  return RunJob(info, [this](Napi::Env) -> NamespaceThread::JobWork {
    const MsgQueueCalls* calls = &calls_;
    return [calls]() -> NamespaceThread::ResultBuilder {
      auto queues = std::make_shared<std::vector<QueueStat>>(calls->ListQueues());
      return [queues](Napi::Env env) -> Napi::Value {
        Napi::Array array = Napi::Array::New(env, queues->size());
        const QueueStatWriter stats(env);
        for (size_t index = 0; index < queues->size(); index++) array.Set(index, stats.ToJs((*queues)[index]));
        return array;
      };
    };
  });
}

Napi::Value NamespaceSession::ListQueueStats(const Napi::CallbackInfo& info) {
  return RunJob(info, [this](Napi::Env) -> NamespaceThread::JobWork {
    const MsgQueueCalls* calls = &calls_;
    return [calls]() -> NamespaceThread::ResultBuilder {
      auto queues = std::make_shared<std::vector<QueueStat>>(calls->ListQueues());
      return [queues](Napi::Env env) -> Napi::Value { return PackedStatsToJs(env, *queues); };
    };
  });
}

Napi::Value NamespaceSession::StatQueue(const Napi::CallbackInfo& info) {
  return RunJob(info, [this, &info](Napi::Env) -> NamespaceThread::JobWork {
    const int32_t id = QueueIdArgument(info, "statQueue");
    const MsgQueueCalls* calls = &calls_;
    return [calls, id]() -> NamespaceThread::ResultBuilder {
      const QueueStat stat = calls->StatQueue(id);
      return [stat](Napi::Env env) -> Napi::Value { return QueueStatToJs(env, stat); };
    };
  });
}

Napi::Value NamespaceSession::CopyMessages(const Napi::CallbackInfo& info) {
  return RunJob(info, [this, &info](Napi::Env) -> NamespaceThread::JobWork {
    const int32_t id = QueueIdArgument(info, "copyMessages");
    const auto first = static_cast<uint32_t>(IntegerArgument(info, 1, "copyMessages: first", 0, kMaxUint32));
    const auto maxCount = static_cast<uint32_t>(IntegerArgument(info, 2, "copyMessages: maxCount", 1, kMaxUint32));
    const auto maxBytes = static_cast<size_t>(IntegerArgument(info, 3, "copyMessages: maxBytes", 1, kMaxSafeInteger));
    const auto bufferSize =
        static_cast<size_t>(IntegerArgument(info, 4, "copyMessages: bufferSize", 0, kMaxSafeInteger));
    const MsgQueueCalls* calls = &calls_;
    return [calls, id, first, maxCount, maxBytes, bufferSize]() -> NamespaceThread::ResultBuilder {
      std::shared_ptr<CopiedBatch> batch = calls->CopyMessages(id, first, maxCount, maxBytes, bufferSize);
      return [batch](Napi::Env env) -> Napi::Value {
        Napi::Object object = Napi::Object::New(env);
        object.Set("data", PackedBytesToJs(env, batch->data));
        object.Set("count", batch->count);
        object.Set("end", batch->end);
        object.Set("bufferSize", static_cast<double>(batch->bufferSize));
        object.Set("statBefore", QueueStatToJs(env, batch->statBefore));
        object.Set("statAfter", QueueStatToJs(env, batch->statAfter));
        return object;
      };
    };
  });
}

Napi::Value NamespaceSession::ReadSysctls(const Napi::CallbackInfo& info) {
  return RunJob(info, [this](Napi::Env) -> NamespaceThread::JobWork {
    const KernelSysctls* sysctls = &sysctls_;
    return [sysctls]() -> NamespaceThread::ResultBuilder {
      const IpcSysctls limits = sysctls->ReadLimits();
      return [limits](Napi::Env env) -> Napi::Value {
        Napi::Object object = Napi::Object::New(env);
        object.Set("msgmax", static_cast<double>(limits.msgmax));
        object.Set("msgmnb", static_cast<double>(limits.msgmnb));
        object.Set("msgmni", static_cast<double>(limits.msgmni));
        object.Set("shmmax", Napi::BigInt::New(env, limits.shmmax));
        object.Set("shmall", Napi::BigInt::New(env, limits.shmall));
        object.Set("shmmni", static_cast<double>(limits.shmmni));
        const char* semNames[4] = {"semmsl", "semmns", "semopm", "semmni"};
        for (size_t i = 0; i < 4; i++) object.Set(semNames[i], static_cast<double>(limits.sem[i]));
        return object;
      };
    };
  });
}

Napi::Value NamespaceSession::WriteSysctl(const Napi::CallbackInfo& info) {
  return RunJob(info, [this, &info](Napi::Env) -> NamespaceThread::JobWork {
    const std::string name = MsgSysctlNameArgument(info, "writeSysctl");
    const auto value = static_cast<int64_t>(IntegerArgument(info, 1, "writeSysctl: value",
                                                            std::numeric_limits<int32_t>::min(),
                                                            std::numeric_limits<int32_t>::max()));
    const std::optional<SysctlWriter> as = WriterArgument(info, 2, "writeSysctl");
    const KernelSysctls* sysctls = &sysctls_;
    return [sysctls, name, value, as]() -> NamespaceThread::ResultBuilder {
      sysctls->Write(name, value, as);
      return Undefined();
    };
  });
}

Napi::Value NamespaceSession::SysctlWritable(const Napi::CallbackInfo& info) {
  return RunJob(info, [this, &info](Napi::Env) -> NamespaceThread::JobWork {
    const std::string name = MsgSysctlNameArgument(info, "sysctlWritable");
    const std::optional<SysctlWriter> as = WriterArgument(info, 1, "sysctlWritable");
    const KernelSysctls* sysctls = &sysctls_;
    return [sysctls, name, as]() -> NamespaceThread::ResultBuilder {
      const int errnum = sysctls->WritableErrno(name, as);
      return [errnum](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, errnum); };
    };
  });
}

Napi::Value NamespaceSession::UserNamespace(const Napi::CallbackInfo& info) {
  return RunJob(info, [this](Napi::Env) -> NamespaceThread::JobWork {
    const NamespaceTarget* target = &target_;
    return [target]() -> NamespaceThread::ResultBuilder {
      auto owner = std::make_shared<OwningUserNamespace>(ReadOwningUserNamespace(*target));
      return [owner](Napi::Env env) -> Napi::Value {
        Napi::Object object = Napi::Object::New(env);
        object.Set("device", std::to_string(owner->device));
        object.Set("inode", std::to_string(owner->inode));
        object.Set("callerOwn", owner->callerOwn);
        object.Set("uidMap", owner->uidMap);
        object.Set("gidMap", owner->gidMap);
        object.Set("mapSource", owner->mapSource);
        object.Set("mapPid", owner->mapPid);
        return object;
      };
    };
  });
}

Napi::Value NamespaceSession::CreateQueue(const Napi::CallbackInfo& info) {
  return RunJob(info, [this, &info](Napi::Env env) -> NamespaceThread::JobWork {
    const Napi::Value request = info[0];
    const std::string what = "createQueue: request";
    CreateQueueRequest create{};
    create.key = static_cast<uint32_t>(IntegerField(env, request, "key", what, 0, kMaxUint32));
    create.id = static_cast<int32_t>(IntegerField(env, request, "id", what, 0, std::numeric_limits<int32_t>::max()));
    create.mode = static_cast<uint32_t>(IntegerField(env, request, "mode", what, 0, 0777));
    create.cuid = static_cast<uid_t>(IntegerField(env, request, "cuid", what, 0, kMaxOwnerId));
    create.cgid = static_cast<gid_t>(IntegerField(env, request, "cgid", what, 0, kMaxOwnerId));
    const MsgQueueCalls* calls = &calls_;
    return [calls, create]() -> NamespaceThread::ResultBuilder {
      const int32_t id = calls->CreateQueue(create);
      return [id](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, id); };
    };
  });
}

Napi::Value NamespaceSession::SetQueue(const Napi::CallbackInfo& info) {
  return RunJob(info, [this, &info](Napi::Env env) -> NamespaceThread::JobWork {
    const int32_t id = QueueIdArgument(info, "setQueue");
    const Napi::Value request = info[1];
    const std::string what = "setQueue: request";
    SetQueueRequest set{};
    set.uid = static_cast<uid_t>(IntegerField(env, request, "uid", what, 0, kMaxOwnerId));
    set.gid = static_cast<gid_t>(IntegerField(env, request, "gid", what, 0, kMaxOwnerId));
    set.mode = static_cast<uint32_t>(IntegerField(env, request, "mode", what, 0, 0777));
    set.qbytes = static_cast<uint64_t>(IntegerField(env, request, "qbytes", what, 0, kMaxSafeInteger));
    const MsgQueueCalls* calls = &calls_;
    return [calls, id, set]() -> NamespaceThread::ResultBuilder {
      calls->SetQueue(id, set);
      return Undefined();
    };
  });
}

Napi::Value NamespaceSession::SendMessages(const Napi::CallbackInfo& info) {
  return RunJob(info, [this, &info](Napi::Env env) -> NamespaceThread::JobWork {
    const int32_t id = QueueIdArgument(info, "sendMessages");
    if (!info[1].IsBuffer()) throw ArgumentError(env, "sendMessages: packed must be a Buffer");
    const auto count = static_cast<uint32_t>(IntegerArgument(info, 2, "sendMessages: count", 0, kMaxUint32));
    Napi::Buffer<uint8_t> packed = info[1].As<Napi::Buffer<uint8_t>>();
    const std::string problem = PackedBatch::Validate(packed.Data(), packed.Length(), count);
    if (!problem.empty()) throw ArgumentError(env, "sendMessages: packed buffer: " + problem);
    // One copy per batch: the session thread never reads memory that JS owns and may reuse or detach.
    auto bytes = std::make_shared<std::vector<uint8_t>>(packed.Data(), packed.Data() + packed.Length());
    const MsgQueueCalls* calls = &calls_;
    return [calls, id, bytes, count]() -> NamespaceThread::ResultBuilder {
      const uint32_t sent = calls->SendMessages(id, bytes->data(), count);
      return [sent](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, sent); };
    };
  });
}

Napi::Value NamespaceSession::RemoveQueue(const Napi::CallbackInfo& info) {
  return RunJob(info, [this, &info](Napi::Env) -> NamespaceThread::JobWork {
    const int32_t id = QueueIdArgument(info, "removeQueue");
    const MsgQueueCalls* calls = &calls_;
    return [calls, id]() -> NamespaceThread::ResultBuilder {
      calls->RemoveQueue(id);
      return Undefined();
    };
  });
}

Napi::Value NamespaceSession::CreateQueues(const Napi::CallbackInfo& info) {
  return RunJob(info, [this, &info](Napi::Env env) -> NamespaceThread::JobWork {
    // NEW_QUEUE_FIELDS of lib/native.ts, one float64 each per queue.
    constexpr size_t kRequestFields = 8;
    const Napi::Float64Array packed = Float64ArrayArgument(info, 0, "createQueues: requests", kRequestFields);
    std::vector<NewQueue> queues(packed.ElementLength() / kRequestFields);
    for (size_t index = 0; index < queues.size(); index++) {
      const PackedField field(env, packed, kRequestFields, index, "createQueues: requests");
      NewQueue& queue = queues[index];
      queue.create.id = static_cast<int32_t>(field(0, "id", 0, std::numeric_limits<int32_t>::max()));
      queue.create.key = static_cast<uint32_t>(field(1, "key", 0, kMaxUint32));
      queue.create.mode = static_cast<uint32_t>(field(2, "mode", 0, 0777));
      queue.create.cuid = static_cast<uid_t>(field(3, "cuid", 0, kMaxOwnerId));
      queue.create.cgid = static_cast<gid_t>(field(4, "cgid", 0, kMaxOwnerId));
      queue.set.uid = static_cast<uid_t>(field(5, "uid", 0, kMaxOwnerId));
      queue.set.gid = static_cast<gid_t>(field(6, "gid", 0, kMaxOwnerId));
      queue.set.mode = queue.create.mode;
      queue.set.qbytes = static_cast<uint64_t>(field(7, "qbytes", 0, kMaxSafeInteger));
    }
    const MsgQueueCalls* calls = &calls_;
    return [calls, queues = std::move(queues)]() -> NamespaceThread::ResultBuilder {
      auto result = std::make_shared<CreatedQueues>(calls->CreateQueues(queues));
      return [result](Napi::Env env) -> Napi::Value {
        Napi::Object object = Napi::Object::New(env);
        Napi::Array created = Napi::Array::New(env, result->created.size());
        for (size_t i = 0; i < result->created.size(); i++) created.Set(i, result->created[i]);
        object.Set("created", created);
        if (result->failure) {
          Napi::Object failure = ErrorFieldsToJs(env, *result->failure);
          failure.Set("index", static_cast<double>(result->failedIndex));
          failure.Set("queueCreated", result->failedQueueCreated);
          object.Set("failure", failure);
        }
        return object;
      };
    };
  });
}

Napi::Value NamespaceSession::CopyQueues(const Napi::CallbackInfo& info) {
  return RunJob(info, [this, &info](Napi::Env env) -> NamespaceThread::JobWork {
    // COPY_REQUEST_FIELDS of lib/native.ts, one float64 each per queue.
    constexpr size_t kRequestFields = 5;
    const Napi::Float64Array packed = Float64ArrayArgument(info, 0, "copyQueues: requests", kRequestFields);
    std::vector<QueueCopyRequest> requests(packed.ElementLength() / kRequestFields);
    for (size_t index = 0; index < requests.size(); index++) {
      const PackedField field(env, packed, kRequestFields, index, "copyQueues: requests");
      requests[index].id = static_cast<int32_t>(field(0, "id", 0, std::numeric_limits<int32_t>::max()));
      requests[index].maxCount = static_cast<uint32_t>(field(1, "maxCount", 0, kMaxUint32));
      requests[index].maxBytes = static_cast<size_t>(field(2, "maxBytes", 1, kMaxSafeInteger));
      requests[index].bufferSize = static_cast<size_t>(field(3, "bufferSize", 0, kMaxSafeInteger));
      requests[index].statBefore = field(4, "statBefore", 0, 1) == 1;
    }
    const MsgQueueCalls* calls = &calls_;
    return [calls, requests = std::move(requests)]() -> NamespaceThread::ResultBuilder {
      std::shared_ptr<CopiedQueues> batch = calls->CopyQueues(requests);
      return [batch](Napi::Env env) -> Napi::Value {
        constexpr size_t kPartFields = 5;  // COPIED_PART_FIELDS in lib/native.ts
        const size_t count = batch->queues.size();
        Napi::Float64Array parts = Napi::Float64Array::New(env, count * kPartFields);
        Napi::Float64Array before = Napi::Float64Array::New(env, count * kPackedStatFields);
        Napi::Float64Array after = Napi::Float64Array::New(env, count * kPackedStatFields);
        Napi::Array errors = Napi::Array::New(env);
        for (size_t i = 0; i < count; i++) {
          const CopiedQueue& copied = batch->queues[i];
          double* part = parts.Data() + i * kPartFields;
          part[0] = static_cast<double>(copied.offset);
          part[1] = static_cast<double>(copied.length);
          part[2] = copied.count;
          part[3] = copied.end ? 1 : 0;
          part[4] = static_cast<double>(copied.bufferSize);
          if (copied.error) {
            Napi::Object error = ErrorFieldsToJs(env, *copied.error);
            error.Set("index", static_cast<double>(i));
            errors.Set(errors.Length(), error);
            continue;
          }
          PackQueueStat(copied.statBefore, before.Data() + i * kPackedStatFields);
          PackQueueStat(copied.statAfter, after.Data() + i * kPackedStatFields);
        }
        Napi::Object object = Napi::Object::New(env);
        object.Set("data", PackedBytesToJs(env, batch->data));
        object.Set("parts", parts);
        object.Set("statsBefore", before);
        object.Set("statsAfter", after);
        object.Set("errors", errors);
        return object;
      };
    };
  });
}

Napi::Value NamespaceSession::SendQueueMessages(const Napi::CallbackInfo& info) {
  return RunJob(info, [this, &info](Napi::Env env) -> NamespaceThread::JobWork {
    const Napi::Array idArray = ArrayArgument(info, 0, "sendQueueMessages: ids");
    const Napi::Array countArray = ArrayArgument(info, 1, "sendQueueMessages: counts");
    if (idArray.Length() != countArray.Length()) throw ArgumentError(env, "sendQueueMessages: ids and counts differ in length");
    if (!info[2].IsBuffer()) throw ArgumentError(env, "sendQueueMessages: packed must be a Buffer");
    std::vector<int32_t> ids(idArray.Length());
    std::vector<uint32_t> counts(idArray.Length());
    double total = 0;
    for (uint32_t i = 0; i < idArray.Length(); i++) {
      ids[i] = static_cast<int32_t>(IntegerValue(env, idArray.Get(i), "sendQueueMessages: ids[" + std::to_string(i) + "]",
                                                 0, std::numeric_limits<int32_t>::max()));
      counts[i] = static_cast<uint32_t>(IntegerValue(env, countArray.Get(i),
                                                     "sendQueueMessages: counts[" + std::to_string(i) + "]", 0, kMaxUint32));
      total += counts[i];
    }
    if (total > kMaxUint32) throw ArgumentError(env, "sendQueueMessages: more than 2^32-1 messages");
    Napi::Buffer<uint8_t> packed = info[2].As<Napi::Buffer<uint8_t>>();
    const std::string problem = PackedBatch::Validate(packed.Data(), packed.Length(), static_cast<uint32_t>(total));
    if (!problem.empty()) throw ArgumentError(env, "sendQueueMessages: packed buffer: " + problem);
    // One copy per batch: the session thread never reads memory that JS owns and may reuse or detach.
    auto bytes = std::make_shared<std::vector<uint8_t>>(packed.Data(), packed.Data() + packed.Length());
    const MsgQueueCalls* calls = &calls_;
    return [calls, ids = std::move(ids), counts = std::move(counts), bytes]() -> NamespaceThread::ResultBuilder {
      const uint32_t sent = calls->SendQueueMessages(ids, counts, bytes->data());
      return [sent](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, sent); };
    };
  });
}

Napi::Value NamespaceSession::Probe(const Napi::CallbackInfo& info) {
  return RunJob(info, [this](Napi::Env) -> NamespaceThread::JobWork {
    const MsgQueueCalls* calls = &calls_;
    return [calls]() -> NamespaceThread::ResultBuilder {
      const NamespaceProbe probe = calls->Probe();
      return [probe](Napi::Env env) -> Napi::Value {
        Napi::Object object = Napi::Object::New(env);
        object.Set("msgCopyErrno", probe.msgCopyErrno);
        object.Set("nextIdWritableErrno", probe.nextIdWritableErrno);
        object.Set("effectiveCapabilities", std::to_string(probe.effectiveCapabilities));
        return object;
      };
    };
  });
}

Napi::Value NamespaceSession::Close(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  napi_deferred deferred;
  napi_value promise;
  NAPI_THROW_IF_FAILED(env, napi_create_promise(env, &deferred, &promise), Napi::Value());
  if (thread_) {
    thread_->Close(env, deferred);
  } else {
    napi_reject_deferred(env, deferred, ArgumentError(env, "this NativeNamespace was not made by openNamespace()").Value());
  }
  return Napi::Value(env, promise);
}

// POSIX message queues (native/posix_queue_calls.h).
namespace {

std::string PosixQueueNameArgument(const Napi::CallbackInfo& info, size_t index, const std::string& what) {
  const std::string name = StringArgument(info, index, what);
  if (name.empty() || name.size() > 255 || name.find('/') != std::string::npos || name == "." || name == "..") {
    throw ArgumentError(info.Env(), what + " must be a queue name without '/' of 1 to 255 bytes, got '" + name + "'");
  }
  return name;
}

Napi::Object PosixQueueStatToJs(Napi::Env env, const PosixQueueStat& stat) {
  Napi::Object object = Napi::Object::New(env);
  object.Set("name", stat.name);
  object.Set("mode", stat.mode);
  object.Set("uid", stat.uid);
  object.Set("gid", stat.gid);
  object.Set("maxmsg", static_cast<double>(stat.maxmsg));
  object.Set("msgsize", static_cast<double>(stat.msgsize));
  object.Set("curmsgs", static_cast<double>(stat.curmsgs));
  object.Set("qsize", static_cast<double>(stat.qsize));
  object.Set("notify", stat.notify);
  object.Set("notifySigno", stat.notifySigno);
  object.Set("notifyPid", stat.notifyPid);
  return object;
}

}  // namespace

Napi::Value NamespaceSession::ListPosixQueues(const Napi::CallbackInfo& info) {
  return RunJob(info, [this](Napi::Env) -> NamespaceThread::JobWork {
    const PosixQueueCalls* calls = &posixCalls_;
    return [calls]() -> NamespaceThread::ResultBuilder {
      auto queues = std::make_shared<std::vector<PosixQueueStat>>(calls->ListQueues());
      return [queues](Napi::Env env) -> Napi::Value {
        Napi::Array array = Napi::Array::New(env, queues->size());
        for (size_t index = 0; index < queues->size(); index++) array.Set(index, PosixQueueStatToJs(env, (*queues)[index]));
        return array;
      };
    };
  });
}

Napi::Value NamespaceSession::TakePosixMessages(const Napi::CallbackInfo& info) {
  return RunJob(info, [this, &info](Napi::Env) -> NamespaceThread::JobWork {
    const std::string name = PosixQueueNameArgument(info, 0, "takePosixMessages: name");
    const PosixQueueCalls* calls = &posixCalls_;
    return [calls, name]() -> NamespaceThread::ResultBuilder {
      std::shared_ptr<TakenMessages> taken = calls->TakeAndPutBack(name);
      return [taken](Napi::Env env) -> Napi::Value {
        Napi::Object object = Napi::Object::New(env);
        object.Set("data", Napi::Buffer<uint8_t>::Copy(env, taken->packed.data(), taken->packed.size()));
        object.Set("count", taken->count);
        object.Set("before", PosixQueueStatToJs(env, taken->before));
        object.Set("after", PosixQueueStatToJs(env, taken->after));
        return object;
      };
    };
  });
}

Napi::Value NamespaceSession::CreatePosixQueue(const Napi::CallbackInfo& info) {
  return RunJob(info, [this, &info](Napi::Env env) -> NamespaceThread::JobWork {
    const Napi::Value request = info[0];
    const std::string what = "createPosixQueue: request";
    if (!request.IsObject()) throw ArgumentError(env, what + " must be an object");
    CreatePosixQueueRequest create{};
    const Napi::Value name = request.As<Napi::Object>().Get("name");
    if (!name.IsString()) throw ArgumentError(env, what + ".name must be a string");
    create.name = name.As<Napi::String>().Utf8Value();
    if (create.name.empty() || create.name.size() > 255 || create.name.find('/') != std::string::npos ||
        create.name.find('\0') != std::string::npos || create.name == "." || create.name == "..") {
      throw ArgumentError(env, what + ".name must be a queue name without '/' of 1 to 255 bytes");
    }
    create.mode = static_cast<uint32_t>(IntegerField(env, request, "mode", what, 0, 07777));
    create.uid = static_cast<uid_t>(IntegerField(env, request, "uid", what, 0, kMaxOwnerId));
    create.gid = static_cast<gid_t>(IntegerField(env, request, "gid", what, 0, kMaxOwnerId));
    create.maxmsg = static_cast<int64_t>(IntegerField(env, request, "maxmsg", what, 1, std::numeric_limits<int32_t>::max()));
    create.msgsize = static_cast<int64_t>(IntegerField(env, request, "msgsize", what, 1, std::numeric_limits<int32_t>::max()));
    const PosixQueueCalls* calls = &posixCalls_;
    return [calls, create]() -> NamespaceThread::ResultBuilder {
      calls->CreateQueue(create);
      return Undefined();
    };
  });
}

Napi::Value NamespaceSession::SendPosixMessages(const Napi::CallbackInfo& info) {
  return RunJob(info, [this, &info](Napi::Env env) -> NamespaceThread::JobWork {
    const std::string name = PosixQueueNameArgument(info, 0, "sendPosixMessages: name");
    if (!info[1].IsBuffer()) throw ArgumentError(env, "sendPosixMessages: packed must be a Buffer");
    const auto count = static_cast<uint32_t>(IntegerArgument(info, 2, "sendPosixMessages: count", 0, kMaxUint32));
    Napi::Buffer<uint8_t> packed = info[1].As<Napi::Buffer<uint8_t>>();
    const std::string problem = PosixQueueCalls::ValidatePacked(packed.Data(), packed.Length(), count);
    if (!problem.empty()) throw ArgumentError(env, "sendPosixMessages: packed buffer: " + problem);
    // One copy per batch: the session thread never reads memory that JS owns.
    auto bytes = std::make_shared<std::vector<uint8_t>>(packed.Data(), packed.Data() + packed.Length());
    const PosixQueueCalls* calls = &posixCalls_;
    return [calls, name, bytes, count]() -> NamespaceThread::ResultBuilder {
      const uint32_t sent = calls->SendMessages(name, bytes->data(), count);
      return [sent](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, sent); };
    };
  });
}

Napi::Value NamespaceSession::RemovePosixQueue(const Napi::CallbackInfo& info) {
  return RunJob(info, [this, &info](Napi::Env) -> NamespaceThread::JobWork {
    const std::string name = PosixQueueNameArgument(info, 0, "removePosixQueue: name");
    const PosixQueueCalls* calls = &posixCalls_;
    return [calls, name]() -> NamespaceThread::ResultBuilder {
      calls->RemoveQueue(name);
      return Undefined();
    };
  });
}

Napi::Value NamespaceSession::ReadMqueueLimits(const Napi::CallbackInfo& info) {
  return RunJob(info, [this](Napi::Env) -> NamespaceThread::JobWork {
    const PosixQueueCalls* calls = &posixCalls_;
    return [calls]() -> NamespaceThread::ResultBuilder {
      const MqueueLimits limits = calls->ReadLimits();
      return [limits](Napi::Env env) -> Napi::Value {
        Napi::Object object = Napi::Object::New(env);
        object.Set("queues_max", static_cast<double>(limits.queuesMax));
        object.Set("msg_max", static_cast<double>(limits.msgMax));
        object.Set("msgsize_max", static_cast<double>(limits.msgsizeMax));
        object.Set("msg_default", static_cast<double>(limits.msgDefault));
        object.Set("msgsize_default", static_cast<double>(limits.msgsizeDefault));
        return object;
      };
    };
  });
}

Napi::Value NamespaceSession::WriteMqueueLimit(const Napi::CallbackInfo& info) {
  return RunJob(info, [this, &info](Napi::Env env) -> NamespaceThread::JobWork {
    const std::string name = StringArgument(info, 0, "writeMqueueLimit: name");
    if (!PosixQueueCalls::IsLimitName(name)) {
      throw ArgumentError(env, "writeMqueueLimit: name must be queues_max, msg_max, msgsize_max, msg_default or msgsize_default, got '" + name + "'");
    }
    const auto value = static_cast<int64_t>(IntegerArgument(info, 1, "writeMqueueLimit: value", 0, std::numeric_limits<int32_t>::max()));
    const std::optional<SysctlWriter> as = WriterArgument(info, 2, "writeMqueueLimit");
    const PosixQueueCalls* calls = &posixCalls_;
    return [calls, name, value, as]() -> NamespaceThread::ResultBuilder {
      calls->WriteLimit(name, value, as);
      return Undefined();
    };
  });
}
