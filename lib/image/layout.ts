// The image's byte layout: the one source of truth for record types, magic numbers, struct sizes
// and field offsets (v16 on x86-64, plus ipc-ckpt's two documented extensions). See docs/FORMAT.md.

/** Every record starts with `struct ckpt_hdr { u32 type; u32 len; }`; len counts the header too. */
export const RECORD_HEADER_BYTES = 8;
export const RECORD_TYPE_OFFSET = 0;
export const RECORD_LEN_OFFSET = 4;

/** Record type numbers: v16's, and ipc-ckpt's integrity record outside every v16 range. */
export const RecordType = {
  HEADER: 1,
  HEADER_ARCH: 2,
  BUFFER: 3,
  STRING: 4,
  OBJREF: 5,
  IPC_NS: 110,
  IPC: 501,
  IPC_SHM: 502,
  IPC_MSG: 503,
  IPC_MSG_MSG: 504,
  IPC_SEM: 505,
  TAIL: 9001,
  /** ipc-ckpt extension: SHA-256 of every byte before it (v16 has no checksum). */
  INTEGRITY: 9100,
  /** ipc-ckpt extension (9110-9119 are issue 11's): ids are the namespace's own view; its uid/gid maps at save. */
  ID_MAPPING: 9110,
  /** ipc-ckpt extension (9120-9139): POSIX message queues, after the v16 msg section, before INTEGRITY. */
  POSIX_MQ_NS: 9120,
  POSIX_MQ_QUEUE: 9121,
  POSIX_MQ_MSG: 9122,
  ERROR: 9999,
} as const;

const recordNames = new Map<number, string>(Object.entries(RecordType).map(([name, type]) => [type, name]));

/** 'IPC_MSG (503)' for a known type, 'type 777' otherwise: for error messages. */
export function describeRecordType(type: number): string {
  const name = recordNames.get(type);
  return name === undefined ? `type ${type}` : `${name} (${type})`;
}

export const CHECKPOINT_MAGIC_HEAD = 0x00feed0cc0a2d200n;
export const CHECKPOINT_MAGIC_TAIL = 0x002d2a0cc0deef00n;
/** ckpt_hdr_header.rev: the v16 format version. */
export const CHECKPOINT_VERSION = 1;

/** Architecture ids of linux-cr (v16 defined only X86_32; later headers add the rest). */
export const ARCH_X86_32 = 1;
export const ARCH_X86_64 = 2;
export const ARCH_S390X = 3;

/** Bytes of one utsname field (__NEW_UTS_LEN + 1); the image stores each NUL-padded to this length. */
export const UTS_FIELD_BYTES = 65;

/** Message body chunking of v16: PAGE_SIZE - sizeof(struct msg_msg) and - sizeof(struct msg_msgseg) on x86-64. */
export const DATALEN_MSG = 4048;
export const DATALEN_SEG = 4088;

/** ckpt_hdr_header (48). */
export const HeaderLayout = {
  BYTES: 48,
  MAGIC: 8,
  ARCH_ID: 16,
  MAJOR: 18,
  MINOR: 20,
  PATCH: 22,
  REV: 24,
  UTS_RELEASE_LEN: 26,
  UTS_VERSION_LEN: 28,
  UTS_MACHINE_LEN: 30,
  TIME: 32,
  UFLAGS: 40,
} as const;

/** ckpt_hdr_tail (16). */
export const TailLayout = { BYTES: 16, MAGIC: 8 } as const;

/** ckpt_hdr_ipcns (56). */
export const IpcNsLayout = {
  BYTES: 56,
  SHM_CTLMAX: 8,
  SHM_CTLALL: 16,
  SHM_CTLMNI: 24,
  MSG_CTLMAX: 28,
  MSG_CTLMNB: 32,
  MSG_CTLMNI: 36,
  SEM_CTL_MSL: 40,
  SEM_CTL_MNS: 44,
  SEM_CTL_OPM: 48,
  SEM_CTL_MNI: 52,
} as const;

/** ckpt_hdr_ipc (16): the section header before a kind's objects. */
export const IpcSectionLayout = { BYTES: 16, IPC_TYPE: 8, IPC_COUNT: 12 } as const;

/** ckpt_hdr_ipc_perms (48), nested in ckpt_hdr_ipc_msg; offsets relative to the perms struct. */
export const IpcPermsLayout = {
  BYTES: 48,
  /** The nested ckpt_hdr: always written zero. */
  NESTED_HEADER: 0,
  ID: 8,
  KEY: 12,
  UID: 16,
  GID: 20,
  CUID: 24,
  CGID: 28,
  MODE: 32,
  PADDING: 36,
  SEQ: 40,
} as const;

/** ckpt_hdr_ipc_msg (112). */
export const IpcMsgLayout = {
  BYTES: 112,
  PERMS: 8,
  Q_STIME: 56,
  Q_RTIME: 64,
  Q_CTIME: 72,
  Q_CBYTES: 80,
  Q_QNUM: 88,
  Q_QBYTES: 96,
  Q_LSPID: 104,
  Q_LRPID: 108,
} as const;

