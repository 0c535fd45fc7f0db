// Encodes image records, one call per record kind; the caller streams the pieces out and hashes them.
import { IpcCkptError } from '../errors';
import type { Image, ImageHeader, ImageIdMapping, MessageRecord, NamespaceLimits, NumericQueueRecord, QueueRecord } from './model';
import { ImageDigest } from './digest';
import { PACKED_MESSAGE_HEADER_BYTES, PACKED_SIZE_OFFSET, PACKED_TYPE_OFFSET } from './packed';
import {
  CHECKPOINT_MAGIC_HEAD,
  CHECKPOINT_MAGIC_TAIL,
  CHECKPOINT_VERSION,
  DATALEN_MSG,
  DATALEN_SEG,
  HeaderLayout,
  ID_MAPPING_OWN_USER_NAMESPACE,
  IdMappingLayout,
  INT32_MAX,
  INTEGRITY_ALGORITHM_SHA256,
  IPCMNI,
  IntegrityLayout,
  IpcMsgLayout,
  IpcNsLayout,
  IpcPermsLayout,
  IpcSectionLayout,
  MsgMsgLayout,
  RECORD_HEADER_BYTES,
  RECORD_LEN_OFFSET,
  RECORD_TYPE_OFFSET,
  RecordType,
  SHA256_BYTES,
  TailLayout,
  UTS_FIELD_BYTES,
  WideMsgMsgLayout,
  encodedBodyBytes,
} from './layout';
import { PosixSectionEncoder } from './posix-queues';
import { archProblem, headerProblem, idMappingProblem, limitsProblem, messageSizeProblem, messageTypeProblem, numericQueueInRange, queueCountProblem, queueProblem, queueRecordOfNumbers } from './rules';

export { ImageDigest };

export interface EncoderOptions {
  /** Refuse a message type that needs the widened record instead of writing it (pure v16 records only). */
  strictV16?: boolean;
}

function cannotEncode(what: string, problem: string): IpcCkptError {
  return new IpcCkptError('E_INTERNAL', `cannot encode ${what}: ${problem}`);
}

function strictRefusal(what: string, type: bigint | string): IpcCkptError {
  return new IpcCkptError(
    'E_IMAGE_UNSUPPORTED',
    `cannot encode ${what} in strict v16 mode: m_type ${type} does not fit v16's s32 m_type (it needs the widened 24-byte record)`,
  );
}

function writeRecordHeader(out: Buffer, at: number, type: number, len: number): void {
  out.writeUInt32LE(type, at + RECORD_TYPE_OFFSET);
  out.writeUInt32LE(len, at + RECORD_LEN_OFFSET);
}

const TWO_TO_32 = 2 ** 32;

/** A u64 field from a safe integer (two u32 halves: no bigint). */
function writeU64(out: Buffer, at: number, value: number): void {
  const low = value % TWO_TO_32;
  out.writeUInt32LE(low, at);
  out.writeUInt32LE((value - low) / TWO_TO_32, at + 4);
}

/**
 * Every 32-bit word of an IPC_MSG at `at` (record header, nested perms header and padding as zero, ids,
 * mode, pids): what queue() and queueInto() share; each writes the 64-bit fields in its own number type.
 */
function writeQueueWords(out: Buffer, at: number, queue: Pick<QueueRecord, 'id' | 'key' | 'uid' | 'gid' | 'cuid' | 'cgid' | 'mode' | 'lspid' | 'lrpid'>): void {
  writeRecordHeader(out, at, RecordType.IPC_MSG, IpcMsgLayout.BYTES);
  const perms = at + IpcMsgLayout.PERMS;
  out.writeUInt32LE(0, perms + IpcPermsLayout.NESTED_HEADER);
  out.writeUInt32LE(0, perms + IpcPermsLayout.NESTED_HEADER + 4);
  out.writeInt32LE(queue.id, perms + IpcPermsLayout.ID);
  out.writeUInt32LE(queue.key, perms + IpcPermsLayout.KEY);
  out.writeUInt32LE(queue.uid, perms + IpcPermsLayout.UID);
  out.writeUInt32LE(queue.gid, perms + IpcPermsLayout.GID);
  out.writeUInt32LE(queue.cuid, perms + IpcPermsLayout.CUID);
  out.writeUInt32LE(queue.cgid, perms + IpcPermsLayout.CGID);
  out.writeUInt32LE(queue.mode, perms + IpcPermsLayout.MODE);
  out.writeUInt32LE(0, perms + IpcPermsLayout.PADDING);
  out.writeInt32LE(queue.lspid, at + IpcMsgLayout.Q_LSPID);
  out.writeInt32LE(queue.lrpid, at + IpcMsgLayout.Q_LRPID);
}

