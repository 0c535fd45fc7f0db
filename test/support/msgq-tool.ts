// The independent queue oracle (test/fixtures/msgq-tool.c), built once and run inside a namespace with nsenter.
import { execFileSync } from 'node:child_process';
import { mkdirSync, renameSync, statSync } from 'node:fs';
import * as path from 'node:path';

const fixturesDir = path.resolve(__dirname, '..', 'fixtures');
export const MSGQ_TOOL_SOURCE = path.join(fixturesDir, 'msgq-tool.c');
/** The static binary; static so it also runs as the only file of a FROM scratch container image. */
export const MSGQ_TOOL_BINARY = path.join(fixturesDir, 'bin', 'msgq-tool');

function isUpToDate(): boolean {
  try {
    return statSync(MSGQ_TOOL_BINARY).mtimeMs >= statSync(MSGQ_TOOL_SOURCE).mtimeMs;
  } catch {
    return false;
  }
}

/** Builds the tool if it is missing or older than its source; safe when jest workers race (temp name + rename). */
export function buildMsgqTool(): string {
  if (isUpToDate()) return MSGQ_TOOL_BINARY;
  mkdirSync(path.dirname(MSGQ_TOOL_BINARY), { recursive: true });
  const temporary = `${MSGQ_TOOL_BINARY}.${process.pid}.${Date.now()}.tmp`;
  execFileSync('gcc', ['-O2', '-Wall', '-Wextra', '-static', '-o', temporary, MSGQ_TOOL_SOURCE], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  renameSync(temporary, MSGQ_TOOL_BINARY);
  return MSGQ_TOOL_BINARY;
}

/** A failed run of the tool, with its stderr and exit status. */
export class MsgqToolError extends Error {
  constructor(
    readonly args: readonly string[],
    readonly status: number | null,
    readonly stderr: string,
    readonly stdout: string,
  ) {
    super(`msgq-tool ${args.join(' ')} exited ${status}: ${stderr.trim() || stdout.trim()}`);
    this.name = 'MsgqToolError';
  }
}

/** Runs `msgq-tool ...args` inside the IPC namespace nsPath (nsenter --ipc); returns stdout, throws MsgqToolError. */
export function msgqTool(nsPath: string, ...args: Array<string | number | bigint>): string {
  const binary = buildMsgqTool();
  const argv = args.map(String);
  try {
    return execFileSync('nsenter', [`--ipc=${nsPath}`, '--', binary, ...argv], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      maxBuffer: 1 << 30,
    });
  } catch (error) {
    const failed = error as { status?: number | null; stderr?: string; stdout?: string };
    throw new MsgqToolError(argv, failed.status ?? null, failed.stderr ?? '', failed.stdout ?? '');
  }
}

export interface DumpedMessage {
  /** The message type as a decimal string (types reach 2^63-1). */
  type: string;
  size: number;
  /** The whole body in lowercase hex. */
  hex: string;
}

export interface DumpedQueue {
  id: number;
  /** Unsigned 32-bit key, 0 = IPC_PRIVATE. */
  key: number;
  uid: number;
  gid: number;
  cuid: number;
  cgid: number;
  /** 0777 bits only. */
  mode: number;
  qbytes: number;
  qnum: number;
  cbytes: number;
  /** Seconds since the epoch. */
  stime: number;
  rtime: number;
  ctime: number;
  lspid: number;
  lrpid: number;
  /** Every message in queue order, read with MSG_COPY (the queue is left untouched). */
  messages: DumpedMessage[];
}

export interface NamespaceDump {
  limits: { msgmax: number; msgmnb: number; msgmni: number };
  /** Every queue of the namespace in ascending index order. */
  queues: DumpedQueue[];
}

/** Every queue and message of the namespace at nsPath, without changing any of them. */
export function dumpNamespace(nsPath: string): NamespaceDump {
  return JSON.parse(msgqTool(nsPath, 'dump')) as NamespaceDump;
}

/** One received message as `recv` reports it. */
export interface ReceivedMessage {
  type: bigint;
  size: number;
  sha256: string;
}

/** msgrcv(id, type, IPC_NOWAIT) inside nsPath. */
export function receiveMessage(nsPath: string, id: number, type: bigint | number): ReceivedMessage {
  const [receivedType, size, sha256] = msgqTool(nsPath, 'recv', id, type, '--nowait').trim().split(' ');
  return { type: BigInt(receivedType), size: Number(size), sha256 };
}

/** The body `send ID TYPE SIZE SEED` sends (the tool's documented pattern), computed by the tool itself. */
export function patternBody(size: number, seed = 0): Buffer {
  const hex = execFileSync(buildMsgqTool(), ['pattern', String(size), String(seed)], { encoding: 'utf8' });
  return Buffer.from(hex.trim(), 'hex');
}
