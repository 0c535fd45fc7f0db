// The native addon's surface, declared once: everything in lib/ talks to this interface.
// The addon makes the system calls and knows nothing of the image format.
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { IpcCkptError } from './errors';
import { PACKAGE_ROOT } from './package-info';

/** Every field of one queue's msqid64_ds, as MSG_STAT_ANY / IPC_STAT report it. */
export interface QueueStat {
  /** The full user-visible id (seq * 32768 + index). */
  id: number;
  /** The slot index (id % 32768). */
  index: number;
  /** The sequence number (id / 32768). */
  seq: number;
  /** The key as an unsigned 32-bit number (0 = IPC_PRIVATE). */
  key: number;
  uid: number;
  gid: number;
  cuid: number;
  cgid: number;
  /** Permission bits, 0777 only. */
  mode: number;
  /** Seconds since the epoch (64-bit kernel time_t), as bigint. */
  stime: bigint;
  rtime: bigint;
  ctime: bigint;
  /** Bytes currently in the queue. */
  cbytes: number;
  /** Messages currently in the queue. */
  qnum: number;
  /** The queue's byte limit. */
  qbytes: number;
  lspid: number;
  lrpid: number;
}

/** The limits of one IPC namespace (what v16's IPC_NS holds), read from /proc/sys/kernel on its thread. */
export interface IpcSysctls {
  msgmax: number;
  msgmnb: number;
  msgmni: number;
  shmmax: bigint;
  shmall: bigint;
  shmmni: number;
  /** The four fields of /proc/sys/kernel/sem. */
  semmsl: number;
  semmns: number;
  semopm: number;
  semmni: number;
}

/** The sysctls a namespace session can write. */
export type MsgSysctlName = 'msgmax' | 'msgmnb' | 'msgmni' | 'msg_next_id';

/**
 * Packed message batch, the one layout used in both directions (copy and send):
 * per message, little-endian: int64 type, uint32 size, then `size` body bytes; no padding.
 */
export const PACKED_MESSAGE_HEADER_BYTES = 12;

/** The result of one copyMessages call: consecutive messages starting at `first`. */
export interface CopiedBatch {
  /** Packed messages (see PACKED_MESSAGE_HEADER_BYTES). */
  data: Buffer;
  /** How many messages `data` holds. */
  count: number;
  /** True when the queue had no message at index first + count (ENOMSG). */
  end: boolean;
  /** The MSG_COPY buffer size the batch ended with (grown on E2BIG); pass it to the next call. */
  bufferSize: number;
  /** The queue's stat taken before and after the batch's copies, on the same thread. */
  statBefore: QueueStat;
  statAfter: QueueStat;
}

export interface CreateQueueRequest {
  key: number;
  /** The exact id wanted: written to msg_next_id just before msgget. */
  id: number;
  /** Permission bits given to msgget. */
  mode: number;
  /** Creator ids: msgget runs with these effective ids on the namespace thread only. */
  cuid: number;
  cgid: number;
}

export interface SetQueueRequest {
  uid: number;
  gid: number;
  mode: number;
  qbytes: number;
}

/**
 * One queue of a createQueues batch: explicit creator and owner ids, already in the namespace's own view
 * (translate before packing). It crosses packed, NEW_QUEUE_FIELDS in this order (see packNewQueues).
 */
export interface NewQueueRequest {
  key: number;
  /** The exact id wanted: written to msg_next_id just before msgget. */
  id: number;
  /** Permission bits, given to msgget and to IPC_SET. */
  mode: number;
  /** Creator ids: msgget runs with these effective ids on the namespace thread only. */
  cuid: number;
  cgid: number;
  /** Owner ids and qbytes, set by IPC_SET right after the msgget (when they differ from what msgget gave). */
  uid: number;
  gid: number;
  qbytes: number;
}

export const NEW_QUEUE_FIELDS = ['id', 'key', 'mode', 'cuid', 'cgid', 'uid', 'gid', 'qbytes'] as const;