/** Writes one message's record and BUFFER chunks at `at`; returns the offset after them. */
function writeMessage(out: Buffer, at: number, typeLow: number, typeHigh: number, body: Buffer, bodyStart: number, size: number): number {
  let pos = at;
  if (typeHigh === 0 && typeLow <= INT32_MAX) {
    writeRecordHeader(out, pos, RecordType.IPC_MSG_MSG, MsgMsgLayout.BYTES);
    out.writeUInt32LE(typeLow, pos + MsgMsgLayout.M_TYPE);
    out.writeUInt32LE(size, pos + MsgMsgLayout.M_TS);
    pos += MsgMsgLayout.BYTES;
  } else {
    writeRecordHeader(out, pos, RecordType.IPC_MSG_MSG, WideMsgMsgLayout.BYTES);
    out.writeUInt32LE(typeLow, pos + WideMsgMsgLayout.M_TYPE);
    out.writeInt32LE(typeHigh, pos + WideMsgMsgLayout.M_TYPE + 4);
    out.writeUInt32LE(size, pos + WideMsgMsgLayout.M_TS);
    out.writeUInt32LE(0, pos + WideMsgMsgLayout.PADDING);
    pos += WideMsgMsgLayout.BYTES;
  }
  let chunk = Math.min(size, DATALEN_MSG);
  let copied = 0;
  for (;;) {
    writeRecordHeader(out, pos, RecordType.BUFFER, RECORD_HEADER_BYTES + chunk);
    pos += RECORD_HEADER_BYTES;
    body.copy(out, pos, bodyStart + copied, bodyStart + copied + chunk);
    pos += chunk;
    copied += chunk;
    if (copied === size) return pos;
    chunk = Math.min(size - copied, DATALEN_SEG);
  }
}

/** Bytes of one message's record (v16 or widened) plus its chunked body. */
function messageBytes(wide: boolean, size: number): number {
  return (wide ? WideMsgMsgLayout.BYTES : MsgMsgLayout.BYTES) + encodedBodyBytes(size);
}

export class ImageEncoder {
  private readonly strictV16: boolean;

  constructor(options: EncoderOptions = {}) {
    this.strictV16 = options.strictV16 === true;
  }

  /** HEADER and the three utsname BUFFERs (release, version, machine), each 65 bytes NUL-padded. */
  header(header: ImageHeader): Buffer {
    const problem = archProblem(header.archId);
    if (problem !== undefined) throw new IpcCkptError('E_IMAGE_UNSUPPORTED', `cannot encode the header: ${problem}`);
    const fieldProblem = headerProblem(header);
    if (fieldProblem !== undefined) throw cannotEncode('the header', fieldProblem);
    const utsRecordBytes = RECORD_HEADER_BYTES + UTS_FIELD_BYTES;
    const out = Buffer.alloc(HeaderLayout.BYTES + 3 * utsRecordBytes);
    writeRecordHeader(out, 0, RecordType.HEADER, HeaderLayout.BYTES);
    out.writeBigUInt64LE(CHECKPOINT_MAGIC_HEAD, HeaderLayout.MAGIC);
    out.writeUInt16LE(header.archId, HeaderLayout.ARCH_ID);
    out.writeUInt16LE(header.major, HeaderLayout.MAJOR);
    out.writeUInt16LE(header.minor, HeaderLayout.MINOR);
    out.writeUInt16LE(header.patch, HeaderLayout.PATCH);
    out.writeUInt16LE(CHECKPOINT_VERSION, HeaderLayout.REV);
    out.writeUInt16LE(UTS_FIELD_BYTES, HeaderLayout.UTS_RELEASE_LEN);
    out.writeUInt16LE(UTS_FIELD_BYTES, HeaderLayout.UTS_VERSION_LEN);
    out.writeUInt16LE(UTS_FIELD_BYTES, HeaderLayout.UTS_MACHINE_LEN);
    out.writeBigUInt64LE(header.time, HeaderLayout.TIME);
    out.writeBigUInt64LE(header.uflags, HeaderLayout.UFLAGS);
    let pos = HeaderLayout.BYTES;
    for (const field of [header.kernelRelease, header.kernelVersion, header.machine]) {
      writeRecordHeader(out, pos, RecordType.BUFFER, utsRecordBytes);
      out.write(field, pos + RECORD_HEADER_BYTES, 'utf8');
      pos += utsRecordBytes;
    }
    return out;
  }

