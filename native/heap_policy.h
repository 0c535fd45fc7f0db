// mallopt(3) for the command line: lib/cli.ts sets it; the API leaves its embedding process's heap alone.
#pragma once

#include <napi.h>

// keepFreedHeap(mmapThresholdBytes, trimThresholdBytes): allocations below the first come from the heap
// instead of a fresh mmap, and up to the second of free heap is kept instead of returned to the kernel.
// A save or restore allocates and frees buffers of megabytes at a high rate (the addon's copies and
// Node's Buffers alike); with glibc's defaults each is unmapped and faulted in anew. True when both took.
Napi::Value KeepFreedHeap(const Napi::CallbackInfo& info);