/** createQueues requests as the addon takes them: NEW_QUEUE_FIELDS per queue, one float64 each. */
export function packNewQueues(requests: readonly NewQueueRequest[]): Float64Array {
  const packed = new Float64Array(requests.length * NEW_QUEUE_FIELDS.length);
  requests.forEach((r, k) => packed.set([r.id, r.key, r.mode, r.cuid, r.cgid, r.uid, r.gid, r.qbytes], k * NEW_QUEUE_FIELDS.length));
  return packed;
}

/** A call of a batch that failed, as plain fields (the batch itself resolves). */
export interface BatchFailure extends NativeErrorFields {
  /** The index of the request it failed on. */
  index: number;
}

/** What one createQueues batch did; it stops at its first failure. */
export interface CreatedQueues {
  /** Ids of the queues this batch made that exist now, in request order: exactly what a rollback removes. */
  created: number[];
  /** Set when a request failed: requests after failure.index were not tried. */
  failure?: BatchFailure & {
    /** The failed request's queue was made (its IPC_SET failed) and is in `created`; else nothing of it exists. */
    queueCreated: boolean;
  };
}

/**
 * One queue of a copyQueues batch, packed per queue in this order (one float64 each): the queue id; at most
 * maxCount messages (save passes qnum: its stats before and after prove there is no more; qnum + 1 would probe
 * for one more, ENOMSG setting end); stop before the queue's packed bytes would exceed maxBytes; the starting
 * MSG_COPY buffer size (it grows on E2BIG up to msgmax); statBefore 1 to stat the queue before its copy, 0 when
 * the caller's listing stands in for that stat (its statsBefore are then zeros).
 */
export const COPY_REQUEST_FIELDS = ['id', 'maxCount', 'maxBytes', 'bufferSize', 'statBefore'] as const;

/**
 * Queue stats packed for batches: per queue, these fields in this order, one float64 each (exact: every value
 * stays below 2^53). Tens of thousands of stats cross as one array instead of as many objects.
 */
export const QUEUE_STAT_FIELDS = ['id', 'key', 'uid', 'gid', 'cuid', 'cgid', 'mode', 'stime', 'rtime', 'ctime', 'cbytes', 'qnum', 'qbytes', 'lspid', 'lrpid'] as const;
export const QUEUE_STAT_DOUBLES = QUEUE_STAT_FIELDS.length;
/** Each field's place in a packed stat: stats[k * QUEUE_STAT_DOUBLES + QueueStatField.qnum]. */
export const QueueStatField = Object.fromEntries(QUEUE_STAT_FIELDS.map((name, i) => [name, i])) as { readonly [F in (typeof QUEUE_STAT_FIELDS)[number]]: number };

/** Stat number k of a packed array, as a QueueStat. */
export function unpackQueueStat(stats: Float64Array, k: number): QueueStat {
  const o = k * QUEUE_STAT_DOUBLES;
  const id = stats[o + QueueStatField.id];
  return {
    id,
    index: id % 32768,
    seq: Math.floor(id / 32768),
    key: stats[o + QueueStatField.key],
    uid: stats[o + QueueStatField.uid],
    gid: stats[o + QueueStatField.gid],
    cuid: stats[o + QueueStatField.cuid],
    cgid: stats[o + QueueStatField.cgid],
    mode: stats[o + QueueStatField.mode],
    stime: BigInt(stats[o + QueueStatField.stime]),
    rtime: BigInt(stats[o + QueueStatField.rtime]),
    ctime: BigInt(stats[o + QueueStatField.ctime]),
    cbytes: stats[o + QueueStatField.cbytes],
    qnum: stats[o + QueueStatField.qnum],
    qbytes: stats[o + QueueStatField.qbytes],
    lspid: stats[o + QueueStatField.lspid],
    lrpid: stats[o + QueueStatField.lrpid],
  };
}

/** Per queue of a copyQueues batch: these fields, one float64 each. */
export const COPIED_PART_FIELDS = ['offset', 'length', 'count', 'end', 'bufferSize'] as const;

