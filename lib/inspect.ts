// Reads an image (verifying all of it) into a plain JSON-able report, and prints it as JSON or a table.
import { decodeImage, type DecoderOptions, type ImageInput } from './image/decoder';
import { ARCH_S390X, ARCH_X86_32, ARCH_X86_64, CHECKPOINT_VERSION, INT32_MAX, RecordType } from './image/layout';
import type { ImageIdMapping, QueueRecord } from './image/model';
import { formatIdMap } from './id-mapping';
import { unpackMessages } from './image/packed';
import { IpcCkptError } from './errors';
import { unpackPosixMessages } from './image/posix-queues';
import type { PosixLimits } from './image/model';

export const IMAGE_FORMAT_NAME = 'linux-cr v16 checkpoint image (ipc-ckpt)';

export interface InspectOptions {
  /** Include every message's type, size and body (base64); otherwise only counts are kept. */
  messages?: boolean;
  strictV16?: boolean;
}

/** A kernel time: seconds since the epoch as a decimal string (u64), and as an ISO date (null for 0 = never). */
export interface InspectTime {
  seconds: string;
  iso: string | null;
}

export interface InspectMessage {
  index: number;
  /** Decimal string: types reach 2^63-1. */
  type: string;
  size: number;
  /** The body, base64. */
  body: string;
}

export interface InspectQueue {
  id: number;
  index: number;
  seq: number;
  key: number;
  keyHex: string;
  mode: number;
  modeOctal: string;
  uid: number;
  gid: number;
  cuid: number;
  cgid: number;
  stime: InspectTime;
  rtime: InspectTime;
  ctime: InspectTime;
  /** u64 fields as decimal strings. */
  cbytes: string;
  qnum: string;
  qbytes: string;
  lspid: number;
  lrpid: number;
  /** Byte offset of the queue's IPC_MSG record in the image. */
  offset: number;
  messages?: InspectMessage[];
}

export interface InspectReport {
  format: { name: string; revision: number; extensions: string[]; bytes: number };
  kernel: { release: string; version: string; machine: string; major: number; minor: number; patch: number };
  arch: { id: number; name: string };
  time: InspectTime;
  uflags: string;
  limits: {
    msgCtlmax: number;
    msgCtlmnb: number;
    msgCtlmni: number;
    shmCtlmax: string;
    shmCtlall: string;
    shmCtlmni: number;
    semCtlMsl: number;
    semCtlMns: number;
    semCtlOpm: number;
    semCtlMni: number;
  };
  /** How the queues' uid/gid/cuid/cgid read: 'namespace' (the saved namespace's own view, with its maps) or 'host' (no id-mapping record). */
  ids: { view: 'namespace' | 'host'; text: string; mapping?: ImageIdMapping };
  totals: { queues: number; messages: number; messageBytes: number };
  queues: InspectQueue[];
  integrity: { algorithm: 'SHA-256'; recordType: number; digest: string; verified: true };
  /** The POSIX queue section (ipc-ckpt extension), when the image has one. */
  posix?: InspectPosix;
}

export interface InspectPosixQueue {
  name: string;
  mode: number;
  modeOctal: string;
  uid: number;
  gid: number;
  maxmsg: number;
  msgsize: number;
  curmsgs: number;
  qsize: number;
  /** Byte offset of the queue's POSIX_MQ_QUEUE record. */
  offset: number;
  /** With --messages: priority, size and body (base64) in delivery order. */
  messages?: Array<{ index: number; priority: number; size: number; body: string }>;
}

export interface InspectPosix {
  limits: PosixLimits;
  totals: { queues: number; messages: number; messageBytes: number };
  queues: InspectPosixQueue[];
}

const ARCH_NAMES = new Map<number, string>([
  [ARCH_X86_32, 'x86-32'],
  [ARCH_X86_64, 'x86-64'],
  [ARCH_S390X, 's390x'],
]);

/** The largest |seconds| a JS Date can hold. */
const MAX_DATE_SECONDS = 8_640_000_000_000n;

function kernelTime(seconds: bigint): InspectTime {
  const iso = seconds === 0n || seconds > MAX_DATE_SECONDS ? null : new Date(Number(seconds) * 1000).toISOString().replace('.000Z', 'Z');
  return { seconds: seconds.toString(), iso };
}

function queueReport(queue: QueueRecord, offset: number): InspectQueue {
  return {
    id: queue.id,
    index: queue.id % 32768,
    seq: queue.seq,
    key: queue.key,
    keyHex: `0x${queue.key.toString(16).padStart(8, '0')}`,
    mode: queue.mode,
    modeOctal: `0${queue.mode.toString(8).padStart(3, '0')}`,
    uid: queue.uid,
    gid: queue.gid,
    cuid: queue.cuid,
    cgid: queue.cgid,
    stime: kernelTime(queue.stime),
    rtime: kernelTime(queue.rtime),
    ctime: kernelTime(queue.ctime),
    cbytes: queue.cbytes.toString(),
    qnum: queue.qnum.toString(),
    qbytes: queue.qbytes.toString(),
    lspid: queue.lspid,
    lrpid: queue.lrpid,
    offset,
  };
}

