// ImageDigest on a worker thread must give node:crypto's SHA-256 of the same bytes, marks included.
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { ImageDigest } from '../../../lib/image/digest';
import { ImageEncoder, encodeImage } from '../../../lib/image/encoder';
import { IntegrityLayout, TailLayout } from '../../../lib/image/layout';
import { decodeImage, verifyImage, type DecoderOptions } from '../../../lib/image/decoder';
import type { Image } from '../../../lib/image/model';
import { imageArb } from './arbitraries';
import { GOLDEN_IMAGE, GOLDEN_MODEL, GOLDEN_OFFSETS } from './golden';
import { decodeError, inChunks, resealed } from './support';

const TIMEOUT_MS = 120_000;

function sha256(...parts: Uint8Array[]): string {
  const hash = createHash('sha256');
  for (const part of parts) hash.update(part);
  return hash.digest('hex');
}

/** Bytes that differ at every position, so a dropped, repeated or reordered span changes the digest. */
function patterned(length: number, seed: number): Buffer {
  const bytes = Buffer.allocUnsafe(length);
  let state = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    bytes[i] = state >>> 24;
  }
  return bytes;
}

describe('parallel ImageDigest', () => {
  test('runs on a worker thread here', () => {
    const digest = ImageDigest.parallel();
    expect(digest.isParallel).toBe(true);
    digest.discard();
  });

  test('any sequence of updates hashes as node:crypto does', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 70_000 }), { maxLength: 12 }), fc.integer(), (sizes, seed) => {
        const parts = sizes.map((size, index) => patterned(size, seed + index));
        const digest = ImageDigest.parallel();
        for (const part of parts) digest.update(part);
        expect(digest.digest().toString('hex')).toBe(sha256(...parts));
      }),
      { numRuns: 100 },
    );
  });

  test('updates larger than the ring and wrapping around it hash as node:crypto does', () => {
    const parts = [patterned(3, 1), patterned(9 << 20, 2), patterned((1 << 20) + 5, 3), patterned(5 << 20, 4)];
    const digest = ImageDigest.parallel();
    for (const part of parts) digest.update(part);
    expect(digest.digest().toString('hex')).toBe(sha256(...parts));
  }, TIMEOUT_MS);

  test('a buffer may be reused as soon as update returns', () => {
    const buffer = patterned(100_000, 7);
    const first = Buffer.from(buffer);
    const digest = ImageDigest.parallel();
    digest.update(buffer);
    buffer.fill(0);
    digest.update(buffer);
    expect(digest.digest().toString('hex')).toBe(sha256(first, buffer));
  });

  test('a copy taken at a mark goes on independently, as a writer rolling back uses it', () => {
    const [a, b, c, d] = [patterned(5000, 1), patterned(300_000, 2), patterned(17, 3), patterned(2 << 20, 4)];
    const digest = ImageDigest.parallel();
    digest.update(a);
    const mark = digest.copy();
    digest.update(b);
    const later = digest.copy();
    expect(later.digest().toString('hex')).toBe(sha256(a, b));
    // Roll back to the mark: what was written after it is forgotten.
    mark.update(c).update(d);
    expect(mark.copy().digest().toString('hex')).toBe(sha256(a, c, d));
    expect(mark.digest().toString('hex')).toBe(sha256(a, c, d));
    expect(digest.digest().toString('hex')).toBe(sha256(a, b));
  });

  test('many digests at once each get their own bytes', () => {
    const digests = Array.from({ length: 20 }, () => ImageDigest.parallel());
    const parts = digests.map((_, index) => patterned(1000 + index * 4099, index));
    digests.forEach((digest, index) => digest.update(parts[index]).update(parts[(index + 1) % parts.length]));
    digests.forEach((digest, index) => expect(digest.digest().toString('hex')).toBe(sha256(parts[index], parts[(index + 1) % parts.length])));
  });

  test('a finished digest refuses more use, as node:crypto does', () => {
    const digest = ImageDigest.parallel().update(patterned(10, 1));
    digest.digest();
    expect(() => digest.digest()).toThrow('Digest already called');
    expect(() => digest.update(Buffer.alloc(1))).toThrow('Digest already called');
    expect(() => digest.copy()).toThrow('Digest already called');
  });

  test('a discarded digest leaves the others working', () => {
    const kept = ImageDigest.parallel().update(patterned(1000, 1));
    ImageDigest.parallel().update(patterned(1000, 2)).discard();
    expect(kept.digest().toString('hex')).toBe(sha256(patterned(1000, 1)));
  });

  test('an image sealed with a parallel digest equals encodeImage', () => {
    const encoder = new ImageEncoder();
    const pieces = [encoder.header(GOLDEN_MODEL.header), encoder.limits(GOLDEN_MODEL.limits), encoder.msgSection(GOLDEN_MODEL.queues.length)];
    for (const { queue, messages } of GOLDEN_MODEL.queues) pieces.push(encoder.queue(queue), ...messages.map((message) => encoder.message(message)));
    const digest = ImageDigest.parallel();
    for (const piece of pieces) digest.update(piece);
    expect(Buffer.concat([...pieces, encoder.trailer(digest.digest())]).equals(GOLDEN_IMAGE)).toBe(true);
  });
});

