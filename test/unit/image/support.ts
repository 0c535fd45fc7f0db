// Helpers for image tests: re-sealing edited images, feeding bytes in chunks, expecting typed decode errors.
import { createHash } from 'node:crypto';
import { IpcCkptError } from '../../../lib/errors';
import { ImageEncoder } from '../../../lib/image/encoder';
import { decodeImage, type DecoderOptions, type ImageEvent } from '../../../lib/image/decoder';
import { IntegrityLayout, TailLayout } from '../../../lib/image/layout';
import type { Image } from '../../../lib/image/model';

/** The image's bytes before its integrity record (a sealed image ends with integrity + TAIL). */
export function unsealed(image: Buffer): Buffer {
  return Buffer.from(image.subarray(0, image.length - IntegrityLayout.BYTES - TailLayout.BYTES));
}

/** Appends a correct integrity record and TAIL, so only structure checks can catch a defect. */
export function seal(body: Buffer): Buffer {
  const digest = createHash('sha256').update(body).digest();
  return Buffer.concat([body, new ImageEncoder().trailer(digest)]);
}

/** A copy of a sealed image with `edit` applied to its body and the integrity record recomputed. */
export function resealed(image: Buffer, edit: (body: Buffer) => unknown): Buffer {
  const body = unsealed(image);
  const edited = edit(body);
  return seal(Buffer.isBuffer(edited) ? edited : body);
}

/** Yields `bytes` in pieces of the given sizes (cycled), as a stream would. */
export async function* inChunks(bytes: Buffer, sizes: readonly number[]): AsyncGenerator<Buffer> {
  let pos = 0;
  for (let index = 0; pos < bytes.length; index++) {
    const size = Math.max(1, sizes[index % sizes.length]);
    yield bytes.subarray(pos, pos + size);
    pos += size;
  }
}

export async function collectEvents(input: Buffer | AsyncIterable<Buffer>, options?: DecoderOptions): Promise<ImageEvent[]> {
  const events: ImageEvent[] = [];
  for await (const event of decodeImage(input, options)) events.push(event);
  return events;
}

/** Decodes to the end and returns the IpcCkptError it must throw (fails the test otherwise). */
export async function decodeError(input: Buffer | AsyncIterable<Buffer>, options?: DecoderOptions): Promise<IpcCkptError> {
  try {
    await collectEvents(input, options);
  } catch (error) {
    if (error instanceof IpcCkptError) return error;
    throw new Error(`decode threw a non-IpcCkptError: ${String(error)}`, { cause: error });
  }
  throw new Error('decode succeeded where it had to fail');
}

/** The image with bodies as base64: jest compares strings far faster than Buffers byte by byte. */
export function comparable(image: Image): unknown {
  return { ...image, queues: image.queues.map(({ queue, messages }) => ({ queue, messages: messages.map(({ type, body }) => ({ type, body: body.toString('base64') })) })) };
}
