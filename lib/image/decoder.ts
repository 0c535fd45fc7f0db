// Decodes an image as a stream of events, checking every record as v16's restore did and more.
// Nothing is allocated from a count or length before it is checked; message bodies go straight
// into packed batches of bounded size.
import { IpcCkptError } from '../errors';
import type { IdExtent, Image, ImageHeader, ImageIdMapping, MessageRecord, NamespaceLimits, QueueRecord } from './model';
import { ByteReader, type ImageInput } from './byte-reader';
import { PACKED_MESSAGE_HEADER_BYTES, PACKED_SIZE_OFFSET, PACKED_TYPE_OFFSET, unpackMessages } from './packed';
import {
  CHECKPOINT_MAGIC_HEAD,
  CHECKPOINT_MAGIC_TAIL,
  CHECKPOINT_VERSION,
  DATALEN_MSG,
  DATALEN_SEG,
  HeaderLayout,
  ID_MAPPING_MAX_EXTENTS,
  ID_MAPPING_OWN_USER_NAMESPACE,
  IdMappingLayout,
  INT32_MAX,
  INTEGRITY_ALGORITHM_SHA256,
  IntegrityLayout,
  IPC_SEQ_MAX,
  IpcMsgLayout,
  IpcNsLayout,
  IpcPermsLayout,
  IpcSectionLayout,
  MsgMsgLayout,
  RECORD_HEADER_BYTES,
  RECORD_LEN_OFFSET,
  RECORD_TYPE_OFFSET,
  RecordType,
  IPCMNI,
  SHA256_BYTES,
  TailLayout,
  UTS_FIELD_BYTES,
  WideMsgMsgLayout,
  describeRecordType,
} from './layout';
import { archProblem, idMappingProblem, limitsProblem, queueCountProblem, queueProblem } from './rules';
import { PosixSectionDecoder, unpackPosixMessages, type PosixImageEvent } from './posix-queues';
import type { PosixSection } from './model';

export type { ImageInput };

export interface DecoderOptions {
  /** Refuse widened (s64 m_type) message records: accept only what a v16 reader could. */
  strictV16?: boolean;
  /** Upper bound of one 'messages' batch in packed bytes (a single larger message still comes alone). */
  messageBatchBytes?: number;
  /**
   * Reuse one batch buffer: a 'messages' event's `packed` is then valid only until the next event is
   * asked for. Spares an allocation (and its page faults) per batch for consumers that do not keep batches.
   */
  reuseBatchBuffer?: boolean;
  /**
   * Hand consecutive queues whose records and messages are already buffered out together, as one 'queues'
   * event, instead of a 'queue' and a 'messages' event each (verifyImage: tens of thousands of small queues).
   */
  groupQueues?: boolean;
  /**
   * Skip SHA-256: only for bytes proven identical to an earlier read that was verified (a restore's second
   * read of a file it holds a read lease on). 'end' then carries the digest the integrity record stores.
   */
  unhashed?: boolean;
}

export const DEFAULT_MESSAGE_BATCH_BYTES = 4 * 1024 * 1024;

export type ImageEvent =
  | { kind: 'header'; header: ImageHeader; offset: number }
  | { kind: 'limits'; limits: NamespaceLimits; offset: number }
  /** Only in images whose ids are namespace-relative; right after 'limits'. */
  | { kind: 'idMapping'; idMapping: ImageIdMapping; offset: number }
  | { kind: 'section'; queueCount: number; offset: number }
  | { kind: 'queue'; queue: QueueRecord; offset: number }
  /**
   * groupQueues only: consecutive queues, each with the messages that were buffered with it (all of them but
   * possibly for the last entry, whose remaining messages follow as 'messages' events).
   */
  | { kind: 'queues'; entries: QueueGroupEntry[]; offset: number }
  /** Consecutive messages of the last queue, in the native packed layout; offset is the first one's record. */
  | { kind: 'messages'; queueId: number; packed: Buffer; count: number; offset: number }
  /** The integrity record matched and TAIL ended the input; offset is the integrity record's. */
  | { kind: 'end'; digest: Buffer; offset: number; imageBytes: number }
  | PosixImageEvent;

/** One queue of a 'queues' event. */
export interface QueueGroupEntry {
  queue: QueueRecord;
  offset: number;
  /** Its messages read with it, in the packed layout (valid as a 'messages' event's packed is). */
  packed: Buffer;
  count: number;
  /** The largest body among them. */
  largestMessageBytes: number;
}

/** Queues per 'queues' event at most. */
const GROUP_QUEUES = 4096;

const NO_MESSAGES = Buffer.alloc(0);

/** What readBufferedQueues took: the queues, the last one `open` when its messages go on, or the defect that ended it. */
interface QueueGroup {
  entries: QueueGroupEntry[];
  open?: { at: number; queue: QueueRecord; run: MessageRun };
  failure?: unknown;
}

function corrupt(offset: number, problem: string): IpcCkptError {
  return new IpcCkptError('E_IMAGE_CORRUPT', `record at offset ${offset}: ${problem}`, { offset });
}

