// The POSIX queue section of an image (ipc-ckpt extension, record types 9120-9139): its rules,
// encoder and decoder. It sits after the v16 msg section and before INTEGRITY, which covers it;
// v16 readers know none of it, so strict v16 refuses it. See docs/FORMAT.md.
import { IpcCkptError } from '../errors';
import { POSIX_PACKED_HEADER_BYTES } from '../native';
import type { ByteReader } from './byte-reader';
import {
  INT32_MAX,
  MQ_HARD_MSGMAX,
  MQ_HARD_MSGSIZEMAX,
  MQ_MIN_MSGSIZEMAX,
  MQ_NAME_MAX,
  MQ_PRIO_MAX,
  PosixMqMsgLayout,
  PosixMqNsLayout,
  PosixMqQueueLayout,
  RECORD_HEADER_BYTES,
  RECORD_LEN_OFFSET,
  RECORD_TYPE_OFFSET,
  RecordType,
  describeRecordType,
} from './layout';
import type { PosixLimits, PosixMessageRecord, PosixQueueRecord, PosixSection } from './model';

export { POSIX_PACKED_HEADER_BYTES };

export type PosixImageEvent =
  | { kind: 'posix-section'; limits: PosixLimits; queueCount: number; offset: number }
  | { kind: 'posix-queue'; queue: PosixQueueRecord; offset: number }
  /** Consecutive messages of the last POSIX queue, packed as lib/native.ts's POSIX layout. */
  | { kind: 'posix-messages'; queueName: string; packed: Buffer; count: number; offset: number };

// ---- rules (shared by encoder and decoder) ----

function isIntegerIn(value: number, min: number, max: number): boolean {
  return Number.isInteger(value) && value >= min && value <= max;
}

export function posixLimitsProblem(limits: PosixLimits): string | undefined {
  const checks: Array<[boolean, string]> = [
    [isIntegerIn(limits.queuesMax, 0, INT32_MAX), `queues_max ${limits.queuesMax} is not in 0..${INT32_MAX}`],
    [isIntegerIn(limits.msgMax, 1, MQ_HARD_MSGMAX), `msg_max ${limits.msgMax} is not in 1..${MQ_HARD_MSGMAX}`],
    [isIntegerIn(limits.msgsizeMax, MQ_MIN_MSGSIZEMAX, MQ_HARD_MSGSIZEMAX), `msgsize_max ${limits.msgsizeMax} is not in ${MQ_MIN_MSGSIZEMAX}..${MQ_HARD_MSGSIZEMAX}`],
    [isIntegerIn(limits.msgDefault, 1, MQ_HARD_MSGMAX), `msg_default ${limits.msgDefault} is not in 1..${MQ_HARD_MSGMAX}`],
    [isIntegerIn(limits.msgsizeDefault, MQ_MIN_MSGSIZEMAX, MQ_HARD_MSGSIZEMAX), `msgsize_default ${limits.msgsizeDefault} is not in ${MQ_MIN_MSGSIZEMAX}..${MQ_HARD_MSGSIZEMAX}`],
  ];
  for (const [ok, problem] of checks) if (!ok) return problem;
  return undefined;
}

/** A name mq_open takes after its '/': 1..255 bytes of UTF-8, no '/', no NUL, not '.' or '..'. */
export function posixNameProblem(name: string): string | undefined {
  if (typeof name !== 'string') return 'the name is not a string';
  const bytes = Buffer.byteLength(name, 'utf8');
  if (bytes < 1 || bytes > MQ_NAME_MAX) return `the name is ${bytes} bytes, not 1..${MQ_NAME_MAX}`;
  if (name.includes('/') || name.includes('\0')) return `the name '${name}' contains '/' or NUL`;
  if (name === '.' || name === '..') return `the name '${name}' is not a queue name`;
  return undefined;
}