function idsReport(idMapping: ImageIdMapping | undefined): InspectReport['ids'] {
  if (idMapping === undefined) return { view: 'host', text: 'host ids as the saving host saw them (no id-mapping record)' };
  const where = idMapping.ownUserNamespace
    ? "as the saved namespace saw them (it belonged to the saving ipc-ckpt's own user namespace)"
    : `as the saved namespace saw them inside its user namespace (uid_map ${formatIdMap(idMapping.uid)}; gid_map ${formatIdMap(idMapping.gid)})`;
  return { view: 'namespace', text: where, mapping: idMapping };
}

/** Decodes and verifies a whole image into a report; any defect throws the decoder's IpcCkptError. */
export async function inspect(input: ImageInput, options: InspectOptions = {}): Promise<InspectReport> {
  // Each batch is unpacked (and bodies base64-encoded) before the next is asked for, so one buffer serves all.
  const decoderOptions: DecoderOptions = { strictV16: options.strictV16, reuseBatchBuffer: true };
  let report: Partial<InspectReport> = {};
  const queues: InspectQueue[] = [];
  let messageCount = 0;
  let messageBytes = 0;
  let wideTypes = false;
  let posix: InspectPosix | undefined;
  let idMapping: ImageIdMapping | undefined;
  for await (const event of decodeImage(input, decoderOptions)) {
    switch (event.kind) {
      case 'header': {
        const { header } = event;
        report = {
          kernel: { release: header.kernelRelease, version: header.kernelVersion, machine: header.machine, major: header.major, minor: header.minor, patch: header.patch },
          arch: { id: header.archId, name: ARCH_NAMES.get(header.archId) ?? 'unknown' },
          time: kernelTime(header.time),
          uflags: header.uflags.toString(),
        };
        break;
      }
      case 'limits': {
        const { limits } = event;
        report.limits = { ...limits, shmCtlmax: limits.shmCtlmax.toString(), shmCtlall: limits.shmCtlall.toString() };
        break;
      }
      case 'idMapping':
        idMapping = event.idMapping;
        break;
      case 'section':
        break;
      case 'queue':
        queues.push(queueReport(event.queue, event.offset));
        if (options.messages === true) queues[queues.length - 1].messages = [];
        break;
      case 'messages': {
        const queue = queues[queues.length - 1];
        for (const message of unpackMessages(event.packed, event.count)) {
          if (message.type > BigInt(INT32_MAX)) wideTypes = true;
          messageBytes += message.body.length;
          if (queue.messages !== undefined) {
            queue.messages.push({ index: queue.messages.length, type: message.type.toString(), size: message.body.length, body: message.body.toString('base64') });
          }
        }
        messageCount += event.count;
        break;
      }
      case 'posix-section':
        posix = { limits: event.limits, totals: { queues: 0, messages: 0, messageBytes: 0 }, queues: [] };
        break;
      case 'posix-queue': {
        const q = event.queue;
        posix?.queues.push({ ...q, modeOctal: `0${q.mode.toString(8).padStart(3, '0')}`, offset: event.offset, ...(options.messages === true ? { messages: [] } : {}) });
        if (posix) posix.totals.queues++;
        break;
      }
      case 'posix-messages': {
        if (!posix) break;
        const queue = posix.queues[posix.queues.length - 1];
        for (const message of unpackPosixMessages(event.packed, event.count)) {
          posix.totals.messages++;
          posix.totals.messageBytes += message.body.length;
          queue.messages?.push({ index: queue.messages.length, priority: message.priority, size: message.body.length, body: message.body.toString('base64') });
        }
        break;
      }
      case 'end': {
        const { kernel, arch, time, uflags, limits } = report;
        if (kernel === undefined || arch === undefined || time === undefined || uflags === undefined || limits === undefined) {
          throw new IpcCkptError('E_INTERNAL', 'the decoder ended without a header or limits');
        }
        return {
          format: {
            name: IMAGE_FORMAT_NAME,
            revision: CHECKPOINT_VERSION,
            extensions: ['integrity-sha256', ...(wideTypes ? ['wide-m_type'] : []), ...(idMapping ? ['id-mapping'] : []), ...(posix ? ['posix-mqueue'] : [])],
            bytes: event.imageBytes,
          },
          kernel,
          arch,
          time,
          uflags,
          limits,
          ids: idsReport(idMapping),
          totals: { queues: queues.length, messages: messageCount, messageBytes },
          queues,
          integrity: { algorithm: 'SHA-256', recordType: RecordType.INTEGRITY, digest: event.digest.toString('hex'), verified: true },
          ...(posix ? { posix } : {}),
        };
      }
    }
  }
  throw new IpcCkptError('E_INTERNAL', 'the decoder stopped without its end event');
}

/** One JSON document, newline-terminated. */
export function formatInspectJson(report: InspectReport): string {
  return `${JSON.stringify(report, null, 2)}\n`;
}

export interface TableOptions {
  /** List each queue's messages under it (needs a report made with messages: true). */
  messages?: boolean;
}

