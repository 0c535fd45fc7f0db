// A small image written out byte by byte from docs/FORMAT.md (x86-64, little-endian), and the model it encodes.
import type { Image } from '../../../lib/image/model';

/** Hex with `//` comments and whitespace removed. */
export function hex(text: TemplateStringsArray, ...values: string[]): Buffer {
  const joined = text.raw.reduce((all, part, index) => all + part + (values[index] ?? ''), '');
  const digits = joined.replace(/\/\/[^\n]*/g, '').replace(/\s+/g, '');
  if (!/^([0-9a-f]{2})*$/.test(digits)) throw new Error('golden hex is malformed');
  return Buffer.from(digits, 'hex');
}

const zeros = (count: number): string => '00'.repeat(count);

/** Byte offsets of the records in GOLDEN_IMAGE. */
export const GOLDEN_OFFSETS = {
  header: 0,
  utsRelease: 48,
  utsVersion: 121,
  utsMachine: 194,
  limits: 267,
  section: 323,
  queue: 339,
  message0: 451,
  message0Body: 467,
  message1: 478,
  message1Body: 502,
  integrity: 510,
  tail: 558,
  end: 574,
} as const;

export const GOLDEN_IMAGE = hex`
  // 0: HEADER, ckpt_hdr_header (48)
  01000000 30000000        // @0  h.type 1 (HEADER), h.len 48
  00d2a2c00ced fe00        // @8  magic 0x00feed0cc0a2d200
  0200                     // @16 arch_id 2 (x86-64)
  0600 1200 0000           // @18 major 6, @20 minor 18, @22 patch 0
  0100                     // @24 rev 1 (CHECKPOINT_VERSION)
  4100 4100 4100           // @26 uts_release_len, @28 uts_version_len, @30 uts_machine_len: 65 each
  00000065 00000000        // @32 time 0x65000000 = 1694498816 s
  0000000000000000         // @40 uflags 0
  // 48: BUFFER utsname.release, 8 + 65
  03000000 49000000        // @48 type 3 (BUFFER), len 73
  362e31382e30 ${zeros(59)} // @56 "6.18.0", NUL-padded to 65
  // 121: BUFFER utsname.version
  03000000 49000000        // @121 type 3, len 73
  2331 20 534d50 ${zeros(59)} // @129 "#1 SMP", NUL-padded
  // 194: BUFFER utsname.machine
  03000000 49000000        // @194 type 3, len 73
  7838365f3634 ${zeros(59)} // @202 "x86_64", NUL-padded
  // 267: IPC_NS, ckpt_hdr_ipcns (56)
  6e000000 38000000        // @267 type 110 (IPC_NS), len 56
  0000000001000000         // @275 shm_ctlmax 0x100000000
  0000100000000000         // @283 shm_ctlall 0x100000
  00100000                 // @291 shm_ctlmni 4096
  00200000                 // @295 msg_ctlmax 8192
  00400000                 // @299 msg_ctlmnb 16384
  007d0000                 // @303 msg_ctlmni 32000
  007d0000                 // @307 sem_ctl_msl 32000
  00ca9a3b                 // @311 sem_ctl_mns 1000000000
  f4010000                 // @315 sem_ctl_opm 500
  007d0000                 // @319 sem_ctl_mni 32000
  // 323: IPC section, ckpt_hdr_ipc (16)
  f5010000 10000000        // @323 type 501 (IPC), len 16
  f7010000                 // @331 ipc_type 503 (IPC_MSG)
  01000000                 // @335 ipc_count 1
  // 339: IPC_MSG, ckpt_hdr_ipc_msg (112)
  f7010000 70000000        // @339 type 503 (IPC_MSG), len 112
  0000000000000000         // @347 perms.h: nested header, zero
  01800000                 // @355 perms.id 32769 (seq 1, index 1)
  cdab3412                 // @359 perms.key 0x1234abcd
  e8030000 64000000        // @363 perms.uid 1000, @367 perms.gid 100
  00000000 00000000        // @371 perms.cuid 0, @375 perms.cgid 0
  a0010000                 // @379 perms.mode 0640
  00000000                 // @383 perms._padding
  0100000000000000         // @387 perms.seq 1
  0100006600000000         // @395 q_stime 0x66000001
  0000000000000000         // @403 q_rtime 0
  0000006600000000         // @411 q_ctime 0x66000000
  0300000000000000         // @419 q_cbytes 3
  0200000000000000         // @427 q_qnum 2
  0040000000000000         // @435 q_qbytes 16384
  2a000000 00000000        // @443 q_lspid 42, @447 q_lrpid 0
  // 451: IPC_MSG_MSG (v16, 16)
  f8010000 10000000        // @451 type 504 (IPC_MSG_MSG), len 16
  01000000 03000000        // @459 m_type 1, @463 m_ts 3
  03000000 0b000000 616263 // @467 BUFFER len 11: "abc"
  // 478: IPC_MSG_MSG widened (24): m_type 2^32 does not fit s32
  f8010000 18000000        // @478 type 504, len 24
  0000000001000000         // @486 m_type 0x100000000 (s64)
  00000000 00000000        // @494 m_ts 0, @498 padding
  03000000 08000000        // @502 BUFFER len 8: the empty body
  // 510: INTEGRITY (ipc-ckpt, 48)
  8c230000 30000000        // @510 type 9100, len 48
  01000000 20000000        // @518 algorithm 1 (SHA-256), @522 digest_len 32
  // @526 SHA-256 of bytes 0..509 (computed with sha256sum)
  2ba2d9d86a29ebc46403f5901d3afe289df0612218c39057255a36eb4af01456
  // 558: TAIL, ckpt_hdr_tail (16)
  29230000 10000000        // @558 type 9001 (TAIL), len 16
  00efdec00c2a2d00         // @566 magic 0x002d2a0cc0deef00
`;

/** What GOLDEN_IMAGE holds. */
export const GOLDEN_MODEL: Image = {
  header: {
    kernelRelease: '6.18.0',
    kernelVersion: '#1 SMP',
    machine: 'x86_64',
    major: 6,
    minor: 18,
    patch: 0,
    archId: 2,
    time: 0x65000000n,
    uflags: 0n,
  },
  limits: {
    shmCtlmax: 0x100000000n,
    shmCtlall: 0x100000n,
    shmCtlmni: 4096,
    msgCtlmax: 8192,
    msgCtlmnb: 16384,
    msgCtlmni: 32000,
    semCtlMsl: 32000,
    semCtlMns: 1000000000,
    semCtlOpm: 500,
    semCtlMni: 32000,
  },
  queues: [
    {
      queue: {
        id: 32769,
        key: 0x1234abcd,
        uid: 1000,
        gid: 100,
        cuid: 0,
        cgid: 0,
        mode: 0o640,
        seq: 1,
        stime: 0x66000001n,
        rtime: 0n,
        ctime: 0x66000000n,
        cbytes: 3n,
        qnum: 2n,
        qbytes: 16384n,
        lspid: 42,
        lrpid: 0,
      },
      messages: [
        { type: 1n, body: Buffer.from('abc') },
        { type: 0x100000000n, body: Buffer.alloc(0) },
      ],
    },
  ],
};