export function posixQueueProblem(queue: PosixQueueRecord): string | undefined {
  const checks: Array<[boolean, string]> = [
    [isIntegerIn(queue.mode, 0, 0o7777), `mode 0${queue.mode.toString(8)} has bits beyond 07777`],
    [isIntegerIn(queue.uid, 0, 0xfffffffe), `uid ${queue.uid} is not in 0..4294967294`],
    [isIntegerIn(queue.gid, 0, 0xfffffffe), `gid ${queue.gid} is not in 0..4294967294`],
    [isIntegerIn(queue.maxmsg, 1, MQ_HARD_MSGMAX), `maxmsg ${queue.maxmsg} is not in 1..${MQ_HARD_MSGMAX}`],
    [isIntegerIn(queue.msgsize, 1, MQ_HARD_MSGSIZEMAX), `msgsize ${queue.msgsize} is not in 1..${MQ_HARD_MSGSIZEMAX}`],
    [isIntegerIn(queue.curmsgs, 0, queue.maxmsg), `curmsgs ${queue.curmsgs} is not in 0..maxmsg ${queue.maxmsg}`],
    [isIntegerIn(queue.qsize, 0, queue.curmsgs * queue.msgsize), `qsize ${queue.qsize} is not in 0..curmsgs * msgsize`],
  ];
  for (const [ok, problem] of checks) if (!ok) return problem;
  return posixNameProblem(queue.name);
}

/** A message of `queue` after one of priority `previous` (delivery order: priorities never rise). */
export function posixMessageProblem(queue: PosixQueueRecord, priority: number, size: number, previous: number | undefined): string | undefined {
  if (!isIntegerIn(priority, 0, MQ_PRIO_MAX - 1)) return `priority ${priority} is not in 0..${MQ_PRIO_MAX - 1}`;
  if (previous !== undefined && priority > previous) return `priority ${priority} after ${previous}: not in delivery order`;
  if (!isIntegerIn(size, 0, queue.msgsize)) return `size ${size} is above the queue's msgsize ${queue.msgsize}`;
  return undefined;
}

// ---- packed batches ----

export function packPosixMessages(messages: readonly PosixMessageRecord[]): Buffer {
  const packed = Buffer.allocUnsafe(messages.reduce((n, m) => n + POSIX_PACKED_HEADER_BYTES + m.body.length, 0));
  let pos = 0;
  for (const message of messages) {
    packed.writeUInt32LE(message.priority, pos);
    packed.writeUInt32LE(message.body.length, pos + 4);
    pos += POSIX_PACKED_HEADER_BYTES;
    pos += message.body.copy(packed, pos);
  }
  return packed;
}

/** Splits a packed POSIX batch; the bodies are views into `packed`. */
export function unpackPosixMessages(packed: Buffer, count: number): PosixMessageRecord[] {
  const messages: PosixMessageRecord[] = [];
  let pos = 0;
  for (let index = 0; index < count; index++) {
    if (pos + POSIX_PACKED_HEADER_BYTES > packed.length) throw new IpcCkptError('E_INTERNAL', `packed POSIX batch: message ${index} has no complete header`);
    const priority = packed.readUInt32LE(pos);
    const size = packed.readUInt32LE(pos + 4);
    pos += POSIX_PACKED_HEADER_BYTES;
    if (size > packed.length - pos) throw new IpcCkptError('E_INTERNAL', `packed POSIX batch: message ${index} claims ${size} bytes`);
    messages.push({ priority, body: packed.subarray(pos, pos + size) });
    pos += size;
  }
  if (pos !== packed.length) throw new IpcCkptError('E_INTERNAL', `packed POSIX batch: ${packed.length - pos} bytes left after ${count} messages`);
  return messages;
}

// ---- encoder ----

function cannotEncode(what: string, problem: string): IpcCkptError {
  return new IpcCkptError('E_INTERNAL', `cannot encode ${what}: ${problem}`);
}

function writeRecordHeader(out: Buffer, at: number, type: number, len: number): void {
  out.writeUInt32LE(type, at + RECORD_TYPE_OFFSET);
  out.writeUInt32LE(len, at + RECORD_LEN_OFFSET);
}

/** Encodes the POSIX section's records; strict v16 refuses the whole section. */
export class PosixSectionEncoder {
  constructor(private readonly strictV16 = false) {}