  /** IPC_NS: the namespace's limits. */
  limits(limits: NamespaceLimits): Buffer {
    const problem = limitsProblem(limits);
    if (problem !== undefined) throw cannotEncode('the namespace limits', problem);
    const out = Buffer.alloc(IpcNsLayout.BYTES);
    writeRecordHeader(out, 0, RecordType.IPC_NS, IpcNsLayout.BYTES);
    out.writeBigUInt64LE(limits.shmCtlmax, IpcNsLayout.SHM_CTLMAX);
    out.writeBigUInt64LE(limits.shmCtlall, IpcNsLayout.SHM_CTLALL);
    out.writeInt32LE(limits.shmCtlmni, IpcNsLayout.SHM_CTLMNI);
    out.writeInt32LE(limits.msgCtlmax, IpcNsLayout.MSG_CTLMAX);
    out.writeInt32LE(limits.msgCtlmnb, IpcNsLayout.MSG_CTLMNB);
    out.writeInt32LE(limits.msgCtlmni, IpcNsLayout.MSG_CTLMNI);
    out.writeInt32LE(limits.semCtlMsl, IpcNsLayout.SEM_CTL_MSL);
    out.writeInt32LE(limits.semCtlMns, IpcNsLayout.SEM_CTL_MNS);
    out.writeInt32LE(limits.semCtlOpm, IpcNsLayout.SEM_CTL_OPM);
    out.writeInt32LE(limits.semCtlMni, IpcNsLayout.SEM_CTL_MNI);
    return out;
  }

  /** The id-mapping record (ipc-ckpt extension, right after IPC_NS): ids are namespace-relative; the maps seen at save. */
  idMapping(mapping: ImageIdMapping): Buffer {
    if (this.strictV16) throw new IpcCkptError('E_IMAGE_UNSUPPORTED', 'cannot encode the id-mapping record in strict v16 mode: v16 holds ids as the host sees them');
    const problem = idMappingProblem(mapping);
    if (problem !== undefined) throw cannotEncode('the id-mapping record', problem);
    const extents = [...mapping.uid, ...mapping.gid];
    const out = Buffer.alloc(IdMappingLayout.HEADER_BYTES + extents.length * IdMappingLayout.EXTENT_BYTES);
    writeRecordHeader(out, 0, RecordType.ID_MAPPING, out.length);
    out.writeUInt16LE(mapping.uid.length, IdMappingLayout.UID_EXTENTS);
    out.writeUInt16LE(mapping.gid.length, IdMappingLayout.GID_EXTENTS);
    out.writeUInt32LE(mapping.ownUserNamespace ? ID_MAPPING_OWN_USER_NAMESPACE : 0, IdMappingLayout.FLAGS);
    extents.forEach((extent, index) => {
      const at = IdMappingLayout.HEADER_BYTES + index * IdMappingLayout.EXTENT_BYTES;
      out.writeUInt32LE(extent.inside, at + IdMappingLayout.EXTENT_INSIDE);
      out.writeUInt32LE(extent.outside, at + IdMappingLayout.EXTENT_OUTSIDE);
      out.writeUInt32LE(extent.count, at + IdMappingLayout.EXTENT_COUNT);
    });
    return out;
  }

  /** IPC{ipc_type = IPC_MSG, ipc_count}: the message-queue section header. */
  msgSection(queueCount: number): Buffer {
    const problem = queueCountProblem(queueCount);
    if (problem !== undefined) throw cannotEncode('the msg section', problem);
    const out = Buffer.alloc(IpcSectionLayout.BYTES);
    writeRecordHeader(out, 0, RecordType.IPC, IpcSectionLayout.BYTES);
    out.writeUInt32LE(RecordType.IPC_MSG, IpcSectionLayout.IPC_TYPE);
    out.writeUInt32LE(queueCount, IpcSectionLayout.IPC_COUNT);
    return out;
  }

  /** IPC_MSG with its nested perms; q_qnum messages must follow it. */
  queue(queue: QueueRecord): Buffer {
    const problem = queueProblem(queue);
    if (problem !== undefined) throw cannotEncode(`queue id ${queue.id}`, problem);
    const out = Buffer.allocUnsafe(IpcMsgLayout.BYTES);
    writeQueueWords(out, 0, queue);
    out.writeBigUInt64LE(BigInt(queue.seq), IpcMsgLayout.PERMS + IpcPermsLayout.SEQ);
    out.writeBigUInt64LE(queue.stime, IpcMsgLayout.Q_STIME);
    out.writeBigUInt64LE(queue.rtime, IpcMsgLayout.Q_RTIME);
    out.writeBigUInt64LE(queue.ctime, IpcMsgLayout.Q_CTIME);
    out.writeBigUInt64LE(queue.cbytes, IpcMsgLayout.Q_CBYTES);
    out.writeBigUInt64LE(queue.qnum, IpcMsgLayout.Q_QNUM);
    out.writeBigUInt64LE(queue.qbytes, IpcMsgLayout.Q_QBYTES);
    return out;
  }

