#include "heap_policy.h"

#include <malloc.h>

#include "errno_error.h"

Napi::Value KeepFreedHeap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber() || !info[1].IsNumber()) throw ArgumentError(env, "keepFreedHeap(mmapThresholdBytes, trimThresholdBytes)");
  const int64_t mmapThreshold = info[0].As<Napi::Number>().Int64Value();
  const int64_t trimThreshold = info[1].As<Napi::Number>().Int64Value();
  if (mmapThreshold <= 0 || mmapThreshold > (1 << 30) || trimThreshold <= 0 || trimThreshold > (1 << 30)) {
    throw ArgumentError(env, "keepFreedHeap: thresholds must be in 1..2^30 bytes");
  }
  const bool mmapSet = mallopt(M_MMAP_THRESHOLD, static_cast<int>(mmapThreshold)) == 1;
  const bool trimSet = mallopt(M_TRIM_THRESHOLD, static_cast<int>(trimThreshold)) == 1;
  return Napi::Boolean::New(env, mmapSet && trimSet);
}
