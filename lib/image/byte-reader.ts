// Pulls an image's bytes from a stream on demand and hashes each byte once, as it is released.
import { createHash, type Hash } from 'node:crypto';
import { IpcCkptError } from '../errors';
import { RECORD_HEADER_BYTES, RECORD_LEN_OFFSET, RECORD_TYPE_OFFSET } from './layout';

/** A stream or async iterable of chunks, a sync iterable of chunks, or one whole image in memory. */
export type ImageInput = AsyncIterable<Uint8Array | string> | NodeJS.ReadableStream | Iterable<Uint8Array> | Uint8Array;

function toBuffer(value: unknown): Buffer {
  if (Buffer.isBuffer(value)) return value;
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  throw new IpcCkptError('E_USAGE', 'image input must yield bytes (Buffer or Uint8Array): open it without a text encoding');
}

/**
 * A window over the input: chunks are held only until consumed, so memory stays bounded by the
 * input's chunk size plus the largest record read at once. Consumed bytes are hashed in whole chunks.
 */
export class ByteReader {
  private readonly chunks: Buffer[] = [];
  /** Read position inside chunks[0]. */
  private headPos = 0;
  /** Bytes of chunks[0] already hashed (only the head chunk is ever partly hashed). */
  private hashedPos = 0;
  /** Undefined when not hashing, or once the digest was taken. */
  private hash: Hash | undefined;
  private digestTaken = false;
  private ended = false;
  private readonly headerScratch = Buffer.alloc(RECORD_HEADER_BYTES);
  /** Buffered, unconsumed bytes. */
  available = 0;
  /** Absolute image offset of the next unconsumed byte. */
  offset = 0;
  /** The type and len of the record header last peeked. */
  type = 0;
  len = 0;

  /** hashing false: digestBefore() has no digest to give (the bytes are known good from elsewhere). */
  constructor(
    private readonly source: AsyncIterator<unknown>,
    hashing = true,
  ) {
    if (hashing) this.hash = createHash('sha256');
  }

  static from(input: ImageInput, hashing = true): ByteReader {
    if (input instanceof Uint8Array) return ByteReader.from([input], hashing);
    const asyncIterable = input as Partial<AsyncIterable<unknown>>;
    if (typeof asyncIterable[Symbol.asyncIterator] === 'function') {
      return new ByteReader((input as AsyncIterable<unknown>)[Symbol.asyncIterator](), hashing);
    }
    const iterable = input as Partial<Iterable<unknown>>;
    if (typeof iterable[Symbol.iterator] === 'function') {
      const iterator = (input as Iterable<unknown>)[Symbol.iterator]();
      return new ByteReader(
        {
          next: async () => iterator.next(),
          return: async () => iterator.return?.() ?? { done: true, value: undefined },
        },
        hashing,
      );
    }
    throw new IpcCkptError('E_USAGE', 'image input is neither bytes, an iterable of chunks nor a readable stream');
  }

  /** Buffers at least n bytes; false when the input ends first. */
  async fill(n: number): Promise<boolean> {
    while (this.available < n) {
      if (this.ended) return false;
      const next = await this.source.next();
      if (next.done === true) {
        this.ended = true;
        return false;
      }
      const chunk = toBuffer(next.value);
      if (chunk.length === 0) continue;
      this.chunks.push(chunk);
      this.available += chunk.length;
    }
    return true;
  }

  /** The chunk holding the next unconsumed byte (undefined when nothing is buffered); read it from headStart. */
  get headChunk(): Buffer | undefined {
    return this.chunks[0];
  }

  /** Where the next unconsumed byte sits inside headChunk. */
  get headStart(): number {
    return this.headPos;
  }

  /** Reads the record header at the current offset into type/len without consuming it (needs 8 buffered bytes). */
  peekHeader(): void {
    const head = this.chunks[0];
    if (head.length - this.headPos >= RECORD_HEADER_BYTES) {
      this.type = head.readUInt32LE(this.headPos + RECORD_TYPE_OFFSET);
      this.len = head.readUInt32LE(this.headPos + RECORD_LEN_OFFSET);
      return;
    }
    let copied = 0;
    let pos = this.headPos;
    for (let index = 0; copied < RECORD_HEADER_BYTES; index++) {
      const chunk = this.chunks[index];
      const n = Math.min(RECORD_HEADER_BYTES - copied, chunk.length - pos);
      chunk.copy(this.headerScratch, copied, pos, pos + n);
      copied += n;
      pos = 0;
    }
    this.type = this.headerScratch.readUInt32LE(RECORD_TYPE_OFFSET);
    this.len = this.headerScratch.readUInt32LE(RECORD_LEN_OFFSET);
  }

  /** Consumes n buffered bytes and returns them (a view when they sit in one chunk). */
  take(n: number): Buffer {
    const head = this.chunks[0];
    if (head.length - this.headPos >= n) {
      const view = head.subarray(this.headPos, this.headPos + n);
      this.skip(n);
      return view;
    }
    const out = Buffer.allocUnsafe(n);
    const copied = this.copyBuffered(out, 0, n);
    if (copied !== n) throw new IpcCkptError('E_INTERNAL', `image reader: take(${n}) with ${copied} bytes buffered`);
    return out;
  }

  /** Copies up to n buffered bytes into target at `at`, consuming them; returns how many were copied. */
  copyBuffered(target: Buffer, at: number, n: number): number {
    let copied = 0;
    while (copied < n && this.available > 0) {
      const head = this.chunks[0];
      const count = Math.min(n - copied, head.length - this.headPos);
      head.copy(target, at + copied, this.headPos, this.headPos + count);
      copied += count;
      this.skip(count);
    }
    return copied;
  }

  /** Consumes n buffered bytes; a chunk is hashed and dropped once fully consumed. */
  skip(n: number): void {
    this.available -= n;
    this.offset += n;
    let pos = this.headPos + n;
    while (this.chunks.length > 0 && pos >= this.chunks[0].length) {
      const head = this.chunks[0];
      if (this.hash !== undefined) this.hash.update(this.hashedPos === 0 ? head : head.subarray(this.hashedPos));
      pos -= head.length;
      this.chunks.shift();
      this.hashedPos = 0;
    }
    this.headPos = pos;
  }

  /** The SHA-256 of every byte before the current offset (undefined when not hashing); hashing stops here. */
  digestBefore(): Buffer | undefined {
    if (this.digestTaken) throw new IpcCkptError('E_INTERNAL', 'image reader: digest taken twice');
    this.digestTaken = true;
    const hash = this.hash;
    if (hash === undefined) return undefined;
    if (this.chunks.length > 0 && this.headPos > this.hashedPos) {
      hash.update(this.chunks[0].subarray(this.hashedPos, this.headPos));
      this.hashedPos = this.headPos;
    }
    this.hash = undefined;
    return hash.digest();
  }

  /** Releases the input (destroys a stream the caller stopped reading early). */
  async close(): Promise<void> {
    if (!this.ended && typeof this.source.return === 'function') {
      this.ended = true;
      await this.source.return();
    }
  }
}