  /**
   * The same IPC_MSG as queue(), from plain numbers, written at `at` of `out` (the save path's batches: no
   * bigint or buffer per queue); returns the offset after it. A record the rules refuse is reported as queue() would.
   */
  queueInto(out: Buffer, at: number, queue: NumericQueueRecord): number {
    if (!numericQueueInRange(queue)) {
      const problem = queueProblem(queueRecordOfNumbers(queue)) ?? `a field is beyond ${Number.MAX_SAFE_INTEGER}`;
      throw cannotEncode(`queue id ${queue.id}`, problem);
    }
    writeQueueWords(out, at, queue);
    writeU64(out, at + IpcMsgLayout.PERMS + IpcPermsLayout.SEQ, queue.seq);
    writeU64(out, at + IpcMsgLayout.Q_STIME, queue.stime);
    writeU64(out, at + IpcMsgLayout.Q_RTIME, queue.rtime);
    writeU64(out, at + IpcMsgLayout.Q_CTIME, queue.ctime);
    writeU64(out, at + IpcMsgLayout.Q_CBYTES, queue.cbytes);
    writeU64(out, at + IpcMsgLayout.Q_QNUM, queue.qnum);
    writeU64(out, at + IpcMsgLayout.Q_QBYTES, queue.qbytes);
    return at + IpcMsgLayout.BYTES;
  }

  /** IPC_MSG_MSG (v16's, or the widened one for a type beyond s32) and the body's BUFFER chunks. */
  message(message: MessageRecord): Buffer {
    const problem = messageTypeProblem(message.type) ?? messageSizeProblem(message.body.length);
    if (problem !== undefined) throw cannotEncode('a message', problem);
    const wide = message.type > BigInt(INT32_MAX);
    if (wide && this.strictV16) throw strictRefusal('a message', message.type);
    const out = Buffer.allocUnsafe(messageBytes(wide, message.body.length));
    const typeLow = Number(message.type & 0xffffffffn);
    const typeHigh = Number(message.type >> 32n);
    writeMessage(out, 0, typeLow, typeHigh, message.body, 0, message.body.length);
    return out;
  }

  /**
   * Encodes `count` messages of a native packed batch into one buffer (the save path's hot loop).
   * With `into` large enough, writes there and returns a view of it: reusing a buffer the caller knows
   * is no longer in flight spares a fresh allocation (and its page faults) per batch.
   */
  messagesFromPacked(packed: Buffer, count: number, into?: Buffer): Buffer {
    const total = this.packedMessagesBytes(packed, count);
    const out = into !== undefined && into.length >= total ? into.subarray(0, total) : Buffer.allocUnsafe(total);
    this.writePackedMessages(packed, count, out, 0);
    return out;
  }

  /** Checks `count` messages of a native packed batch and returns the bytes their records take (writePackedMessages writes them). */
  packedMessagesBytes(packed: Buffer, count: number): number {
    let total = 0;
    let pos = 0;
    for (let index = 0; index < count; index++) {
      if (pos + PACKED_MESSAGE_HEADER_BYTES > packed.length) {
        throw cannotEncode('a packed batch', `message ${index} at byte ${pos} has no complete header (${packed.length} bytes, ${count} messages)`);
      }
      const typeLow = packed.readUInt32LE(pos + PACKED_TYPE_OFFSET);
      const typeHigh = packed.readInt32LE(pos + PACKED_TYPE_OFFSET + 4);
      const size = packed.readUInt32LE(pos + PACKED_SIZE_OFFSET);
      if (typeHigh < 0 || (typeHigh === 0 && typeLow === 0)) {
        throw cannotEncode('a packed batch', `message ${index} has ${messageTypeProblem(packed.readBigInt64LE(pos + PACKED_TYPE_OFFSET))}`);
      }
      if (size > INT32_MAX) throw cannotEncode('a packed batch', `message ${index} has ${messageSizeProblem(size)}`);
      const wide = typeHigh !== 0 || typeLow > INT32_MAX;
      if (wide && this.strictV16) throw strictRefusal(`message ${index} of a packed batch`, packed.readBigInt64LE(pos + PACKED_TYPE_OFFSET));
      pos += PACKED_MESSAGE_HEADER_BYTES;
      if (size > packed.length - pos) {
        throw cannotEncode('a packed batch', `message ${index} claims ${size} bytes, ${packed.length - pos} remain`);
      }
      pos += size;
      total += messageBytes(wide, size);
    }
    if (pos !== packed.length) throw cannotEncode('a packed batch', `${packed.length - pos} bytes left after ${count} messages`);
    return total;
  }

