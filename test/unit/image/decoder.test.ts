// The decoder's event stream: batching of messages, and verifyImage's one-pass summary.
import { Readable } from 'node:stream';
import { IpcCkptError } from '../../../lib/errors';
import { encodeImage } from '../../../lib/image/encoder';
import { decodeImage, verifyImage, unpackMessages, type ImageEvent } from '../../../lib/image/decoder';
import type { Image, MessageRecord } from '../../../lib/image/model';
import { GOLDEN_IMAGE, GOLDEN_MODEL } from './golden';
import { collectEvents, decodeError, inChunks } from './support';

function imageWithMessages(messages: MessageRecord[]): Image {
  const cbytes = messages.reduce((sum, message) => sum + message.body.length, 0);
  return { ...GOLDEN_MODEL, queues: [{ queue: { ...GOLDEN_MODEL.queues[0].queue, qnum: BigInt(messages.length), cbytes: BigInt(cbytes) }, messages }] };
}

function batches(events: ImageEvent[]): Array<{ count: number; bytes: number }> {
  return events.flatMap((event) => (event.kind === 'messages' ? [{ count: event.count, bytes: event.packed.length }] : []));
}

describe('message batches', () => {
  const messages = Array.from({ length: 10 }, (_, index) => ({ type: BigInt(index + 1), body: Buffer.alloc(100, index) }));

  test('batches hold as many whole messages as fit the batch size', async () => {
    const events = await collectEvents(encodeImage(imageWithMessages(messages)), { messageBatchBytes: 3 * 112 + 50 });
    expect(batches(events)).toEqual([
      { count: 3, bytes: 336 },
      { count: 3, bytes: 336 },
      { count: 3, bytes: 336 },
      { count: 1, bytes: 112 },
    ]);
  });

  test('a message larger than the batch size comes alone in one batch', async () => {
    const big = { type: 9n, body: Buffer.alloc(20000, 0x33) };
    const events = await collectEvents(encodeImage(imageWithMessages([messages[0], big, messages[1]])), { messageBatchBytes: 1000 });
    expect(batches(events)).toEqual([
      { count: 1, bytes: 112 },
      { count: 1, bytes: 20012 },
      { count: 1, bytes: 112 },
    ]);
    const bigBatch = events.filter((event) => event.kind === 'messages')[1];
    if (bigBatch.kind !== 'messages') throw new Error('expected messages');
    expect(unpackMessages(bigBatch.packed, 1)[0].body.equals(big.body)).toBe(true);
  });

  test('a batch names its queue and the offset of its first message record', async () => {
    const events = await collectEvents(GOLDEN_IMAGE);
    const batch = events.find((event) => event.kind === 'messages');
    expect(batch).toMatchObject({ queueId: 32769, offset: 451, count: 2 });
  });

  test('an invalid batch size is a usage error', async () => {
    const error = await decodeError(GOLDEN_IMAGE, { messageBatchBytes: 0 });
    expect(error.code).toBe('E_USAGE');
  });
});

describe('inputs', () => {
  test('a Node readable stream is decoded', async () => {
    const events = await collectEvents(Readable.from(inChunks(GOLDEN_IMAGE, [5, 77])) as unknown as AsyncIterable<Buffer>);
    expect(events.at(-1)?.kind).toBe('end');
  });

  test('a stream of strings is refused as a usage error', async () => {
    const text = (async function* () {
      yield 'not bytes';
    })();
    const run = async (): Promise<unknown> => {
      for await (const event of decodeImage(text)) void event;
      return undefined;
    };
    await expect(run()).rejects.toMatchObject({ code: 'E_USAGE' });
  });

  test('a consumer that stops early releases the input', async () => {
    let returned = false;
    const source = (async function* () {
      try {
        yield GOLDEN_IMAGE;
      } finally {
        returned = true;
      }
    })();
    for await (const event of decodeImage(source)) if (event.kind === 'header') break;
    expect(returned).toBe(true);
  });
});

describe('verifyImage', () => {
  test('summarises a valid image in one pass', async () => {
    const summary = await verifyImage(GOLDEN_IMAGE);
    expect(summary.header).toEqual(GOLDEN_MODEL.header);
    expect(summary.queues.map(({ queue, largestMessageBytes }) => [queue.id, largestMessageBytes])).toEqual([[32769, 3]]);
    expect(summary).toMatchObject({ messageCount: 2, messageBytes: 3, largestMessageBytes: 3, imageBytes: GOLDEN_IMAGE.length });
    expect(summary.digest).toHaveLength(32);
  });

  test('rejects an image whose integrity record does not match', async () => {
    const flipped = Buffer.from(GOLDEN_IMAGE);
    flipped[470] ^= 1;
    await expect(verifyImage(flipped)).rejects.toBeInstanceOf(IpcCkptError);
  });
});
