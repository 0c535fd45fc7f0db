// What an image holds, independent of its byte layout (lib/image/ owns the layout).

/** The image header: who wrote it, where, when. */
export interface ImageHeader {
  /** utsname release, version and machine of the saving host (each at most 64 bytes). */
  kernelRelease: string;
  kernelVersion: string;
  machine: string;
  /** Kernel version numbers parsed from kernelRelease. */
  major: number;
  minor: number;
  patch: number;
  /** Architecture id (2 = x86-64). */
  archId: number;
  /** Seconds since the epoch when the save started. */
  time: bigint;
  /** v16's user flags; ipc-ckpt writes 0. */
  uflags: bigint;
}

/** ckpt_hdr_ipcns: the namespace's limits. ipc-ckpt saves real msg limits; shm/sem fields are saved as read. */
export interface NamespaceLimits {
  shmCtlmax: bigint;
  shmCtlall: bigint;
  shmCtlmni: number;
  msgCtlmax: number;
  msgCtlmnb: number;
  msgCtlmni: number;
  semCtlMsl: number;
  semCtlMns: number;
  semCtlOpm: number;
  semCtlMni: number;
}

/** One line of a uid_map or gid_map: ids inside..inside+count-1 are outside..outside+count-1 outside. */
export interface IdExtent {
  inside: number;
  outside: number;
  count: number;
}

/**
 * The id-mapping record: the image's uid/gid/cuid/cgid are the saved namespace's own view (as seen inside
 * the user namespace that owns it), and these are that user namespace's maps as the saving ipc-ckpt saw them.
 * An image without it holds ids as the saving host saw them (v16's meaning, and every image before it).
 */
export interface ImageIdMapping {
  /** The saved namespace belonged to the saving ipc-ckpt's own user namespace (the maps are the identity). */
  ownUserNamespace: boolean;
  uid: IdExtent[];
  gid: IdExtent[];
}

/** One message queue: ckpt_hdr_ipc_msg with its nested perms. */
export interface QueueRecord {
  /** Full user-visible id (seq * 32768 + index). */
  id: number;
  key: number;
  uid: number;
  gid: number;
  cuid: number;
  cgid: number;
  /** 0777 bits only. */
  mode: number;
  seq: number;
  stime: bigint;
  rtime: bigint;
  ctime: bigint;
  cbytes: bigint;
  qnum: bigint;
  qbytes: bigint;
  lspid: number;
  lrpid: number;
}

/** A QueueRecord whose 64-bit fields are plain numbers: what save reads from the kernel, exact below 2^53. */
export type NumericQueueRecord = { [K in keyof QueueRecord]: number };

/** One message: its type (1..2^63-1, the kernel's long) and body. */
export interface MessageRecord {
  type: bigint;
  body: Buffer;
}

/** A whole image in memory (tests, small images); the codec itself streams. */
export interface Image {
  header: ImageHeader;
  limits: NamespaceLimits;
  /** Present when the ids are namespace-relative (see ImageIdMapping). */
  idMapping?: ImageIdMapping;
  queues: Array<{ queue: QueueRecord; messages: MessageRecord[] }>;
  /** The POSIX queue section (ipc-ckpt extension); absent in images without one. */
  posix?: PosixSection;
}

/** POSIX_MQ_NS: the namespace's /proc/sys/fs/mqueue limits. */
export interface PosixLimits {
  queuesMax: number;
  msgMax: number;
  msgsizeMax: number;
  msgDefault: number;
  msgsizeDefault: number;
}

/** One POSIX message queue: POSIX_MQ_QUEUE and its name. */
export interface PosixQueueRecord {
  /** Without the leading '/'. */
  name: string;
  /** 07777 bits. */
  mode: number;
  uid: number;
  gid: number;
  maxmsg: number;
  msgsize: number;
  /** Messages that follow, and their body bytes. */
  curmsgs: number;
  qsize: number;
}

/** One POSIX message: priority 0..32767 and body. */
export interface PosixMessageRecord {
  priority: number;
  body: Buffer;
}

export interface PosixSection {
  limits: PosixLimits;
  queues: Array<{ queue: PosixQueueRecord; messages: PosixMessageRecord[] }>;
}
