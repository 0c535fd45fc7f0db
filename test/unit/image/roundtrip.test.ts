// Round trips: whatever valid image is encoded decodes to the same image, however the bytes arrive.
import fc from 'fast-check';
import { ImageDigest, ImageEncoder, encodeImage } from '../../../lib/image/encoder';
import { collectImage, decodeImage, decodeImageToMemory, type ImageEvent } from '../../../lib/image/decoder';
import { packMessages } from '../../../lib/image/packed';
import type { Image } from '../../../lib/image/model';
import { imageArb, messageArb } from './arbitraries';
import { comparable, inChunks } from './support';

/** Encodes like the save path does: record by record, messages from packed batches, hashing every piece. */
function encodeAsWriter(image: Image, batchSize: number): Buffer {
  const encoder = new ImageEncoder();
  const digest = new ImageDigest();
  const parts: Buffer[] = [];
  const write = (bytes: Buffer): void => {
    digest.update(bytes);
    parts.push(bytes);
  };
  write(encoder.header(image.header));
  write(encoder.limits(image.limits));
  write(encoder.msgSection(image.queues.length));
  for (const { queue, messages } of image.queues) {
    write(encoder.queue(queue));
    for (let first = 0; first < messages.length; first += batchSize) {
      const batch = messages.slice(first, first + batchSize);
      // Alternate between a reused buffer and fresh ones, as a writer that reuses after each write would.
      const into = first % (2 * batchSize) === 0 ? Buffer.alloc(70000) : undefined;
      write(Buffer.from(encoder.messagesFromPacked(packMessages(batch), batch.length, into)));
    }
  }
  parts.push(encoder.trailer(digest.digest()));
  return Buffer.concat(parts);
}

/** Property runs are CPU-bound; the machine is shared, so allow well beyond their usual few seconds. */
const PROPERTY_TIMEOUT_MS = 120_000;

describe('image round trip', () => {
  test('decode(encode(image)) equals the image', async () => {
    await fc.assert(
      fc.asyncProperty(imageArb(), async (image) => {
        expect(comparable(await decodeImageToMemory(encodeImage(image)))).toEqual(comparable(image));
      }),
      { numRuns: 150 },
    );
  }, PROPERTY_TIMEOUT_MS);

  test('the streaming decoder gives the same image for any chunking and batch size', async () => {
    await fc.assert(
      fc.asyncProperty(
        imageArb(),
        fc.array(fc.integer({ min: 1, max: 9000 }), { minLength: 1, maxLength: 20 }),
        fc.integer({ min: 1, max: 40000 }),
        async (image, chunkSizes, messageBatchBytes) => {
          const bytes = encodeImage(image);
          const events: ImageEvent[] = [];
          for await (const event of decodeImage(inChunks(bytes, chunkSizes), { messageBatchBytes })) events.push(event);
          for (const event of events) {
            if (event.kind === 'messages' && event.count > 1) expect(event.packed.length).toBeLessThanOrEqual(messageBatchBytes);
          }
          expect(comparable(await collectImage(events))).toEqual(comparable(image));
        },
      ),
      { numRuns: 150 },
    );
  }, PROPERTY_TIMEOUT_MS);

  test('a reused batch buffer gives the same messages to a consumer that copies each batch before the next', async () => {
    await fc.assert(
      fc.asyncProperty(imageArb(), fc.integer({ min: 1, max: 40000 }), async (image, messageBatchBytes) => {
        const copied: ImageEvent[] = [];
        for await (const event of decodeImage(encodeImage(image), { messageBatchBytes, reuseBatchBuffer: true })) {
          copied.push(event.kind === 'messages' ? { ...event, packed: Buffer.from(event.packed) } : event);
        }
        expect(comparable(await collectImage(copied))).toEqual(comparable(image));
      }),
      { numRuns: 100 },
    );
  }, PROPERTY_TIMEOUT_MS);

  test('the writer path (messagesFromPacked, rolling digest) produces the same bytes as encodeImage', async () => {
    await fc.assert(
      fc.property(imageArb(), fc.integer({ min: 1, max: 5 }), (image, batchSize) => {
        expect(encodeAsWriter(image, batchSize).equals(encodeImage(image))).toBe(true);
      }),
      { numRuns: 150 },
    );
  }, PROPERTY_TIMEOUT_MS);

  test('messagesFromPacked equals message() for each message in turn', () => {
    fc.assert(
      fc.property(fc.array(messageArb, { maxLength: 6 }), (messages) => {
        const encoder = new ImageEncoder();
        const one = Buffer.concat(messages.map((message) => encoder.message(message)));
        expect(encoder.messagesFromPacked(packMessages(messages), messages.length).equals(one)).toBe(true);
      }),
      { numRuns: 200 },
    );
  }, PROPERTY_TIMEOUT_MS);
});
