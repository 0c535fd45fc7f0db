// SHA-256 on a second thread: the main thread copies bytes into a shared ring and goes on encoding or
// parsing while a worker_threads worker hashes them. Every call stays synchronous (Atomics.wait) so
// ImageDigest keeps its API; one worker per thread that uses it, shared by all its running hashes.
import { Worker } from 'node:worker_threads';
import { IpcCkptError } from '../errors';

/** Ring of bytes on their way to the worker: big enough to keep it busy while the main thread works (a power of two). */
const RING_BYTES = 4 << 20;
/**
 * Where the ring's int32 byte counters start: just below 2^31, so that every run soon crosses the
 * point where they turn negative (the offset arithmetic must hold there, not only in a 2 GiB test).
 */
const COUNTER_START = 0x7fffffff - 3 * (1 << 20) + 1;
/** Largest payload of one ring entry (a larger update is split). */
const SPAN_BYTES = 1 << 20;
/** Ring entries start on this alignment, so an entry header never wraps around the ring's end. */
const ENTRY_ALIGN = 16;
const ENTRY_HEADER_BYTES = 16;
/** The worker leaves this long after the last running hash ends (a restore's second pass reuses it). */
const IDLE_EXIT_MS = 2000;
/** How long a blocked caller waits for a worker that has not started before giving up. */
const START_TIMEOUT_MS = 60_000;
/** Blocked callers look at the worker's state this often. */
const POLL_MS = 100;

/** Int32 slots of the control buffer. */
const Slot = { WRITTEN: 0, READ: 1, STARTED: 2, FAILED: 3, ANSWERED: 4 } as const;
const CONTROL_INTS = 8;
const RESULT_OFFSET = CONTROL_INTS * 4;
const SHA256_BYTES = 32;
const FAILURE_OFFSET = RESULT_OFFSET + SHA256_BYTES;
const FAILURE_BYTES = 512;

const Op = { UPDATE: 1, COPY: 2, DIGEST: 3, FREE: 4, CREATE: 5, EXIT: 6 } as const;

// Plain JavaScript run with `eval: true`, so it works the same from compiled dist/ and from ts-jest.
const WORKER_SOURCE = `
'use strict';
const { workerData } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const { control, ring, slots, ops, align, headerBytes, resultOffset, failureOffset, failureBytes } = workerData;
const ctl = new Int32Array(control);
const bytes = new Uint8Array(ring);
const entries = new DataView(ring);
const hashes = new Map();
let read = Atomics.load(ctl, slots.READ);
const mask = bytes.length - 1;
function run() {
  Atomics.store(ctl, slots.STARTED, 1);
  Atomics.notify(ctl, slots.STARTED);
  for (;;) {
    const written = Atomics.load(ctl, slots.WRITTEN);
    if (written === read) {
      Atomics.wait(ctl, slots.WRITTEN, read);
      continue;
    }
    const at = read & mask;
    const op = entries.getUint32(at, true);
    const id = entries.getUint32(at + 4, true);
    const length = entries.getUint32(at + 8, true);
    const arg = entries.getUint32(at + 12, true);
    if (op === ops.UPDATE) {
      const hash = hashes.get(id);
      const from = (at + headerBytes) & mask;
      const first = Math.min(length, bytes.length - from);
      hash.update(bytes.subarray(from, from + first));
      if (first < length) hash.update(bytes.subarray(0, length - first));
    } else if (op === ops.CREATE) {
      hashes.set(id, createHash('sha256'));
    } else if (op === ops.COPY) {
      hashes.set(arg, hashes.get(id).copy());
    } else if (op === ops.DIGEST) {
      new Uint8Array(control, resultOffset, 32).set(hashes.get(id).digest());
      hashes.delete(id);
      Atomics.add(ctl, slots.ANSWERED, 1);
      Atomics.notify(ctl, slots.ANSWERED);
    } else if (op === ops.FREE) {
      hashes.delete(id);
    } else if (op === ops.EXIT) {
      return;
    }
    read = (read + Math.ceil((headerBytes + length) / align) * align) | 0;
    Atomics.store(ctl, slots.READ, read);
    Atomics.notify(ctl, slots.READ);
  }
}
try {
  run();
} catch (error) {
  const text = Buffer.from(String(error && error.stack ? error.stack : error)).subarray(0, failureBytes);
  new Uint8Array(control, failureOffset, failureBytes).set(text);
  Atomics.store(ctl, slots.FAILED, text.length);
  Atomics.notify(ctl, slots.READ);
  Atomics.notify(ctl, slots.ANSWERED);
}
`;

function workerFailure(problem: string): IpcCkptError {
  return new IpcCkptError('E_INTERNAL', `SHA-256 worker: ${problem}`);
}

/** One worker and its ring; hashes inside it are named by number. */
class HashWorker {
  private readonly control = new SharedArrayBuffer(FAILURE_OFFSET + FAILURE_BYTES);
  private readonly ring = new SharedArrayBuffer(RING_BYTES);
  private readonly ctl = new Int32Array(this.control);
  private readonly bytes = new Uint8Array(this.ring);
  private readonly entries = new DataView(this.ring);
  private readonly worker: Worker;
  private readonly spawnedAt = Date.now();
  private written = COUNTER_START;
  private answered = 0;
  private nextId = 1;
  private running = 0;
  private idleTimer: NodeJS.Timeout | undefined;
  exited = false;