/**
 * A copyQueues batch. Queue k: its packed messages are data[offset, offset + length) (parts[5k], parts[5k+1]),
 * count messages (parts[5k+2]), end = 1 when the queue had no message at index count (ENOMSG, parts[5k+3]),
 * the MSG_COPY buffer size it ended with (parts[5k+4]); its stats before its first copy (zeros when its
 * request said statBefore 0) and after its last, packed (QUEUE_STAT_FIELDS), unless errors names it: then
 * its part is empty and its stats are zeros.
 */
export interface CopiedQueues {
  data: Buffer;
  parts: Float64Array;
  statsBefore: Float64Array;
  statsAfter: Float64Array;
  /** Queues a call failed for (removed meanwhile, a message above msgmax, ...); the batch went on. */
  errors: BatchFailure[];
}

/** The effective ids a sysctl write is made with on the namespace thread (only it takes them, for that write). */
export interface SysctlWriter {
  uid: number;
  gid: number;
}

/** The user namespace that owns the session's IPC namespace (ioctl NS_GET_USERNS on the IPC namespace itself). */
export interface OwningUserNamespace {
  /** st_dev and st_ino of the user namespace's nsfs file, as decimal strings. */
  device: string;
  inode: string;
  /** It is ipc-ckpt's own user namespace: ids need no translation and the maps are left empty. */
  callerOwn: boolean;
  /** /proc/PID/uid_map and gid_map of the user namespace ("INSIDE OUTSIDE COUNT" lines), outside ids as ipc-ckpt sees them. */
  uidMap: string;
  gidMap: string;
  /** 'own'; 'process': read from a process living there (mapPid); 'child': no process lives there, so a short-lived child of the namespace thread joined it (mapPid). */
  mapSource: 'own' | 'process' | 'child';
  mapPid: number;
}

/** Findings of the kernel and privilege probe behind `ipc-ckpt check`. */
export interface NamespaceProbe {
  /** msgrcv(MSG_COPY) is compiled in (CONFIG_CHECKPOINT_RESTORE): errno of the probe, 0 = available. */
  msgCopyErrno: number;
  /** msg_next_id can be opened for writing in the namespace (errno, 0 = yes). */
  nextIdWritableErrno: number;
  /** Effective capabilities of the namespace thread, as a 64-bit mask in a decimal string. */
  effectiveCapabilities: string;
}

/** One POSIX message queue as the namespace's mqueue filesystem and mq_getattr show it. */
export interface PosixQueueStat {
  /** The name without its leading '/'. */
  name: string;
  /** Permission bits (07777). */
  mode: number;
  /** The owner as the session thread sees it (host view for a user-namespaced target). */
  uid: number;
  gid: number;
  maxmsg: number;
  msgsize: number;
  curmsgs: number;
  /** Bytes of the messages in the queue (the status line's QSIZE). */
  qsize: number;
  /** The status line's NOTIFY, SIGNO and NOTIFY_PID; notifyPid 0 = no mq_notify registration. */
  notify: number;
  notifySigno: number;
  notifyPid: number;
}

/** /proc/sys/fs/mqueue of one IPC namespace. */
export interface MqueueLimits {
  queues_max: number;
  msg_max: number;
  msgsize_max: number;
  msg_default: number;
  msgsize_default: number;
}

export type MqueueLimitName = keyof MqueueLimits;
export const MQUEUE_LIMIT_NAMES: readonly MqueueLimitName[] = ['queues_max', 'msg_max', 'msgsize_max', 'msg_default', 'msgsize_default'];

/**
 * Packed POSIX message batch, both directions: per message, little-endian u32 priority, u32 size,
 * then `size` body bytes; no padding.
 */
export const POSIX_PACKED_HEADER_BYTES = 8;