describe('decoding with the hash on a worker thread', () => {
  async function events(input: Buffer | AsyncIterable<Buffer>, options: DecoderOptions): Promise<unknown[]> {
    const seen: unknown[] = [];
    for await (const event of decodeImage(input, options)) seen.push(event.kind === 'messages' ? { ...event, packed: event.packed.toString('hex') } : event);
    return seen;
  }

  test('any image decodes to the same events, digest included', async () => {
    await fc.assert(
      fc.asyncProperty(imageArb(), fc.array(fc.integer({ min: 1, max: 5000 }), { minLength: 1, maxLength: 4 }), async (image: Image, sizes) => {
        const bytes = encodeImage(image);
        const inline = await events(inChunks(bytes, sizes), { parallelHash: false });
        expect(await events(inChunks(bytes, sizes), { parallelHash: true })).toEqual(inline);
      }),
      { numRuns: 40 },
    );
  }, TIMEOUT_MS);

  test('a changed body byte fails the integrity check with the same message', async () => {
    const damaged = Buffer.from(GOLDEN_IMAGE);
    damaged[GOLDEN_OFFSETS.message0Body + 8] ^= 0x40;
    const inline = await decodeError(damaged, { parallelHash: false });
    const parallel = await decodeError(inChunks(damaged, [13]), { parallelHash: true });
    expect(parallel.message).toBe(inline.message);
    expect(parallel.message).toMatch(/integrity check failed/);
  });

  test('a structural defect stops a parallel decode with the same error', async () => {
    const damaged = resealed(GOLDEN_IMAGE, (body) => {
      body.writeUInt32LE(0xffff, 200);
    });
    expect((await decodeError(damaged, { parallelHash: true })).message).toBe((await decodeError(damaged, { parallelHash: false })).message);
  });

  test('parallelHash hashes a large image on the worker, to the same digest; by default the decoder hashes inline', async () => {
    const spy = jest.spyOn(ImageDigest, 'parallel');
    try {
      const body = patterned(64 * 1024, 9);
      const count = 256;
      const messages = Array.from({ length: count }, (_, index) => ({ type: BigInt(1 + (index % 5)), body }));
      const template = GOLDEN_MODEL.queues[0].queue;
      const large = encodeImage({ ...GOLDEN_MODEL, queues: [{ queue: { ...template, qnum: BigInt(count), cbytes: BigInt(count * body.length) }, messages }] });
      const inline = await verifyImage(inChunks(large, [1 << 20]));
      expect(spy).not.toHaveBeenCalled();
      const parallel = await verifyImage(inChunks(large, [1 << 20]), { parallelHash: true });
      expect(spy).toHaveBeenCalledTimes(1);
      expect(parallel).toEqual(inline);
      expect(parallel.digest.toString('hex')).toBe(sha256(large.subarray(0, large.length - IntegrityLayout.BYTES - TailLayout.BYTES)));
    } finally {
      spy.mockRestore();
    }
  }, TIMEOUT_MS);
});