  section(limits: PosixLimits, queueCount: number): Buffer {
    if (this.strictV16) {
      throw new IpcCkptError('E_IMAGE_UNSUPPORTED', 'cannot encode POSIX message queues in strict v16 mode: v16 has no record for them (save with --sysv-only to leave them out)');
    }
    const problem = posixLimitsProblem(limits) ?? (isIntegerIn(queueCount, 0, INT32_MAX) ? undefined : `queue count ${queueCount}`);
    if (problem !== undefined) throw cannotEncode('the POSIX section', problem);
    const out = Buffer.alloc(PosixMqNsLayout.BYTES);
    writeRecordHeader(out, 0, RecordType.POSIX_MQ_NS, PosixMqNsLayout.BYTES);
    out.writeUInt32LE(limits.queuesMax, PosixMqNsLayout.QUEUES_MAX);
    out.writeUInt32LE(limits.msgMax, PosixMqNsLayout.MSG_MAX);
    out.writeUInt32LE(limits.msgsizeMax, PosixMqNsLayout.MSGSIZE_MAX);
    out.writeUInt32LE(limits.msgDefault, PosixMqNsLayout.MSG_DEFAULT);
    out.writeUInt32LE(limits.msgsizeDefault, PosixMqNsLayout.MSGSIZE_DEFAULT);
    out.writeUInt32LE(queueCount, PosixMqNsLayout.QUEUE_COUNT);
    return out;
  }

  queue(queue: PosixQueueRecord): Buffer {
    const problem = posixQueueProblem(queue);
    if (problem !== undefined) throw cannotEncode(`POSIX queue '/${queue.name}'`, problem);
    const name = Buffer.from(queue.name, 'utf8');
    const out = Buffer.alloc(PosixMqQueueLayout.BYTES + RECORD_HEADER_BYTES + name.length);
    writeRecordHeader(out, 0, RecordType.POSIX_MQ_QUEUE, PosixMqQueueLayout.BYTES);
    out.writeUInt32LE(name.length, PosixMqQueueLayout.NAME_LEN);
    out.writeUInt32LE(queue.mode, PosixMqQueueLayout.MODE);
    out.writeUInt32LE(queue.uid, PosixMqQueueLayout.UID);
    out.writeUInt32LE(queue.gid, PosixMqQueueLayout.GID);
    out.writeBigUInt64LE(BigInt(queue.maxmsg), PosixMqQueueLayout.MAXMSG);
    out.writeBigUInt64LE(BigInt(queue.msgsize), PosixMqQueueLayout.MSGSIZE);
    out.writeBigUInt64LE(BigInt(queue.curmsgs), PosixMqQueueLayout.CURMSGS);
    out.writeBigUInt64LE(BigInt(queue.qsize), PosixMqQueueLayout.QSIZE);
    writeRecordHeader(out, PosixMqQueueLayout.BYTES, RecordType.BUFFER, RECORD_HEADER_BYTES + name.length);
    name.copy(out, PosixMqQueueLayout.BYTES + RECORD_HEADER_BYTES);
    return out;
  }

  /** POSIX_MQ_MSG + BUFFER for each of `count` packed messages of `queue`, in one buffer. */
  messagesFromPacked(queue: PosixQueueRecord, packed: Buffer, count: number): Buffer {
    let total = 0;
    let previous: number | undefined;
    for (const message of unpackPosixMessages(packed, count)) {
      const problem = posixMessageProblem(queue, message.priority, message.body.length, previous);
      if (problem !== undefined) throw cannotEncode(`a message of POSIX queue '/${queue.name}'`, problem);
      previous = message.priority;
      total += PosixMqMsgLayout.BYTES + RECORD_HEADER_BYTES + message.body.length;
    }
    const out = Buffer.allocUnsafe(total);
    let at = 0;
    for (const message of unpackPosixMessages(packed, count)) {
      writeRecordHeader(out, at, RecordType.POSIX_MQ_MSG, PosixMqMsgLayout.BYTES);
      out.writeUInt32LE(message.priority, at + PosixMqMsgLayout.PRIORITY);
      out.writeUInt32LE(message.body.length, at + PosixMqMsgLayout.SIZE);
      at += PosixMqMsgLayout.BYTES;
      writeRecordHeader(out, at, RecordType.BUFFER, RECORD_HEADER_BYTES + message.body.length);
      at += RECORD_HEADER_BYTES;
      at += message.body.copy(out, at);
    }
    return out;
  }