/** The result of takePosixMessages: every message the queue held, in delivery order, and put back. */
export interface TakenPosixMessages {
  /** Packed (see POSIX_PACKED_HEADER_BYTES). */
  data: Buffer;
  count: number;
  /** The queue before the take and after the put-back. */
  before: PosixQueueStat;
  after: PosixQueueStat;
}

export interface CreatePosixQueueRequest {
  name: string;
  /** 07777 bits, set with fchmod after mq_open (no umask). */
  mode: number;
  /** mq_open runs with these effective ids (the kernel charges their RLIMIT_MSGQUEUE). */
  uid: number;
  gid: number;
  maxmsg: number;
  msgsize: number;
}

/**
 * A dedicated native thread that joined one IPC namespace. Jobs run on it one at a time,
 * in the order they were called; no other thread of the process ever enters the namespace.
 */
export interface NativeNamespace {
  /** The path given to openNamespace ('' for the caller's own namespace). */
  readonly path: string;
  /** MSG_INFO then MSG_STAT_ANY over every index up to the highest in use. */
  listQueues(): Promise<QueueStat[]>;
  /** The same listing, packed (QUEUE_STAT_FIELDS): for namespaces of many queues. */
  listQueueStats(): Promise<Float64Array>;
  /** IPC_STAT of one queue by full id. */
  statQueue(id: number): Promise<QueueStat>;
  /**
   * MSG_COPY of the messages first, first+1, ... into one packed buffer, stopping after
   * maxCount messages, before maxBytes of packed data would be exceeded (at least one message is
   * always copied if present), or at the end of the queue.
   * bufferSize is the starting MSG_COPY buffer size; it grows on E2BIG up to the namespace's msgmax.
   */
  copyMessages(id: number, first: number, maxCount: number, maxBytes: number, bufferSize: number): Promise<CopiedBatch>;
  readSysctls(): Promise<IpcSysctls>;
  /** With `as`, the namespace thread takes those effective ids for the open and the write (a user-namespaced target's limits need its root). */
  writeSysctl(name: MsgSysctlName, value: number, as?: SysctlWriter): Promise<void>;
  /** Opens the sysctl for writing (as `as`, when given) without writing: resolves to 0 when it may be written, else the errno. */
  sysctlWritable(name: MsgSysctlName, as?: SysctlWriter): Promise<number>;
  /** The user namespace that owns this IPC namespace and its maps. */
  userNamespace(): Promise<OwningUserNamespace>;
  /** msg_next_id = id, then msgget(key, mode|IPC_CREAT|IPC_EXCL) as cuid/cgid; fails (and removes what it made) if the id obtained differs. Resolves to the id. */
  createQueue(request: CreateQueueRequest): Promise<number>;
  /** IPC_SET of owner, mode and qbytes. */
  setQueue(id: number, request: SetQueueRequest): Promise<void>;
  /**
   * msgsnd(IPC_NOWAIT) of every message in a packed buffer, in order; resolves to how many were sent.
   * On failure the error also carries `sent`: how many went in before the failing one.
   */
  sendMessages(id: number, packed: Buffer, count: number): Promise<number>;
  /** IPC_RMID. */
  removeQueue(id: number): Promise<void>;
  /**
   * For each request in order (packed: packNewQueues): msg_next_id = id, msgget(key, mode|IPC_CREAT|IPC_EXCL) as cuid/cgid, the id
   * check (a queue made at another id is removed again), IPC_SET of uid/gid/mode/qbytes unless msgget made them
   * so (uid/gid the creator's, qbytes the msgmnb of the batch's start). Resolves, also on a
   * failure, with exactly which queues it made; stops at the first failure.
   */
  createQueues(requests: Float64Array): Promise<CreatedQueues>;
  /** For each request: IPC_STAT, MSG_COPY of messages 0, 1, ..., IPC_STAT, on the same thread; a failing queue does not stop the batch. */
  copyQueues(requests: Float64Array): Promise<CopiedQueues>;
  /**
   * msgsnd(IPC_NOWAIT) of counts[i] packed messages to queue ids[i], for each i in order, from one packed buffer.
   * On failure the error also carries `sent` (in all) and `queueIndex`.
   */
  sendQueueMessages(ids: number[], counts: number[], packed: Buffer): Promise<number>;
  probe(): Promise<NamespaceProbe>;
  /** Every POSIX queue of the namespace (a detached mount of its mqueue filesystem), sorted by name. */
  listPosixQueues(): Promise<PosixQueueStat[]>;
  /**
   * Takes every message of the queue in delivery order (mq_receive is destructive) and puts the same
   * messages back in the same order and priorities, in a forked child of the session thread (own
   * session, INT/TERM/HUP/PIPE ignored) that finishes the put-back even if this process is killed;
   * resolves with the copy once all are back. Rejects with 'E_MQ_NOTIFY' (an mq_notify registration)
   * or 'E_MQ_FULL' (a full queue: a blocked sender would slip in) before taking anything.
   * Call only with the workload frozen or quiescent.
   */
  takePosixMessages(name: string): Promise<TakenPosixMessages>;
  /** mq_open(O_CREAT|O_EXCL) as uid/gid with maxmsg/msgsize (must fit msg_max/msgsize_max), then the exact mode. */
  createPosixQueue(request: CreatePosixQueueRequest): Promise<void>;
  /** mq_send (non-blocking) of every packed message in order; the error carries `sent` like sendMessages. */
  sendPosixMessages(name: string, packed: Buffer, count: number): Promise<number>;
  /** mq_unlink. */
  removePosixQueue(name: string): Promise<void>;
  readMqueueLimits(): Promise<MqueueLimits>;
  /** As `as` (the namespace's own root, NamespaceIds.limitWriter) when given, like writeSysctl. */
  writeMqueueLimit(name: MqueueLimitName, value: number, as?: SysctlWriter): Promise<void>;
  /** Ends the thread (joined before this resolves). Further calls reject with code 'E_INTERNAL'. */
  close(): Promise<void>;
}

