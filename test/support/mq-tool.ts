// The independent POSIX queue oracle and application (test/fixtures/mq-tool.c), built once, run inside a namespace with nsenter.
import { execFileSync, spawn, ChildProcess } from 'node:child_process';
import { mkdirSync, renameSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { createInterface } from 'node:readline';

const fixturesDir = path.resolve(__dirname, '..', 'fixtures');
export const MQ_TOOL_SOURCE = path.join(fixturesDir, 'mq-tool.c');
/** Static, so it also runs as the only file of a FROM scratch container image. */
export const MQ_TOOL_BINARY = path.join(fixturesDir, 'bin', 'mq-tool');

/** Builds the tool if it is missing or older than its source; safe when jest workers race (temp name + rename). */
export function buildMqTool(): string {
  try {
    if (statSync(MQ_TOOL_BINARY).mtimeMs >= statSync(MQ_TOOL_SOURCE).mtimeMs) return MQ_TOOL_BINARY;
  } catch {
    // not built yet
  }
  mkdirSync(path.dirname(MQ_TOOL_BINARY), { recursive: true });
  const temporary = `${MQ_TOOL_BINARY}.${process.pid}.${Date.now()}.tmp`;
  execFileSync('gcc', ['-O2', '-Wall', '-Wextra', '-static', '-o', temporary, MQ_TOOL_SOURCE], { stdio: ['ignore', 'ignore', 'pipe'] });
  renameSync(temporary, MQ_TOOL_BINARY);
  return MQ_TOOL_BINARY;
}

/** Runs `mq-tool ...args` inside the IPC namespace nsPath; returns stdout (throws with stderr on failure). */
export function mqTool(nsPath: string, ...args: Array<string | number>): string {
  try {
    return execFileSync('nsenter', [`--ipc=${nsPath}`, '--', buildMqTool(), ...args.map(String)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 1 << 30 });
  } catch (error) {
    const failed = error as { status?: number; stderr?: string };
    throw new Error(`mq-tool ${args.join(' ')} exited ${failed.status}: ${failed.stderr ?? ''}`);
  }
}

export interface ReceivedPosixMessage {
  priority: number;
  size: number;
  /** The body in lowercase hex ('' for an empty body). */
  hex: string;
}

/** Receives (destructively) every message of a queue in delivery order, as the application sees them. */
export function receiveAll(nsPath: string, name: string): ReceivedPosixMessage[] {
  return mqTool(nsPath, 'receive', name)
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => {
      const [priority, size, hex] = line.split(' ');
      return { priority: Number(priority), size: Number(size), hex: hex === '-' ? '' : hex };
    });
}

/** "MAXMSG MSGSIZE CURMSGS" of a queue. */
export function queueAttr(nsPath: string, name: string): { maxmsg: number; msgsize: number; curmsgs: number } {
  const [maxmsg, msgsize, curmsgs] = mqTool(nsPath, 'attr', name).trim().split(' ').map(Number);
  return { maxmsg, msgsize, curmsgs };
}

/** The pattern body mq-tool's `send NAME PRIO SIZE SEED` sends (the same LCG as msgq-tool's). */
export function patternHex(size: number, seed: number): string {
  let state = (seed ^ 0x9e3779b9) >>> 0;
  const bytes = Buffer.alloc(size);
  for (let i = 0; i < size; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    bytes[i] = state >>> 24;
  }
  return bytes.toString('hex');
}

/** A long-lived mq-tool (notify, send-block, idle) in the namespace, resolved once it printed its first line. */
export async function startMqTool(nsPath: string, ...args: Array<string | number>): Promise<{ child: ChildProcess; firstLine: string; stop: () => Promise<void> }> {
  const child = spawn('nsenter', [`--ipc=${nsPath}`, '--', buildMqTool(), ...args.map(String)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout! });
  const firstLine = await new Promise<string>((resolve, reject) => {
    lines.once('line', resolve);
    child.once('exit', (code) => reject(new Error(`mq-tool ${args.join(' ')} exited ${code} before it was ready`)));
  });
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
  };
  return { child, firstLine, stop };
}