/** A bytes preview: up to 16 bytes as hex, then the same bytes as ASCII ('.' for the rest). */
function preview(base64: string): string {
  const bytes = Buffer.from(base64, 'base64');
  const shown = bytes.subarray(0, 16);
  const hex = [...shown].map((byte) => byte.toString(16).padStart(2, '0')).join(' ');
  const ascii = [...shown].map((byte) => (byte >= 0x20 && byte < 0x7f ? String.fromCharCode(byte) : '.')).join('');
  const more = bytes.length > shown.length ? ' ...' : '';
  return bytes.length === 0 ? '(empty)' : `${hex}${more}  |${ascii}|`;
}

function alignRows(rows: string[][]): string[] {
  const widths = rows[0].map((_, column) => Math.max(...rows.map((row) => row[column].length)));
  return rows.map((row) => row.map((cell, column) => (column === row.length - 1 ? cell : cell.padEnd(widths[column]))).join('  ').trimEnd());
}

const dateCell = (time: InspectTime): string => time.iso ?? (time.seconds === '0' ? '-' : `@${time.seconds}`);

/** A readable summary: header lines, then one row per queue (and its messages when asked). */
export function formatInspectTable(report: InspectReport, options: TableOptions = {}): string {
  const { kernel, limits } = report;
  const lines = [
    `image:     ${report.format.name}, revision ${report.format.revision}, ${report.format.bytes} bytes (${report.format.extensions.join(', ')})`,
    `kernel:    ${kernel.release} ${kernel.version} ${kernel.machine}`,
    `arch:      ${report.arch.name} (${report.arch.id})`,
    `time:      ${dateCell(report.time)} (${report.time.seconds})`,
    `limits:    msgmax ${limits.msgCtlmax}, msgmnb ${limits.msgCtlmnb}, msgmni ${limits.msgCtlmni}; ` +
      `shmmax ${limits.shmCtlmax}, shmall ${limits.shmCtlall}, shmmni ${limits.shmCtlmni}; ` +
      `sem ${limits.semCtlMsl} ${limits.semCtlMns} ${limits.semCtlOpm} ${limits.semCtlMni}`,
    `integrity: ${report.integrity.algorithm} ${report.integrity.digest} (verified)`,
    `ids:       ${report.ids.text}`,
    `queues:    ${report.totals.queues}, messages ${report.totals.messages}, ${report.totals.messageBytes} bytes`,
  ];
  if (report.posix) lines.push(...posixTableLines(report.posix, options));
  if (report.queues.length === 0) return `${lines.join('\n')}\n`;
  const header = ['ID', 'KEY', 'MODE', 'OWNER', 'CREATOR', 'QNUM', 'CBYTES', 'QBYTES', 'STIME', 'RTIME', 'CTIME', 'LSPID', 'LRPID'];
  const rows = report.queues.map((queue) => [
    String(queue.id),
    queue.keyHex,
    queue.modeOctal,
    `${queue.uid}:${queue.gid}`,
    `${queue.cuid}:${queue.cgid}`,
    queue.qnum,
    queue.cbytes,
    queue.qbytes,
    dateCell(queue.stime),
    dateCell(queue.rtime),
    dateCell(queue.ctime),
    String(queue.lspid),
    String(queue.lrpid),
  ]);
  const table = alignRows([header, ...rows]);
  lines.push('', table[0]);
  report.queues.forEach((queue, index) => {
    lines.push(table[index + 1]);
    if (options.messages === true && queue.messages !== undefined) {
      const messageRows = queue.messages.map((message) => [`  #${message.index}`, `type ${message.type}`, `size ${message.size}`, preview(message.body)]);
      if (messageRows.length > 0) lines.push(...alignRows(messageRows));
    }
  });
  return `${lines.join('\n')}\n`;
}

/** The POSIX section of the table: its limits and totals, then one row per queue. */
function posixTableLines(posix: InspectPosix, options: TableOptions): string[] {
  const { limits, totals } = posix;
  const lines = [
    `mqueue:    queues_max ${limits.queuesMax}, msg_max ${limits.msgMax}, msgsize_max ${limits.msgsizeMax}, msg_default ${limits.msgDefault}, msgsize_default ${limits.msgsizeDefault}`,
    `posix:     ${totals.queues} queue(s), messages ${totals.messages}, ${totals.messageBytes} bytes`,
  ];
  if (posix.queues.length === 0) return lines;
  const rows = posix.queues.map((q) => [`/${q.name}`, q.modeOctal, `${q.uid}:${q.gid}`, String(q.maxmsg), String(q.msgsize), String(q.curmsgs), String(q.qsize)]);
  const table = alignRows([['NAME', 'MODE', 'OWNER', 'MAXMSG', 'MSGSIZE', 'CURMSGS', 'QSIZE'], ...rows]);
  lines.push('', table[0]);
  posix.queues.forEach((queue, index) => {
    lines.push(table[index + 1]);
    if (options.messages === true && queue.messages !== undefined && queue.messages.length > 0) {
      lines.push(...alignRows(queue.messages.map((m) => [`  #${m.index}`, `priority ${m.priority}`, `size ${m.size}`, preview(m.body)])));
    }
  });
  lines.push('');
  return lines;
}