/** ckpt_hdr_ipc_msg_msg of v16 (16): s32 m_type. */
export const MsgMsgLayout = { BYTES: 16, M_TYPE: 8, M_TS: 12 } as const;

/** The widened message record of later linux-cr (24): s64 m_type, u32 m_ts, 4 bytes of padding. */
export const WideMsgMsgLayout = { BYTES: 24, M_TYPE: 8, M_TS: 16, PADDING: 20 } as const;

/** ipc-ckpt's integrity record (48): u32 algorithm, u32 digest length, the digest. */
export const IntegrityLayout = { BYTES: 48, ALGORITHM: 8, DIGEST_LEN: 12, DIGEST: 16 } as const;
/** IntegrityLayout.ALGORITHM value for SHA-256. */
export const INTEGRITY_ALGORITHM_SHA256 = 1;
export const SHA256_BYTES = 32;

/**
 * ipc-ckpt's id-mapping record (16 + 12 per extent): u16 uid extents, u16 gid extents, u32 flags,
 * then the uid extents and the gid extents, each { u32 inside, u32 outside, u32 count }.
 */
export const IdMappingLayout = {
  HEADER_BYTES: 16,
  UID_EXTENTS: 8,
  GID_EXTENTS: 10,
  FLAGS: 12,
  EXTENT_BYTES: 12,
  EXTENT_INSIDE: 0,
  EXTENT_OUTSIDE: 4,
  EXTENT_COUNT: 8,
} as const;
/** IdMappingLayout.FLAGS bit: the saved IPC namespace belonged to the saving ipc-ckpt's own user namespace. */
export const ID_MAPPING_OWN_USER_NAMESPACE = 1;
/** The kernel's most extents in one uid_map or gid_map (UID_GID_MAP_MAX_EXTENTS). */
export const ID_MAPPING_MAX_EXTENTS = 340;

/** Kernel bounds the reader holds every image to. */
export const IPCMNI = 32768;
/** perms.seq = id >> IPCMNI_SHIFT under the default IPCMNI. */
export const IPCMNI_SHIFT = 15;
/**
 * The largest seq an id can carry (the kernel's ipcid_seq_max): allocation wraps before reaching it,
 * but msg_next_id hands it out (id 65535 * 32768 + index, up to 2147483647). v16 refused seq >= 65535.
 */
export const IPC_SEQ_MAX = 65535;
/** (uid_t)-1: the kernel reads it as "leave unchanged", so no queue is owned or created by it. */
export const UNCHANGED_ID = 0xffffffff;
export const INT32_MAX = 0x7fffffff;
export const UINT32_MAX = 0xffffffff;
export const MODE_BITS = 0o777;
export const S32_MIN = -0x80000000;
export const U64_MAX = 0xffffffffffffffffn;
export const S64_MAX = 0x7fffffffffffffffn;

/** Bytes one BUFFER-chunked body of m_ts bytes takes in the image (chunk headers included). */
export function encodedBodyBytes(size: number): number {
  if (size <= DATALEN_MSG) return RECORD_HEADER_BYTES + size;
  const rest = size - DATALEN_MSG;
  const segments = Math.ceil(rest / DATALEN_SEG);
  return (1 + segments) * RECORD_HEADER_BYTES + size;
}

/** POSIX_MQ_NS (32): the namespace's /proc/sys/fs/mqueue limits and how many queues follow. */
export const PosixMqNsLayout = {
  BYTES: 32,
  QUEUES_MAX: 8,
  MSG_MAX: 12,
  MSGSIZE_MAX: 16,
  MSG_DEFAULT: 20,
  MSGSIZE_DEFAULT: 24,
  QUEUE_COUNT: 28,
} as const;

/** POSIX_MQ_QUEUE (56), followed by one BUFFER with the name (name_len bytes, no '/', no NUL). */
export const PosixMqQueueLayout = {
  BYTES: 56,
  NAME_LEN: 8,
  MODE: 12,
  UID: 16,
  GID: 20,
  MAXMSG: 24,
  MSGSIZE: 32,
  CURMSGS: 40,
  QSIZE: 48,
} as const;

/** POSIX_MQ_MSG (16), followed by one BUFFER with the whole body (size bytes, possibly 0). */
export const PosixMqMsgLayout = { BYTES: 16, PRIORITY: 8, SIZE: 12 } as const;

/** Kernel bounds of POSIX queues (ipc/mqueue.c, include/linux/ipc_namespace.h). */
export const MQ_NAME_MAX = 255;
export const MQ_PRIO_MAX = 32768;
/** HARD_MSGMAX and HARD_MSGSIZEMAX: what msg_max and msgsize_max can be raised to. */
export const MQ_HARD_MSGMAX = 65536;
export const MQ_HARD_MSGSIZEMAX = 16 * 1024 * 1024;
/** MIN_MSGSIZEMAX: the least msgsize_max and msgsize_default may be. */
export const MQ_MIN_MSGSIZEMAX = 128;