  /** Writes the records of a packed batch that packedMessagesBytes accepted at `at` of `out`; returns the offset after them. */
  writePackedMessages(packed: Buffer, count: number, out: Buffer, at: number): number {
    let pos = 0;
    for (let index = 0; index < count; index++) {
      const typeLow = packed.readUInt32LE(pos + PACKED_TYPE_OFFSET);
      const typeHigh = packed.readInt32LE(pos + PACKED_TYPE_OFFSET + 4);
      const size = packed.readUInt32LE(pos + PACKED_SIZE_OFFSET);
      pos += PACKED_MESSAGE_HEADER_BYTES;
      at = writeMessage(out, at, typeLow, typeHigh, packed, pos, size);
      pos += size;
    }
    return at;
  }

  /** The integrity record (SHA-256 of every byte before it) followed by TAIL. */
  trailer(digest: Buffer): Buffer {
    if (digest.length !== SHA256_BYTES) throw cannotEncode('the integrity record', `digest is ${digest.length} bytes, SHA-256 has ${SHA256_BYTES}`);
    const out = Buffer.alloc(IntegrityLayout.BYTES + TailLayout.BYTES);
    writeRecordHeader(out, 0, RecordType.INTEGRITY, IntegrityLayout.BYTES);
    out.writeUInt32LE(INTEGRITY_ALGORITHM_SHA256, IntegrityLayout.ALGORITHM);
    out.writeUInt32LE(SHA256_BYTES, IntegrityLayout.DIGEST_LEN);
    digest.copy(out, IntegrityLayout.DIGEST);
    writeRecordHeader(out, IntegrityLayout.BYTES, RecordType.TAIL, TailLayout.BYTES);
    out.writeBigUInt64LE(CHECKPOINT_MAGIC_TAIL, IntegrityLayout.BYTES + TailLayout.MAGIC);
    return out;
  }
}

/** The cross-record rules of a whole image, as the decoder enforces them. */
function imageProblem(image: Image): string | undefined {
  const keys = new Set<number>();
  let previousSlot = -1;
  for (const { queue, messages } of image.queues) {
    const slot = queue.id % IPCMNI;
    if (slot <= previousSlot) return `queue id ${queue.id} (slot ${slot}) does not follow slot ${previousSlot} in ascending slot order`;
    previousSlot = slot;
    if (queue.key !== 0) {
      if (keys.has(queue.key)) return `queue id ${queue.id} repeats key 0x${queue.key.toString(16)}`;
      keys.add(queue.key);
    }
    if (queue.qnum !== BigInt(messages.length)) return `queue id ${queue.id} has q_qnum ${queue.qnum} but ${messages.length} messages`;
    const bytes = messages.reduce((sum, message) => sum + BigInt(message.body.length), 0n);
    if (queue.cbytes !== bytes) return `queue id ${queue.id} has q_cbytes ${queue.cbytes} but its messages hold ${bytes} bytes`;
  }
  return undefined;
}

/** Encodes a whole in-memory image (tests, small images): every record, the integrity record and TAIL. */
export function encodeImage(image: Image, options: EncoderOptions = {}): Buffer {
  const problem = imageProblem(image);
  if (problem !== undefined) throw cannotEncode('the image', problem);
  const encoder = new ImageEncoder(options);
  const parts: Buffer[] = [encoder.header(image.header), encoder.limits(image.limits)];
  if (image.idMapping !== undefined) parts.push(encoder.idMapping(image.idMapping));
  parts.push(encoder.msgSection(image.queues.length));
  for (const { queue, messages } of image.queues) {
    parts.push(encoder.queue(queue));
    for (const message of messages) parts.push(encoder.message(message));
  }
  if (image.posix) parts.push(...new PosixSectionEncoder(options.strictV16).encode(image.posix));
  const digest = new ImageDigest();
  for (const part of parts) digest.update(part);
  parts.push(encoder.trailer(digest.digest()));
  return Buffer.concat(parts);
}