/** The error shape every native rejection has; lib/errors.ts turns it into IpcCkptError. */
export interface NativeErrorFields {
  /** errno name such as 'EPERM', or a project code such as 'E_ID_MISMATCH'. */
  code: string;
  /** The errno number, 0 when no system call failed. */
  errno: number;
  /** The failing system call, e.g. 'msgget', 'setns', 'open'. */
  syscall: string;
  message: string;
  /** sendMessages / sendQueueMessages only: messages sent before the failing one. */
  sent?: number;
  /** sendQueueMessages only: the index of the queue whose message failed. */
  queueIndex?: number;
}

export interface NativeBinding {
  /**
   * Starts a dedicated thread that opens nsPath (an nsfs file of type IPC; '' = stay in the
   * caller's own namespace) and setns()es into it. Rejects with code 'E_TARGET' for a file that
   * is not an IPC namespace, or the errno name (e.g. 'ENOENT') when it cannot be opened.
   */
  openNamespace(nsPath: string): Promise<NativeNamespace>;
  /**
   * flock(fd, mode | LOCK_NB): true when held (or released), false when another open file holds a
   * conflicting lock; never blocks. Throws the errno failure otherwise.
   */
  lockFile(fd: number, mode: 'shared' | 'exclusive' | 'unlock'): boolean;
  /**
   * fcntl(fd, F_SETLEASE, F_RDLCK) on a read-only fd, its break signal off: true when held, false when the
   * kernel refuses one (the file is open for writing somewhere, not ours, or leases are off). Throws otherwise.
   */
  takeReadLease(fd: number): boolean;
  /** The lease is unbroken: nobody opened the file for writing or truncated it since (they wait until we release it). */
  readLeaseHeld(fd: number): boolean;
  /** fstatfs(fd).f_type. */
  fileSystemMagic(fd: number): number;
  /**
   * mallopt M_MMAP_THRESHOLD and M_TRIM_THRESHOLD for the whole process: allocations below the first come
   * from the heap, and up to the second of free heap is kept. True when both took.
   */
  keepFreedHeap(mmapThresholdBytes: number, trimThresholdBytes: number): boolean;
  /**
   * Starts program with args in a session of its own (posix_spawn, default signal dispositions); its stdin
   * reads from `input`, its stdout writes to `output` (both ours, close-on-exec), its stderr is ours;
   * inheritFd (-1: none) becomes its fd 3. Reap it with reapChild.
   */
  spawnDetached(program: string, args: string[], inheritFd: number): DetachedChild;
  /** waitpid: undefined while the child runs (wait false); once it ended, its exit code or signal number. */
  reapChild(pid: number, wait: boolean): ChildEnd | undefined;
}