function unsupported(offset: number, problem: string): IpcCkptError {
  return new IpcCkptError('E_IMAGE_UNSUPPORTED', `record at offset ${offset}: ${problem}`, { offset });
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function isZero(bytes: Buffer): boolean {
  return isZeroRange(bytes, 0, bytes.length);
}

/** bytes[start, end) are all zero (no subarray: this runs once per queue record). */
function isZeroRange(bytes: Buffer, start: number, end: number): boolean {
  for (let i = start; i < end; i++) if (bytes[i] !== 0) return false;
  return true;
}

function hex64(value: bigint): string {
  return `0x${value.toString(16).padStart(16, '0')}`;
}

/** Where readMessages is in a queue: shared by its awaiting path and its fast path. */
interface MessageRun {
  readonly qnum: number;
  readonly cbytes: number;
  /** Messages read so far. */
  index: number;
  /** Their body bytes. */
  bytesSoFar: number;
  /** The largest of them. */
  largestMessageBytes: number;
}

/** A DataView over the bytes of `bytes` (the fast path's reads and writes compile to plain loads and stores). */
function viewOf(bytes: Buffer): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** The last buffer viewed and its view: the fast path runs once a queue, mostly over the same chunk and batch buffer. */
class CachedView {
  private bytes: Buffer | undefined;
  private view: DataView | undefined;

  of(bytes: Buffer): DataView {
    if (bytes !== this.bytes || this.view === undefined) {
      this.bytes = bytes;
      this.view = viewOf(bytes);
    }
    return this.view;
  }
}

// The packed header size as a plain constant: the re-exported binding is a getter in compiled code.
const PACKED_HEADER_BYTES: number = PACKED_MESSAGE_HEADER_BYTES;

/** Below this many bytes a plain loop copies faster than Buffer.copy's native call. */
const LOOP_COPY_BYTES = 128;

/** A packed batch under construction; only a message larger than the batch size makes it grow. */
interface Batch {
  data: Buffer;
  pos: number;
  count: number;
  offset: number;
}

class ImageDecoder {
  private readonly strictV16: boolean;
  private readonly batchBytes: number;
  private readonly reuseBatchBuffer: boolean;
  /** The buffer the next batch may reuse (reuseBatchBuffer only). */
  private spareBatchBuffer: Buffer | undefined;
  /** The messages of the queue being read (for verifyImage's summary). */
  queueRun: MessageRun | undefined;
  private readonly inputView = new CachedView();
  private readonly groupQueues: boolean;
  /** The msg section's order so far: keys seen, and the slot of the last queue. */
  private readonly keys = new Set<number>();
  private previousSlot = -1;
  private readonly batchView = new CachedView();

  constructor(
    private readonly reader: ByteReader,
    options: DecoderOptions,
  ) {
    this.strictV16 = options.strictV16 === true;
    const batchBytes = options.messageBatchBytes ?? DEFAULT_MESSAGE_BATCH_BYTES;
    if (!Number.isInteger(batchBytes) || batchBytes < 1 || batchBytes > INT32_MAX) {
      throw new IpcCkptError('E_USAGE', `messageBatchBytes ${batchBytes} is not an integer in 1..${INT32_MAX}`);
    }
    this.batchBytes = batchBytes;
    this.reuseBatchBuffer = options.reuseBatchBuffer === true;
    this.groupQueues = options.groupQueues === true;
  }

  /** A buffer for a new batch of `capacity` bytes: the spare one when reusing and it is large enough. */
  private batchBuffer(capacity: number): Buffer {
    if (!this.reuseBatchBuffer) return Buffer.allocUnsafe(capacity);
    if (this.spareBatchBuffer === undefined || this.spareBatchBuffer.length < capacity) this.spareBatchBuffer = Buffer.allocUnsafe(capacity);
    return this.spareBatchBuffer;
  }

  /** A batch for the rest of a queue's messages, the first of them at `offset`. */
  private openBatch(run: MessageRun, offset: number): Batch {
    // What the queue still claims bounds the batch; the batch size bounds both claim and allocation.
    const claimed = PACKED_MESSAGE_HEADER_BYTES * (run.qnum - run.index) + (run.cbytes - run.bytesSoFar);
    const capacity = Math.min(Math.max(this.batchBytes, PACKED_MESSAGE_HEADER_BYTES), claimed);
    return { data: this.batchBuffer(capacity), pos: 0, count: 0, offset };
  }

  /** Buffers the next record header and peeks it; what names the record expected, for the error. */
  private async peekRecord(what: string): Promise<number> {
    const at = this.reader.offset;
    if (this.reader.available < RECORD_HEADER_BYTES && !(await this.reader.fill(RECORD_HEADER_BYTES))) {
      throw corrupt(at, `image ends at offset ${at + this.reader.available}, expected ${what}`);
    }
    return this.peekBufferedRecord();
  }

  /** peekRecord of a header already buffered: no promise (every queue of a buffered image goes through here). */
  private peekBufferedRecord(): number {
    const at = this.reader.offset;
    this.reader.peekHeader();
    if (this.reader.len < RECORD_HEADER_BYTES) {
      throw corrupt(at, `${describeRecordType(this.reader.type)} len ${this.reader.len} < ${RECORD_HEADER_BYTES}`);
    }
    return at;
  }

  /** Checks the peeked header against the expected type and size and consumes the whole record. */
  private async takeRecord(at: number, type: number, bytes: number, what: string): Promise<Buffer> {
    const { reader } = this;
    if (reader.type !== type) throw corrupt(at, `expected ${what}, found ${describeRecordType(reader.type)} len ${reader.len}`);
    if (reader.len !== bytes) throw corrupt(at, `${describeRecordType(type)} len ${reader.len}, expected ${bytes}`);
    await this.need(at, bytes);
    return reader.take(bytes);
  }

  /** takeRecord of a record already buffered (reader.available >= bytes): no promise. */
  private takeBufferedRecord(at: number, type: number, bytes: number, what: string): Buffer {
    const { reader } = this;
    if (reader.type !== type) throw corrupt(at, `expected ${what}, found ${describeRecordType(reader.type)} len ${reader.len}`);
    if (reader.len !== bytes) throw corrupt(at, `${describeRecordType(type)} len ${reader.len}, expected ${bytes}`);
    return reader.take(bytes);
  }

  private async need(at: number, bytes: number): Promise<void> {
    if (this.reader.available < bytes && !(await this.reader.fill(bytes))) {
      throw corrupt(
        at,
        `image ends at offset ${this.reader.offset + this.reader.available} inside ${describeRecordType(this.reader.type)} ` +
          `(record needs ${bytes} bytes, ${this.reader.available} present)`,
      );
    }
  }

  private async expectRecord(type: number, bytes: number, what: string): Promise<{ at: number; record: Buffer }> {
    const at = await this.peekRecord(what);
    return { at, record: await this.takeRecord(at, type, bytes, what) };
  }

  async *events(): AsyncGenerator<ImageEvent> {
    yield await this.readHeader();
    yield await this.readLimits();
    const idMapping = await this.readIdMapping();
    if (idMapping !== undefined) yield idMapping;
    const section = await this.readSection();
    yield section;
    let lastQueue: QueueRecord | undefined;
    for (let index = 0; index < section.queueCount; ) {
      if (this.groupQueues) {
        const group = this.readBufferedQueues(section.queueCount - index);
        if (group !== undefined) {
          index += group.entries.length;
          lastQueue = group.entries[group.entries.length - 1].queue;
          yield { kind: 'queues', entries: group.entries, offset: group.entries[0].offset };
          if (group.failure) throw group.failure;
          if (group.open) yield* this.readMessages(group.open.at, group.open.queue, group.open.run);
          continue;
        }
      }
      const buffered = this.reader.available >= IpcMsgLayout.BYTES;
      const at = buffered ? this.peekBufferedRecord() : await this.peekRecord('IPC_MSG');
      if (this.reader.type !== RecordType.IPC_MSG) {
        if (this.reader.type === RecordType.IPC_MSG_MSG && lastQueue !== undefined) {
          throw corrupt(at, `queue id ${lastQueue.id} has more messages than its q_qnum ${lastQueue.qnum}`);
        }
        throw corrupt(at, `the msg section claims ${section.queueCount} queues, found ${index} and then ${describeRecordType(this.reader.type)}`);
      }
      const record = buffered ? this.takeBufferedRecord(at, RecordType.IPC_MSG, IpcMsgLayout.BYTES, 'IPC_MSG') : await this.takeRecord(at, RecordType.IPC_MSG, IpcMsgLayout.BYTES, 'IPC_MSG');
      const queue = this.parseQueue(at, record);
      this.checkQueueOrder(at, queue);
      yield { kind: 'queue', queue, offset: at };
      yield* this.readMessages(at, queue);
      lastQueue = queue;
      index++;
    }
    // The POSIX queue section (ipc-ckpt extension), when there is one, comes before the integrity record.
    if ((await this.peekRecord('the integrity record')) >= 0 && this.reader.type === RecordType.POSIX_MQ_NS) {
      yield* new PosixSectionDecoder(this.reader, this.strictV16).events();
    }
    yield await this.readTrailer(section.queueCount, lastQueue);
  }

  /** Queues come in ascending slot (index) order, as the kernel lists them (two ids can never share a slot), and no key twice. */
  private checkQueueOrder(at: number, queue: QueueRecord): void {
    const slot = queue.id % IPCMNI;
    if (slot <= this.previousSlot) throw corrupt(at, `queue id ${queue.id} (slot ${slot}) does not follow slot ${this.previousSlot} in ascending slot order`);
    this.previousSlot = slot;
    if (queue.key !== 0) {
      if (this.keys.has(queue.key)) throw corrupt(at, `queue id ${queue.id} repeats key 0x${queue.key.toString(16)} of an earlier queue`);
      this.keys.add(queue.key);
    }
  }

  /**
   * The groupQueues fast path: the next queues whose IPC_MSG records lie whole in the reader's head chunk, each
   * with the messages readBufferedMessages takes for it, in one shared batch buffer. It stops before a record it
   * does not take (the awaiting path reads it and reports any defect); a queue whose messages it could not all
   * take ends the group as `open`, and readMessages goes on with it. Undefined when it took no queue.
   */
  private readBufferedQueues(remaining: number): QueueGroup | undefined {
    const entries: QueueGroupEntry[] = [];
    try {
      return this.readQueueGroup(remaining, entries);
    } catch (error) {
      // The queues before a defect are handed out first, as queue by queue would.
      if (entries.length === 0) throw error;
      return { entries, failure: error };
    }
  }

  private readQueueGroup(remaining: number, entries: QueueGroupEntry[]): QueueGroup | undefined {
    const { reader } = this;
    let batch: Batch | undefined;
    while (entries.length < remaining && entries.length < GROUP_QUEUES) {
      const head = reader.headChunk;
      if (head === undefined || head.length - reader.headStart < IpcMsgLayout.BYTES) break;
      reader.peekHeader();
      if (reader.type !== RecordType.IPC_MSG || reader.len !== IpcMsgLayout.BYTES) break;
      const at = reader.offset;
      const queue = this.parseQueue(at, reader.take(IpcMsgLayout.BYTES));
      this.checkQueueOrder(at, queue);
      const run: MessageRun = { qnum: Number(queue.qnum), cbytes: Number(queue.cbytes), index: 0, bytesSoFar: 0, largestMessageBytes: 0 };
      this.queueRun = run;
      const entry: QueueGroupEntry = { queue, offset: at, packed: NO_MESSAGES, count: 0, largestMessageBytes: 0 };
      entries.push(entry);
      if (run.qnum > 0) {
        // Packed messages are smaller than their records, so what is left of the head chunk bounds the group's.
        const left = (reader.headChunk?.length ?? 0) - reader.headStart;
        batch ??= { data: this.batchBuffer(Math.max(PACKED_MESSAGE_HEADER_BYTES, Math.min(this.batchBytes, left))), pos: 0, count: 0, offset: at };
        const start = batch.pos;
        this.readBufferedMessages(run, batch);
        entry.packed = batch.data.subarray(start, batch.pos);
        entry.count = run.index;
        entry.largestMessageBytes = run.largestMessageBytes;
        if (run.index < run.qnum) return { entries, open: { at, queue, run } };
      }
      if (run.bytesSoFar !== run.cbytes) {
        // Queue by queue hands out no messages of a queue whose bytes do not add up: neither does the group.
        entry.packed = NO_MESSAGES;
        entry.count = 0;
        entry.largestMessageBytes = 0;
        this.checkQueueBytes(at, queue, run);
      }
    }
    return entries.length > 0 ? { entries } : undefined;
  }

  /** Once every message of a queue is read: their sizes add up to its q_cbytes. */
  private checkQueueBytes(queueAt: number, queue: QueueRecord, run: MessageRun): void {
    if (run.bytesSoFar !== run.cbytes) throw corrupt(queueAt, `queue id ${queue.id} has q_cbytes ${run.cbytes} but its messages hold ${run.bytesSoFar} bytes`);
  }

  private async readHeader(): Promise<ImageEvent> {
    const { at, record } = await this.expectRecord(RecordType.HEADER, HeaderLayout.BYTES, 'HEADER (1): not a checkpoint image?');
    const magic = record.readBigUInt64LE(HeaderLayout.MAGIC);
    if (magic !== CHECKPOINT_MAGIC_HEAD) {
      throw corrupt(at, `HEADER magic ${hex64(magic)}, expected ${hex64(CHECKPOINT_MAGIC_HEAD)}: not a checkpoint image`);
    }
    const archId = record.readUInt16LE(HeaderLayout.ARCH_ID);
    const arch = archProblem(archId);
    if (arch !== undefined) throw unsupported(at, `HEADER ${arch}`);
    const rev = record.readUInt16LE(HeaderLayout.REV);
    if (rev !== CHECKPOINT_VERSION) throw unsupported(at, `HEADER rev ${rev}, this reader knows rev ${CHECKPOINT_VERSION}`);
    for (const [name, field] of [
      ['uts_release_len', HeaderLayout.UTS_RELEASE_LEN],
      ['uts_version_len', HeaderLayout.UTS_VERSION_LEN],
      ['uts_machine_len', HeaderLayout.UTS_MACHINE_LEN],
    ] as const) {
      const len = record.readUInt16LE(field);
      if (len !== UTS_FIELD_BYTES) throw corrupt(at, `HEADER ${name} ${len}, expected ${UTS_FIELD_BYTES}`);
    }
    const partial = {
      archId,
      major: record.readUInt16LE(HeaderLayout.MAJOR),
      minor: record.readUInt16LE(HeaderLayout.MINOR),
      patch: record.readUInt16LE(HeaderLayout.PATCH),
      time: record.readBigUInt64LE(HeaderLayout.TIME),
      uflags: record.readBigUInt64LE(HeaderLayout.UFLAGS),
    };
    const kernelRelease = await this.readUtsField('utsname release');
    const kernelVersion = await this.readUtsField('utsname version');
    const machine = await this.readUtsField('utsname machine');
    return { kind: 'header', header: { kernelRelease, kernelVersion, machine, ...partial }, offset: at };
  }

  private async readUtsField(name: string): Promise<string> {
    const { at, record } = await this.expectRecord(RecordType.BUFFER, RECORD_HEADER_BYTES + UTS_FIELD_BYTES, `the BUFFER of the ${name}`);
    const field = record.subarray(RECORD_HEADER_BYTES);
    const end = field.indexOf(0);
    if (end < 0) throw corrupt(at, `${name} has no NUL terminator in ${UTS_FIELD_BYTES} bytes`);
    if (!isZero(field.subarray(end))) throw corrupt(at, `${name} has non-zero bytes after its NUL terminator`);
    try {
      return utf8.decode(field.subarray(0, end));
    } catch {
      throw corrupt(at, `${name} is not valid UTF-8`);
    }
  }

  private async readLimits(): Promise<ImageEvent> {
    const { at, record } = await this.expectRecord(RecordType.IPC_NS, IpcNsLayout.BYTES, 'IPC_NS (110)');
    const limits: NamespaceLimits = {
      shmCtlmax: record.readBigUInt64LE(IpcNsLayout.SHM_CTLMAX),
      shmCtlall: record.readBigUInt64LE(IpcNsLayout.SHM_CTLALL),
      shmCtlmni: record.readInt32LE(IpcNsLayout.SHM_CTLMNI),
      msgCtlmax: record.readInt32LE(IpcNsLayout.MSG_CTLMAX),
      msgCtlmnb: record.readInt32LE(IpcNsLayout.MSG_CTLMNB),
      msgCtlmni: record.readInt32LE(IpcNsLayout.MSG_CTLMNI),
      semCtlMsl: record.readInt32LE(IpcNsLayout.SEM_CTL_MSL),
      semCtlMns: record.readInt32LE(IpcNsLayout.SEM_CTL_MNS),
      semCtlOpm: record.readInt32LE(IpcNsLayout.SEM_CTL_OPM),
      semCtlMni: record.readInt32LE(IpcNsLayout.SEM_CTL_MNI),
    };
    const problem = limitsProblem(limits);
    if (problem !== undefined) throw corrupt(at, `IPC_NS ${problem}`);
    return { kind: 'limits', limits, offset: at };
  }

  /** The optional id-mapping record between IPC_NS and the msg section. */
  private async readIdMapping(): Promise<ImageEvent | undefined> {
    const at = await this.peekRecord('the IPC (501) section of message queues');
    if (this.reader.type !== RecordType.ID_MAPPING) return undefined;
    if (this.strictV16) throw unsupported(at, `the id-mapping record ${describeRecordType(RecordType.ID_MAPPING)} is not v16 and strictV16 is set`);
    const len = this.reader.len;
    const most = IdMappingLayout.HEADER_BYTES + 2 * ID_MAPPING_MAX_EXTENTS * IdMappingLayout.EXTENT_BYTES;
    if (len < IdMappingLayout.HEADER_BYTES || len > most) throw corrupt(at, `ID_MAPPING (${RecordType.ID_MAPPING}) len ${len} is outside ${IdMappingLayout.HEADER_BYTES}..${most}`);
    await this.need(at, len);
    const record = this.reader.take(len);
    const uidCount = record.readUInt16LE(IdMappingLayout.UID_EXTENTS);
    const gidCount = record.readUInt16LE(IdMappingLayout.GID_EXTENTS);
    const flags = record.readUInt32LE(IdMappingLayout.FLAGS);
    const expected = IdMappingLayout.HEADER_BYTES + (uidCount + gidCount) * IdMappingLayout.EXTENT_BYTES;
    if (len !== expected) throw corrupt(at, `ID_MAPPING len ${len}, its ${uidCount} uid and ${gidCount} gid extents need ${expected}`);
    if ((flags & ~ID_MAPPING_OWN_USER_NAMESPACE) !== 0) throw corrupt(at, `ID_MAPPING flags 0x${flags.toString(16)} has unknown bits`);
    const extents: IdExtent[] = [];
    for (let index = 0; index < uidCount + gidCount; index++) {
      const base = IdMappingLayout.HEADER_BYTES + index * IdMappingLayout.EXTENT_BYTES;
      extents.push({
        inside: record.readUInt32LE(base + IdMappingLayout.EXTENT_INSIDE),
        outside: record.readUInt32LE(base + IdMappingLayout.EXTENT_OUTSIDE),
        count: record.readUInt32LE(base + IdMappingLayout.EXTENT_COUNT),
      });
    }
    const idMapping: ImageIdMapping = { ownUserNamespace: (flags & ID_MAPPING_OWN_USER_NAMESPACE) !== 0, uid: extents.slice(0, uidCount), gid: extents.slice(uidCount) };
    const problem = idMappingProblem(idMapping);
    if (problem !== undefined) throw corrupt(at, `ID_MAPPING ${problem}`);
    return { kind: 'idMapping', idMapping, offset: at };
  }

  private async readSection(): Promise<{ kind: 'section'; queueCount: number; offset: number }> {
    const { at, record } = await this.expectRecord(RecordType.IPC, IpcSectionLayout.BYTES, 'the IPC (501) section of message queues');
    const ipcType = record.readUInt32LE(IpcSectionLayout.IPC_TYPE);
    if (ipcType === RecordType.IPC_SHM || ipcType === RecordType.IPC_SEM) {
      throw unsupported(at, `IPC section of ${describeRecordType(ipcType)}: ipc-ckpt images hold message queues only`);
    }
    if (ipcType !== RecordType.IPC_MSG) throw corrupt(at, `IPC ipc_type ${ipcType}, expected IPC_MSG (${RecordType.IPC_MSG})`);
    const queueCount = record.readUInt32LE(IpcSectionLayout.IPC_COUNT);
    const problem = queueCountProblem(queueCount);
    if (problem !== undefined) throw corrupt(at, `IPC ${problem}`);
    return { kind: 'section', queueCount, offset: at };
  }

  private parseQueue(at: number, record: Buffer): QueueRecord {
    const perms = IpcMsgLayout.PERMS;
    if (!isZeroRange(record, perms + IpcPermsLayout.NESTED_HEADER, perms + IpcPermsLayout.ID)) {
      throw corrupt(at, 'IPC_MSG nested perms header is not zero');
    }
    if (record.readUInt32LE(perms + IpcPermsLayout.PADDING) !== 0) throw corrupt(at, 'IPC_MSG perms padding is not zero');
    const seq = record.readBigUInt64LE(perms + IpcPermsLayout.SEQ);
    const id = record.readInt32LE(perms + IpcPermsLayout.ID);
    if (seq > BigInt(IPC_SEQ_MAX)) throw corrupt(at, `IPC_MSG id ${id}: seq ${seq} is above ${IPC_SEQ_MAX}`);
    const queue: QueueRecord = {
      id,
      key: record.readUInt32LE(perms + IpcPermsLayout.KEY),
      uid: record.readUInt32LE(perms + IpcPermsLayout.UID),
      gid: record.readUInt32LE(perms + IpcPermsLayout.GID),
      cuid: record.readUInt32LE(perms + IpcPermsLayout.CUID),
      cgid: record.readUInt32LE(perms + IpcPermsLayout.CGID),
      mode: record.readUInt32LE(perms + IpcPermsLayout.MODE),
      seq: Number(seq),
      stime: record.readBigUInt64LE(IpcMsgLayout.Q_STIME),
      rtime: record.readBigUInt64LE(IpcMsgLayout.Q_RTIME),
      ctime: record.readBigUInt64LE(IpcMsgLayout.Q_CTIME),
      cbytes: record.readBigUInt64LE(IpcMsgLayout.Q_CBYTES),
      qnum: record.readBigUInt64LE(IpcMsgLayout.Q_QNUM),
      qbytes: record.readBigUInt64LE(IpcMsgLayout.Q_QBYTES),
      lspid: record.readInt32LE(IpcMsgLayout.Q_LSPID),
      lrpid: record.readInt32LE(IpcMsgLayout.Q_LRPID),
    };
    const problem = queueProblem(queue);
    if (problem !== undefined) throw corrupt(at, `IPC_MSG id ${id}: ${problem}`);
    return queue;
  }

  /** The queue's q_qnum messages, as packed batches; their sizes must add up to q_cbytes. */
  private async *readMessages(queueAt: number, queue: QueueRecord, resumed?: MessageRun): AsyncGenerator<ImageEvent> {
    const { reader } = this;
    const qnum = Number(queue.qnum);
    const cbytes = Number(queue.cbytes);
    // resumed: the fast path of readBufferedQueues read the first of its messages already.
    const run: MessageRun = resumed ?? { qnum, cbytes, index: 0, bytesSoFar: 0, largestMessageBytes: 0 };
    this.queueRun = run;
    let batch: Batch | undefined;
    while (run.index < qnum) {
      // The batch opens before the first message, so even a queue of one message takes the fast path.
      if (batch === undefined) batch = this.openBatch(run, reader.offset);
      this.readBufferedMessages(run, batch);
      if (run.index === qnum) break;
      const index = run.index;
      const bytesSoFar = run.bytesSoFar;
      const at = await this.peekRecord(`message ${index} of queue id ${queue.id}`);
      if (reader.type !== RecordType.IPC_MSG_MSG) {
        if (reader.type === RecordType.IPC_MSG || reader.type === RecordType.INTEGRITY || reader.type === RecordType.TAIL) {
          throw corrupt(at, `queue id ${queue.id} claims q_qnum ${qnum} but only ${index} messages follow`);
        }
        throw corrupt(at, `expected IPC_MSG_MSG (message ${index} of queue id ${queue.id}), found ${describeRecordType(reader.type)} len ${reader.len}`);
      }
      const len = reader.len;
      if (len !== MsgMsgLayout.BYTES && len !== WideMsgMsgLayout.BYTES) {
        throw corrupt(at, `IPC_MSG_MSG len ${len}, expected ${MsgMsgLayout.BYTES} (v16) or ${WideMsgMsgLayout.BYTES} (widened m_type)`);
      }
      if (len === WideMsgMsgLayout.BYTES && this.strictV16) {
        throw unsupported(at, `widened IPC_MSG_MSG (s64 m_type, ${WideMsgMsgLayout.BYTES} bytes) is not v16 and strictV16 is set`);
      }
      await this.need(at, len);
      const record = reader.take(len);
      let typeLow: number;
      let typeHigh: number;
      let size: number;
      if (len === MsgMsgLayout.BYTES) {
        const type = record.readInt32LE(MsgMsgLayout.M_TYPE);
        if (type < 1) throw corrupt(at, `IPC_MSG_MSG m_type ${type} < 1`);
        typeLow = type;
        typeHigh = 0;
        size = record.readUInt32LE(MsgMsgLayout.M_TS);
      } else {
        typeLow = record.readUInt32LE(WideMsgMsgLayout.M_TYPE);
        typeHigh = record.readInt32LE(WideMsgMsgLayout.M_TYPE + 4);
        if (typeHigh < 0 || (typeHigh === 0 && typeLow === 0)) {
          throw corrupt(at, `IPC_MSG_MSG m_type ${record.readBigInt64LE(WideMsgMsgLayout.M_TYPE)} < 1`);
        }
        size = record.readUInt32LE(WideMsgMsgLayout.M_TS);
        if (record.readUInt32LE(WideMsgMsgLayout.PADDING) !== 0) throw corrupt(at, 'IPC_MSG_MSG padding is not zero');
      }
      if (size > INT32_MAX) throw corrupt(at, `IPC_MSG_MSG m_ts ${size} > ${INT32_MAX}`);
      if (bytesSoFar + size > cbytes) {
        throw corrupt(at, `queue id ${queue.id}: message ${index} brings its bytes to ${bytesSoFar + size}, over q_cbytes ${cbytes}`);
      }

      const packedSize = PACKED_MESSAGE_HEADER_BYTES + size;
      // An empty batch is never handed out: a message larger than it makes it grow (readBody).
      if (batch !== undefined && batch.count > 0 && batch.pos + packedSize > batch.data.length) {
        yield { kind: 'messages', queueId: queue.id, packed: batch.data.subarray(0, batch.pos), count: batch.count, offset: batch.offset };
        batch = undefined;
      }
      if (batch === undefined) batch = this.openBatch(run, at);
      const data = batch.data;
      data.writeUInt32LE(typeLow >>> 0, batch.pos + PACKED_TYPE_OFFSET);
      data.writeInt32LE(typeHigh, batch.pos + PACKED_TYPE_OFFSET + 4);
      data.writeUInt32LE(size, batch.pos + PACKED_SIZE_OFFSET);
      await this.readBody(batch, batch.pos + PACKED_MESSAGE_HEADER_BYTES, size, packedSize, `message ${index} of queue id ${queue.id}`);
      batch.pos += packedSize;
      batch.count++;
      run.index = index + 1;
      run.bytesSoFar = bytesSoFar + size;
      if (size > run.largestMessageBytes) run.largestMessageBytes = size;
      if (packedSize > this.batchBytes) {
        yield { kind: 'messages', queueId: queue.id, packed: batch.data.subarray(0, batch.pos), count: batch.count, offset: batch.offset };
        batch = undefined;
      }
    }
    this.checkQueueBytes(queueAt, queue, run);
    if (batch !== undefined) {
      yield { kind: 'messages', queueId: queue.id, packed: batch.data.subarray(0, batch.pos), count: batch.count, offset: batch.offset };
    }
  }

  /**
   * The fast path of readMessages: appends to the open batch, in a plain loop, every next message whose
   * record and BUFFER chunks all lie in the reader's head chunk, that fits the batch and that passes every
   * check. It stops at the first message that does not, leaving it unread: readMessages' awaiting path
   * then reads it and reports any defect with the same message and offset.
   */
  private readBufferedMessages(run: MessageRun, batch: Batch): void {
    const { reader } = this;
    const image = reader.headChunk;
    if (image === undefined) return;
    const input = this.inputView.of(image);
    const start = reader.headStart;
    const end = image.length;
    const data = batch.data;
    const output = this.batchView.of(data);
    const capacity = data.length;
    const largestPacked = this.batchBytes;
    const wideAllowed = !this.strictV16;
    const { qnum, cbytes } = run;
    const messageType = RecordType.IPC_MSG_MSG;
    const bufferType = RecordType.BUFFER;
    const narrowBytes = MsgMsgLayout.BYTES;
    const wideBytes = WideMsgMsgLayout.BYTES;
    let largest = run.largestMessageBytes;
    let index = run.index;
    let bytesSoFar = run.bytesSoFar;
    let pos = start;
    let out = batch.pos;
    while (index < qnum) {
      if (end - pos < wideBytes || input.getUint32(pos + RECORD_TYPE_OFFSET, true) !== messageType) break;
      const len = input.getUint32(pos + RECORD_LEN_OFFSET, true);
      let typeLow: number;
      let typeHigh: number;
      let size: number;
      if (len === narrowBytes) {
        typeLow = input.getInt32(pos + MsgMsgLayout.M_TYPE, true);
        if (typeLow < 1) break;
        typeHigh = 0;
        size = input.getUint32(pos + MsgMsgLayout.M_TS, true);
      } else if (len === wideBytes && wideAllowed) {
        typeLow = input.getUint32(pos + WideMsgMsgLayout.M_TYPE, true);
        typeHigh = input.getInt32(pos + WideMsgMsgLayout.M_TYPE + 4, true);
        if (typeHigh < 0 || (typeHigh === 0 && typeLow === 0)) break;
        size = input.getUint32(pos + WideMsgMsgLayout.M_TS, true);
        if (input.getUint32(pos + WideMsgMsgLayout.PADDING, true) !== 0) break;
      } else {
        break;
      }
      const packedSize = PACKED_HEADER_BYTES + size;
      if (size > INT32_MAX || bytesSoFar + size > cbytes || packedSize > largestPacked || out + packedSize > capacity) break;

      // The body's chunks: all present and well formed, or the message is left to the awaiting path.
      let chunkAt = pos + len;
      let bodyAt = out + PACKED_HEADER_BYTES;
      let written = 0;
      let chunk = size < DATALEN_MSG ? size : DATALEN_MSG;
      let whole = false;
      for (;;) {
        const dataAt = chunkAt + RECORD_HEADER_BYTES;
        if (end - dataAt < chunk) break;
        if (input.getUint32(chunkAt + RECORD_TYPE_OFFSET, true) !== bufferType || input.getUint32(chunkAt + RECORD_LEN_OFFSET, true) !== RECORD_HEADER_BYTES + chunk) break;
        if (chunk < LOOP_COPY_BYTES) {
          let i = 0;
          for (; i + 4 <= chunk; i += 4) output.setUint32(bodyAt + i, input.getUint32(dataAt + i, true), true);
          for (; i < chunk; i++) data[bodyAt + i] = image[dataAt + i];
        } else {
          image.copy(data, bodyAt, dataAt, dataAt + chunk);
        }
        chunkAt = dataAt + chunk;
        bodyAt += chunk;
        written += chunk;
        if (written === size) {
          whole = true;
          break;
        }
        chunk = size - written < DATALEN_SEG ? size - written : DATALEN_SEG;
      }
      if (!whole) break;

      output.setUint32(out + PACKED_TYPE_OFFSET, typeLow, true);
      output.setInt32(out + PACKED_TYPE_OFFSET + 4, typeHigh, true);
      output.setUint32(out + PACKED_SIZE_OFFSET, size, true);
      if (size > largest) largest = size;
      out += packedSize;
      bytesSoFar += size;
      index++;
      pos = chunkAt;
    }
    if (pos === start) return;
    batch.count += index - run.index;
    batch.pos = out;
    run.index = index;
    run.bytesSoFar = bytesSoFar;
    run.largestMessageBytes = largest;
    reader.skip(pos - start);
  }

  /**
   * Reads a body of `size` bytes from its BUFFER chunks (first DATALEN_MSG, then DATALEN_SEG each) into the
   * batch at `at`. The batch grows only for a message beyond the batch size, and only as its bytes arrive.
   */
  private async readBody(batch: Batch, at: number, size: number, packedSize: number, what: string): Promise<void> {
    const { reader } = this;
    let written = 0;
    let chunk = Math.min(size, DATALEN_MSG);
    for (let chunkIndex = 0; ; chunkIndex++) {
      const chunkAt = reader.offset;
      if (reader.available < RECORD_HEADER_BYTES && !(await reader.fill(RECORD_HEADER_BYTES))) {
        throw corrupt(chunkAt, `image ends at offset ${chunkAt + reader.available}, expected BUFFER chunk ${chunkIndex} of ${what}`);
      }
      reader.peekHeader();
      if (reader.type !== RecordType.BUFFER || reader.len !== RECORD_HEADER_BYTES + chunk) {
        if (reader.len < RECORD_HEADER_BYTES) throw corrupt(chunkAt, `${describeRecordType(reader.type)} len ${reader.len} < ${RECORD_HEADER_BYTES}`);
        const found = reader.type === RecordType.BUFFER ? `BUFFER len ${reader.len}` : `${describeRecordType(reader.type)} len ${reader.len}`;
        throw corrupt(chunkAt, `expected BUFFER len ${RECORD_HEADER_BYTES + chunk} (chunk ${chunkIndex} of ${what}, m_ts ${size}), found ${found}`);
      }
      reader.skip(RECORD_HEADER_BYTES);
      const end = at + written + chunk;
      if (end > batch.data.length) {
        const grown = Buffer.allocUnsafe(Math.min(at - PACKED_MESSAGE_HEADER_BYTES + packedSize, Math.max(end, 2 * batch.data.length)));
        batch.data.copy(grown, 0, 0, at + written);
        batch.data = grown;
      }
      let copied = reader.copyBuffered(batch.data, at + written, chunk);
      while (copied < chunk) {
        if (!(await reader.fill(1))) {
          throw corrupt(chunkAt, `image ends at offset ${reader.offset} inside BUFFER chunk ${chunkIndex} of ${what} (${copied} of ${chunk} bytes present)`);
        }
        copied += reader.copyBuffered(batch.data, at + written + copied, chunk - copied);
      }
      written += chunk;
      if (written === size) return;
      chunk = Math.min(size - written, DATALEN_SEG);
    }
  }

  private async readTrailer(queueCount: number, lastQueue: QueueRecord | undefined): Promise<ImageEvent> {
    const { reader } = this;
    const at = await this.peekRecord('the integrity record');
    if (reader.type !== RecordType.INTEGRITY) {
      if (reader.type === RecordType.IPC_MSG) throw corrupt(at, `the msg section claims ${queueCount} queues but more follow`);
      if (reader.type === RecordType.IPC_MSG_MSG && lastQueue !== undefined) {
        throw corrupt(at, `queue id ${lastQueue.id} has more messages than its q_qnum ${lastQueue.qnum}`);
      }
      if (reader.type === RecordType.TAIL) throw corrupt(at, `TAIL without the integrity record (${describeRecordType(RecordType.INTEGRITY)}) before it`);
    }
    const computed = reader.digestBefore();
    const record = await this.takeRecord(at, RecordType.INTEGRITY, IntegrityLayout.BYTES, `the integrity record ${describeRecordType(RecordType.INTEGRITY)}`);
    const algorithm = record.readUInt32LE(IntegrityLayout.ALGORITHM);
    if (algorithm !== INTEGRITY_ALGORITHM_SHA256) throw corrupt(at, `integrity algorithm ${algorithm}, expected SHA-256 (${INTEGRITY_ALGORITHM_SHA256})`);
    const digestLen = record.readUInt32LE(IntegrityLayout.DIGEST_LEN);
    if (digestLen !== SHA256_BYTES) throw corrupt(at, `integrity digest length ${digestLen}, expected ${SHA256_BYTES}`);
    const stored = Buffer.from(record.subarray(IntegrityLayout.DIGEST, IntegrityLayout.DIGEST + SHA256_BYTES));
    if (computed !== undefined && !stored.equals(computed)) {
      throw corrupt(at, `integrity check failed: the image records SHA-256 ${stored.toString('hex')}, its bytes hash to ${computed.toString('hex')}`);
    }
    const tail = await this.expectRecord(RecordType.TAIL, TailLayout.BYTES, 'TAIL (9001)');
    const magic = tail.record.readBigUInt64LE(TailLayout.MAGIC);
    if (magic !== CHECKPOINT_MAGIC_TAIL) throw corrupt(tail.at, `TAIL magic ${hex64(magic)}, expected ${hex64(CHECKPOINT_MAGIC_TAIL)}`);
    const imageBytes = reader.offset;
    if (await reader.fill(1)) throw corrupt(imageBytes, 'unexpected bytes after TAIL');
    return { kind: 'end', digest: computed ?? stored, offset: at, imageBytes };
  }
}

/**
 * Decodes an image from a stream, yielding its records in order. Any defect throws an IpcCkptError
 * (E_IMAGE_CORRUPT, or E_IMAGE_UNSUPPORTED for another arch or strict v16) and nothing after it is
 * yielded. The integrity check ends the stream: act on nothing before 'end' unless the image was
 * verified first (verifyImage).
 */
export async function* decodeImage(input: ImageInput, options: DecoderOptions = {}): AsyncGenerator<ImageEvent> {
  const reader = ByteReader.from(input, options.unhashed !== true);
  try {
    yield* new ImageDecoder(reader, options).events();
  } finally {
    await reader.close();
  }
}

/** What a restore plans with, gathered in one verifying pass (memory: one entry per queue). */
export interface ImageSummary {
  header: ImageHeader;
  limits: NamespaceLimits;
  /** Present when the image's ids are namespace-relative. */
  idMapping?: ImageIdMapping;
  queues: Array<{ queue: QueueRecord; offset: number; largestMessageBytes: number }>;
  messageCount: number;
  messageBytes: number;
  largestMessageBytes: number;
  digest: Buffer;
  imageBytes: number;
  /** The POSIX section without its messages: limits, and each queue with its record's offset. */
  posix?: { limits: PosixSection['limits']; queues: Array<{ queue: PosixSection['queues'][number]['queue']; offset: number }> };
}

/**
 * Reads a whole image, checking everything including the integrity record, without keeping messages.
 * onMessages sees each batch of queue queueIndex (packed is reused: copy what you keep).
 */
export async function verifyImage(input: ImageInput, options: DecoderOptions = {}, onMessages?: (queueIndex: number, packed: Buffer, count: number) => void): Promise<ImageSummary> {
  let header: ImageHeader | undefined;
  let limits: NamespaceLimits | undefined;
  let idMapping: ImageIdMapping | undefined;
  const queues: ImageSummary['queues'] = [];
  let messageCount = 0;
  let messageBytes = 0;
  let largestMessageBytes = 0;
  let posix: ImageSummary['posix'];
  // The validating read: always hashed.
  const reader = ByteReader.from(input);
  const decoder = new ImageDecoder(reader, { ...options, reuseBatchBuffer: true, groupQueues: true });
  try {
    for await (const event of decoder.events()) {
      switch (event.kind) {
        case 'header':
          header = event.header;
          break;
        case 'limits':
          limits = event.limits;
          break;
        case 'idMapping':
          idMapping = event.idMapping;
          break;
        case 'queue':
          queues.push({ queue: event.queue, offset: event.offset, largestMessageBytes: 0 });
          break;
        case 'queues':
          for (const entry of event.entries) {
            queues.push({ queue: entry.queue, offset: entry.offset, largestMessageBytes: entry.largestMessageBytes });
            if (entry.count === 0) continue;
            largestMessageBytes = Math.max(largestMessageBytes, entry.largestMessageBytes);
            messageBytes += entry.packed.length - entry.count * PACKED_HEADER_BYTES;
            messageCount += entry.count;
            onMessages?.(queues.length - 1, entry.packed, entry.count);
          }
          break;
        case 'messages': {
          const entry = queues[queues.length - 1];
          // The decoder's count of the queue covers exactly the messages of the batches it has handed out.
          entry.largestMessageBytes = decoder.queueRun?.largestMessageBytes ?? 0;
          largestMessageBytes = Math.max(largestMessageBytes, entry.largestMessageBytes);
          messageBytes += event.packed.length - event.count * PACKED_HEADER_BYTES;
          messageCount += event.count;
          onMessages?.(queues.length - 1, event.packed, event.count);
          break;
        }
        case 'posix-section':
          posix = { limits: event.limits, queues: [] };
          break;
        case 'posix-queue':
          posix?.queues.push({ queue: event.queue, offset: event.offset });
          break;
        case 'end':
          if (header === undefined || limits === undefined) throw new IpcCkptError('E_INTERNAL', 'decoder ended without header or limits');
          return { header, limits, idMapping, queues, messageCount, messageBytes, largestMessageBytes, digest: event.digest, imageBytes: event.imageBytes, ...(posix ? { posix } : {}) };
      }
    }
  } finally {
    await reader.close();
  }
  throw new IpcCkptError('E_INTERNAL', 'decoder stopped without its end event');
}

/** Decodes a whole image held in memory (tests, small images). */
export async function decodeImageToMemory(bytes: Uint8Array, options: DecoderOptions = {}): Promise<Image> {
  return collectImage(decodeImage(bytes, options));
}

/** Collects decoder events into an in-memory Image (tests, inspect --messages on small images). */
export async function collectImage(events: AsyncIterable<ImageEvent> | Iterable<ImageEvent>): Promise<Image> {
  let header: ImageHeader | undefined;
  let limits: NamespaceLimits | undefined;
  let idMapping: ImageIdMapping | undefined;
  const queues: Image['queues'] = [];
  let posix: PosixSection | undefined;
  for await (const event of events) {
    if (event.kind === 'header') header = event.header;
    else if (event.kind === 'limits') limits = event.limits;
    else if (event.kind === 'idMapping') idMapping = event.idMapping;
    else if (event.kind === 'queue') queues.push({ queue: event.queue, messages: [] });
    else if (event.kind === 'messages') queues[queues.length - 1].messages.push(...unpackMessages(event.packed, event.count));
    else if (event.kind === 'posix-section') posix = { limits: event.limits, queues: [] };
    else if (event.kind === 'posix-queue') posix?.queues.push({ queue: event.queue, messages: [] });
    else if (event.kind === 'posix-messages') posix?.queues[posix.queues.length - 1].messages.push(...unpackPosixMessages(Buffer.from(event.packed), event.count));
    else if (event.kind === 'end') {
      if (header === undefined || limits === undefined) break;
      return { header, limits, ...(idMapping === undefined ? {} : { idMapping }), queues, ...(posix ? { posix } : {}) };
    }
  }
  throw new IpcCkptError('E_INTERNAL', 'decoder stopped without its end event');
}

export { unpackMessages };
export type { MessageRecord };