  /** The whole section of an in-memory image. */
  encode(section: PosixSection): Buffer[] {
    const parts = [this.section(section.limits, section.queues.length)];
    let previousName: string | undefined;
    for (const { queue, messages } of section.queues) {
      if (previousName !== undefined && Buffer.compare(Buffer.from(previousName), Buffer.from(queue.name)) >= 0) {
        throw cannotEncode('the POSIX section', `queue '/${queue.name}' does not follow '/${previousName}' in ascending name order`);
      }
      previousName = queue.name;
      const bytes = messages.reduce((n, m) => n + m.body.length, 0);
      if (messages.length !== queue.curmsgs || bytes !== queue.qsize) {
        throw cannotEncode(`POSIX queue '/${queue.name}'`, `curmsgs ${queue.curmsgs} / qsize ${queue.qsize} but ${messages.length} messages of ${bytes} bytes`);
      }
      parts.push(this.queue(queue));
      if (messages.length > 0) parts.push(this.messagesFromPacked(queue, packPosixMessages(messages), messages.length));
    }
    return parts;
  }
}

// ---- decoder ----

function corrupt(offset: number, problem: string): IpcCkptError {
  return new IpcCkptError('E_IMAGE_CORRUPT', `record at offset ${offset}: ${problem}`, { offset });
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Packed bytes per 'posix-messages' event (a single larger message still comes alone). */
const POSIX_BATCH_BYTES = 4 * 1024 * 1024;

/**
 * Reads the POSIX section at the reader's position (the peeked record is POSIX_MQ_NS). Every length
 * and count is checked against the kernel's bounds before anything is allocated from it.
 */
export class PosixSectionDecoder {
  constructor(
    private readonly reader: ByteReader,
    private readonly strictV16: boolean,
  ) {}

  private async peek(what: string): Promise<number> {
    const { reader } = this;
    const at = reader.offset;
    if (reader.available < RECORD_HEADER_BYTES && !(await reader.fill(RECORD_HEADER_BYTES))) {
      throw corrupt(at, `image ends at offset ${at + reader.available}, expected ${what}`);
    }
    reader.peekHeader();
    if (reader.len < RECORD_HEADER_BYTES) throw corrupt(at, `${describeRecordType(reader.type)} len ${reader.len} < ${RECORD_HEADER_BYTES}`);
    return at;
  }

  private async take(type: number, bytes: number, what: string): Promise<{ at: number; record: Buffer }> {
    const { reader } = this;
    const at = await this.peek(what);
    if (reader.type !== type) throw corrupt(at, `expected ${what}, found ${describeRecordType(reader.type)} len ${reader.len}`);
    if (reader.len !== bytes) throw corrupt(at, `${what} len ${reader.len}, expected ${bytes}`);
    if (reader.available < bytes && !(await reader.fill(bytes))) {
      throw corrupt(at, `image ends at offset ${reader.offset + reader.available} inside ${what} (record needs ${bytes} bytes)`);
    }
    return { at, record: reader.take(bytes) };
  }

  /** A BUFFER of exactly `size` bytes, copied into `into` at `pos` (or a new buffer). */
  private async readBuffer(size: number, what: string, into?: Buffer, pos = 0): Promise<Buffer> {
    const { reader } = this;
    const at = await this.peek(`the BUFFER of ${what}`);
    if (reader.type !== RecordType.BUFFER || reader.len !== RECORD_HEADER_BYTES + size) {
      throw corrupt(at, `expected BUFFER len ${RECORD_HEADER_BYTES + size} (${what}), found ${describeRecordType(reader.type)} len ${reader.len}`);
    }
    reader.skip(RECORD_HEADER_BYTES);
    const target = into ?? Buffer.allocUnsafe(size);
    let copied = reader.copyBuffered(target, pos, size);
    while (copied < size) {
      if (!(await reader.fill(1))) throw corrupt(at, `image ends at offset ${reader.offset} inside the BUFFER of ${what} (${copied} of ${size} bytes present)`);
      copied += reader.copyBuffered(target, pos + copied, size - copied);
    }
    return target;
  }

  async *events(): AsyncGenerator<PosixImageEvent> {
    const at = await this.peek('POSIX_MQ_NS');
    if (this.strictV16) {
      throw new IpcCkptError('E_IMAGE_UNSUPPORTED', `record at offset ${at}: ${describeRecordType(RecordType.POSIX_MQ_NS)} is an ipc-ckpt extension (POSIX queues) that strict v16 refuses`, { offset: at });
    }
    const { record } = await this.take(RecordType.POSIX_MQ_NS, PosixMqNsLayout.BYTES, 'POSIX_MQ_NS (9120)');
    const limits: PosixLimits = {
      queuesMax: record.readUInt32LE(PosixMqNsLayout.QUEUES_MAX),
      msgMax: record.readUInt32LE(PosixMqNsLayout.MSG_MAX),
      msgsizeMax: record.readUInt32LE(PosixMqNsLayout.MSGSIZE_MAX),
      msgDefault: record.readUInt32LE(PosixMqNsLayout.MSG_DEFAULT),
      msgsizeDefault: record.readUInt32LE(PosixMqNsLayout.MSGSIZE_DEFAULT),
    };
    const limitsProblem = posixLimitsProblem(limits);
    if (limitsProblem !== undefined) throw corrupt(at, `POSIX_MQ_NS ${limitsProblem}`);
    const queueCount = record.readUInt32LE(PosixMqNsLayout.QUEUE_COUNT);
    if (queueCount > INT32_MAX) throw corrupt(at, `POSIX_MQ_NS queue count ${queueCount} > ${INT32_MAX}`);
    yield { kind: 'posix-section', limits, queueCount, offset: at };
    let previousName: Buffer | undefined;
    for (let index = 0; index < queueCount; index++) {
      const queueAt = await this.peek('POSIX_MQ_QUEUE');
      if (this.reader.type !== RecordType.POSIX_MQ_QUEUE) {
        throw corrupt(queueAt, `the POSIX section claims ${queueCount} queues, found ${index} and then ${describeRecordType(this.reader.type)}`);
      }
      const { name, queue } = await this.readQueue(queueAt);
      if (previousName !== undefined && Buffer.compare(previousName, name) >= 0) {
        throw corrupt(queueAt, `POSIX queue '/${queue.name}' does not follow '/${previousName.toString()}' in ascending name order`);
      }
      previousName = name;
      yield { kind: 'posix-queue', queue, offset: queueAt };
      yield* this.readMessages(queueAt, queue);
    }
  }

  private async readQueue(at: number): Promise<{ name: Buffer; queue: PosixQueueRecord }> {
    const { record } = await this.take(RecordType.POSIX_MQ_QUEUE, PosixMqQueueLayout.BYTES, 'POSIX_MQ_QUEUE (9121)');
    const nameLen = record.readUInt32LE(PosixMqQueueLayout.NAME_LEN);
    const big = (field: number, name: string): number => {
      const value = record.readBigUInt64LE(field);
      if (value > BigInt(INT32_MAX)) throw corrupt(at, `POSIX_MQ_QUEUE ${name} ${value} > ${INT32_MAX}`);
      return Number(value);
    };
    const fields = {
      mode: record.readUInt32LE(PosixMqQueueLayout.MODE),
      uid: record.readUInt32LE(PosixMqQueueLayout.UID),
      gid: record.readUInt32LE(PosixMqQueueLayout.GID),
      maxmsg: big(PosixMqQueueLayout.MAXMSG, 'maxmsg'),
      msgsize: big(PosixMqQueueLayout.MSGSIZE, 'msgsize'),
      curmsgs: big(PosixMqQueueLayout.CURMSGS, 'curmsgs'),
      qsize: 0,
    };
    const qsize = record.readBigUInt64LE(PosixMqQueueLayout.QSIZE);
    if (qsize > BigInt(Number.MAX_SAFE_INTEGER)) throw corrupt(at, `POSIX_MQ_QUEUE qsize ${qsize} is beyond 2^53`);
    fields.qsize = Number(qsize);
    if (nameLen < 1 || nameLen > MQ_NAME_MAX) throw corrupt(at, `POSIX_MQ_QUEUE name_len ${nameLen} is not 1..${MQ_NAME_MAX}`);
    const name = await this.readBuffer(nameLen, 'the POSIX queue name');
    let text: string;
    try {
      text = utf8.decode(name);
    } catch {
      throw corrupt(at, 'POSIX_MQ_QUEUE name is not valid UTF-8');
    }
    const queue: PosixQueueRecord = { name: text, ...fields };
    const problem = posixQueueProblem(queue);
    if (problem !== undefined) throw corrupt(at, `POSIX queue '/${text}': ${problem}`);
    return { name: Buffer.from(name), queue };
  }

  private async *readMessages(queueAt: number, queue: PosixQueueRecord): AsyncGenerator<PosixImageEvent> {
    let batch: { data: Buffer; pos: number; count: number; offset: number } | undefined;
    let bytes = 0;
    let previous: number | undefined;
    for (let index = 0; index < queue.curmsgs; index++) {
      const at = await this.peek(`message ${index} of POSIX queue '/${queue.name}'`);
      if (this.reader.type !== RecordType.POSIX_MQ_MSG) {
        throw corrupt(at, `POSIX queue '/${queue.name}' claims ${queue.curmsgs} messages, found ${index} and then ${describeRecordType(this.reader.type)}`);
      }
      const { record } = await this.take(RecordType.POSIX_MQ_MSG, PosixMqMsgLayout.BYTES, 'POSIX_MQ_MSG (9122)');
      const priority = record.readUInt32LE(PosixMqMsgLayout.PRIORITY);
      const size = record.readUInt32LE(PosixMqMsgLayout.SIZE);
      const problem = posixMessageProblem(queue, priority, size, previous);
      if (problem !== undefined) throw corrupt(at, `message ${index} of POSIX queue '/${queue.name}': ${problem}`);
      if (bytes + size > queue.qsize) throw corrupt(at, `message ${index} of POSIX queue '/${queue.name}' brings its bytes to ${bytes + size}, over qsize ${queue.qsize}`);
      previous = priority;
      const packedSize = POSIX_PACKED_HEADER_BYTES + size;
      if (batch !== undefined && batch.pos + packedSize > batch.data.length) {
        yield { kind: 'posix-messages', queueName: queue.name, packed: batch.data.subarray(0, batch.pos), count: batch.count, offset: batch.offset };
        batch = undefined;
      }
      if (batch === undefined) {
        // What the queue still claims bounds the allocation (its checked curmsgs and qsize), and so does the batch size.
        const claimed = POSIX_PACKED_HEADER_BYTES * (queue.curmsgs - index) + (queue.qsize - bytes);
        batch = { data: Buffer.allocUnsafe(Math.max(packedSize, Math.min(POSIX_BATCH_BYTES, claimed))), pos: 0, count: 0, offset: at };
      }
      batch.data.writeUInt32LE(priority, batch.pos);
      batch.data.writeUInt32LE(size, batch.pos + 4);
      await this.readBuffer(size, `message ${index} of POSIX queue '/${queue.name}'`, batch.data, batch.pos + POSIX_PACKED_HEADER_BYTES);
      batch.pos += packedSize;
      batch.count++;
      bytes += size;
    }
    if (bytes !== queue.qsize) throw corrupt(queueAt, `POSIX queue '/${queue.name}' has qsize ${queue.qsize} but its messages hold ${bytes} bytes`);
    if (batch !== undefined) yield { kind: 'posix-messages', queueName: queue.name, packed: batch.data.subarray(0, batch.pos), count: batch.count, offset: batch.offset };
  }
}