/** A child of spawnDetached: its pid and our ends of its stdin and stdout pipes. */
export interface DetachedChild {
  pid: number;
  input: number;
  output: number;
}

export interface ChildEnd {
  code: number | null;
  signal: number | null;
}

/** Environment variable naming a custom-built addon file, e.g. the cmake-js build. */
export const ADDON_PATH_ENV = 'IPC_CKPT_ADDON';

// node-gyp-build ships no types; resolve() is the part used: the path of the build or prebuild that fits.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const nodeGypBuild = require('node-gyp-build') as { resolve(packageRoot: string): string };

/** How to get an addon where the prebuild does not fit (README "Install"). */
const BUILD_FROM_SOURCE =
  'build it with `npm rebuild --build-from-source ipc-ckpt` (needs g++, make and python3; npm 11 also needs `npm pkg set allowScripts.ipc-ckpt=true --json`)';

let loaded: NativeBinding | undefined;

/**
 * The addon file loadNative() loads: $IPC_CKPT_ADDON when set; else, as node-gyp-build finds it, a local
 * compile (build/Release, made by `npm install --build-from-source` or a clone's `npm ci`) before the prebuild
 * that fits this platform, arch and libc (prebuilds/linux-x64/ipc-ckpt.glibc.node in the published package).
 */
export function addonFile(packageRoot: string = PACKAGE_ROOT): string {
  const override = process.env[ADDON_PATH_ENV];
  if (override) return path.resolve(override);
  try {
    return nodeGypBuild.resolve(packageRoot);
  } catch (error) {
    throw new IpcCkptError('E_ADDON', `no ipc-ckpt addon fits this machine (${process.platform}-${process.arch}) and none was built: ${BUILD_FROM_SOURCE}, or set ${ADDON_PATH_ENV}`, { cause: error });
  }
}

/** dlopen's reason without require's stack of modules. */
function firstLine(error: unknown): string {
  return (error instanceof Error ? error.message : String(error)).split('\n')[0];
}

/** The rollback guardian program's name (native/rollback_guardian.cc). */
const GUARDIAN_PROGRAM = 'ipc-ckpt-guardian';

/**
 * The rollback guardian program: beside the addon (both builds put it there), else beside the
 * prebuild of this platform and arch (build:prebuild copies it there).
 */
export function guardianFile(packageRoot: string = PACKAGE_ROOT): string {
  const besideAddon = path.join(path.dirname(addonFile(packageRoot)), GUARDIAN_PROGRAM);
  if (existsSync(besideAddon)) return besideAddon;
  const besidePrebuild = path.join(packageRoot, 'prebuilds', `${process.platform}-${process.arch}`, GUARDIAN_PROGRAM);
  return existsSync(besidePrebuild) ? besidePrebuild : besideAddon;
}

/** Loads the addon once (see addonFile). */
export function loadNative(): NativeBinding {
  if (!loaded) {
    const file = addonFile();
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      loaded = require(file) as NativeBinding;
    } catch (error) {
      // A prebuild needs glibc >= 2.34 and libstdc++ of GCC >= 12; an older system must build from source.
      throw new IpcCkptError('E_ADDON', `cannot load the ipc-ckpt addon ${file}: ${firstLine(error)}; ${BUILD_FROM_SOURCE}`, { cause: error });
    }
  }
  return loaded;
}