  constructor() {
    Atomics.store(this.ctl, Slot.WRITTEN, COUNTER_START);
    Atomics.store(this.ctl, Slot.READ, COUNTER_START);
    this.worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: {
        control: this.control,
        ring: this.ring,
        slots: Slot,
        ops: Op,
        align: ENTRY_ALIGN,
        headerBytes: ENTRY_HEADER_BYTES,
        resultOffset: RESULT_OFFSET,
        failureOffset: FAILURE_OFFSET,
        failureBytes: FAILURE_BYTES,
      },
    });
    this.worker.unref();
    this.worker.on('error', () => undefined);
    this.worker.on('exit', () => {
      this.exited = true;
    });
  }

  create(): number {
    const id = this.newId();
    this.enqueue(Op.CREATE, id, 0);
    return id;
  }

  update(id: number, data: Uint8Array): void {
    for (let pos = 0; pos < data.length; pos += SPAN_BYTES) {
      this.enqueue(Op.UPDATE, id, 0, data.subarray(pos, Math.min(pos + SPAN_BYTES, data.length)));
    }
  }

  copy(id: number): number {
    const copyId = this.newId();
    this.enqueue(Op.COPY, id, copyId);
    return copyId;
  }

  /** The hash's SHA-256 (waits for the worker to reach it); the hash ends. */
  digest(id: number): Buffer {
    this.enqueue(Op.DIGEST, id, 0);
    const expected = ++this.answered;
    for (;;) {
      const answered = Atomics.load(this.ctl, Slot.ANSWERED);
      if (answered === expected) break;
      this.checkAlive();
      Atomics.wait(this.ctl, Slot.ANSWERED, answered, POLL_MS);
    }
    const result = Buffer.from(new Uint8Array(this.control, RESULT_OFFSET, SHA256_BYTES));
    this.ended();
    return result;
  }

  /** Drops a hash nobody will finish (a digest collected unfinished). */
  free(id: number): void {
    if (this.exited) return;
    this.enqueue(Op.FREE, id, 0);
    this.ended();
  }

  private newId(): number {
    if (this.idleTimer !== undefined) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    this.running++;
    const id = this.nextId;
    this.nextId = (this.nextId + 1) >>> 0 || 1;
    return id;
  }

  private ended(): void {
    if (--this.running > 0) return;
    this.idleTimer = setTimeout(() => this.exit(), IDLE_EXIT_MS);
    this.idleTimer.unref();
  }

  private exit(): void {
    if (this.running > 0 || this.exited) return;
    this.enqueue(Op.EXIT, 0, 0);
    this.exited = true;
    if (sharedWorker === this) sharedWorker = undefined;
  }

  private enqueue(op: number, id: number, arg: number, payload?: Uint8Array): void {
    const length = payload?.length ?? 0;
    const entryBytes = Math.ceil((ENTRY_HEADER_BYTES + length) / ENTRY_ALIGN) * ENTRY_ALIGN;
    this.waitForSpace(entryBytes);
    const at = this.written & (RING_BYTES - 1);
    this.entries.setUint32(at, op, true);
    this.entries.setUint32(at + 4, id, true);
    this.entries.setUint32(at + 8, length, true);
    this.entries.setUint32(at + 12, arg, true);
    if (payload !== undefined && length > 0) {
      const from = (at + ENTRY_HEADER_BYTES) & (RING_BYTES - 1);
      const first = Math.min(length, RING_BYTES - from);
      this.bytes.set(first === length ? payload : payload.subarray(0, first), from);
      if (first < length) this.bytes.set(payload.subarray(first), 0);
    }
    this.written = (this.written + entryBytes) | 0;
    Atomics.store(this.ctl, Slot.WRITTEN, this.written);
    Atomics.notify(this.ctl, Slot.WRITTEN);
  }

  private waitForSpace(entryBytes: number): void {
    for (;;) {
      const read = Atomics.load(this.ctl, Slot.READ);
      if (RING_BYTES - ((this.written - read) | 0) >= entryBytes) return;
      this.checkAlive();
      Atomics.wait(this.ctl, Slot.READ, read, POLL_MS);
    }
  }

  private checkAlive(): void {
    const failed = Atomics.load(this.ctl, Slot.FAILED);
    if (failed > 0) {
      this.exited = true;
      if (sharedWorker === this) sharedWorker = undefined;
      throw workerFailure(Buffer.from(new Uint8Array(this.control, FAILURE_OFFSET, failed)).toString());
    }
    if (Atomics.load(this.ctl, Slot.STARTED) === 0 && Date.now() - this.spawnedAt > START_TIMEOUT_MS) {
      throw workerFailure(`it did not start within ${START_TIMEOUT_MS / 1000} s`);
    }
  }
}

let sharedWorker: HashWorker | undefined;

/** This thread's hash worker, started on first use; undefined when a worker cannot be started here. */
export function hashWorker(): HashWorker | undefined {
  if (sharedWorker === undefined || sharedWorker.exited) {
    try {
      sharedWorker = new HashWorker();
    } catch {
      return undefined;
    }
  }
  return sharedWorker;
}

export type { HashWorker };
