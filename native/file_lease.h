// fcntl(2) read leases and fstatfs(2) for lib/image-input.ts: Node has no binding for either.
#pragma once

#include <napi.h>

// takeReadLease(fd): F_SETLEASE F_RDLCK on an fd opened read-only, with the break signal turned off
// (SIGIO would end the process); true when held, false when the kernel refuses a lease on this file
// (open for writing somewhere: EAGAIN; not the caller's and no CAP_LEASE: EACCES; leases off or not
// supported by the file system: EINVAL); throws on any other failure.
Napi::Value TakeReadLease(const Napi::CallbackInfo& info);

// readLeaseHeld(fd): F_GETLEASE is still F_RDLCK, i.e. nobody has opened the file for writing or
// truncated it since the lease was taken (such an opener waits in open() until the lease is released).
Napi::Value ReadLeaseHeld(const Napi::CallbackInfo& info);

// fileSystemMagic(fd): fstatfs's f_type of the file system holding fd.
Napi::Value FileSystemMagic(const Napi::CallbackInfo& info);
