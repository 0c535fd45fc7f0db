// Hand-run throughput check of the codec for 64 KiB messages (not a jest test; numbers vary by machine).
// Run: npx tsc --outDir /tmp/ipc-ckpt-bench --module commonjs --target es2022 --types node --esModuleInterop \
//        --skipLibCheck test/unit/image/codec-throughput.ts && cp package.json /tmp/ipc-ckpt-bench/ \
//      && node /tmp/ipc-ckpt-bench/test/unit/image/codec-throughput.js
import { ImageDigest, ImageEncoder } from '../../../lib/image/encoder';
import { decodeImage } from '../../../lib/image/decoder';
import { packMessages } from '../../../lib/image/packed';
import type { QueueRecord } from '../../../lib/image/model';
import { GOLDEN_MODEL } from './golden';

const MESSAGE_BYTES = 64 * 1024;
const MESSAGES_PER_BATCH = 64;
const BATCHES = 64; // 64 x 64 x 64 KiB = 256 MiB of message bodies per pass
const INPUT_CHUNK_BYTES = 64 * 1024; // what fs.createReadStream yields
const PASSES = 3;

function mbPerSecond(bytes: number, nanoseconds: bigint): string {
  return ((bytes / (Number(nanoseconds) / 1e9)) / 1e6).toFixed(0);
}

async function main(): Promise<void> {
  const body = Buffer.alloc(MESSAGE_BYTES, 0xa5);
  const packed = packMessages(Array.from({ length: MESSAGES_PER_BATCH }, (_, index) => ({ type: BigInt(index + 1), body })));
  const bodyBytes = MESSAGE_BYTES * MESSAGES_PER_BATCH * BATCHES;
  const encoder = new ImageEncoder();

  let start = process.hrtime.bigint();
  let encoded: Buffer[] = [];
  for (let pass = 0; pass < PASSES; pass++) {
    start = process.hrtime.bigint();
    for (let batch = 0; batch < BATCHES; batch++) encoder.messagesFromPacked(packed, MESSAGES_PER_BATCH);
    console.log(`encode (messagesFromPacked, 64 x 64 KiB per batch, fresh buffers), pass ${pass + 1}: ${mbPerSecond(bodyBytes, process.hrtime.bigint() - start)} MB/s`);
  }
  const reused = Buffer.alloc(encoder.messagesFromPacked(packed, MESSAGES_PER_BATCH).length);
  for (let pass = 0; pass < PASSES; pass++) {
    start = process.hrtime.bigint();
    for (let batch = 0; batch < BATCHES; batch++) encoder.messagesFromPacked(packed, MESSAGES_PER_BATCH, reused);
    console.log(`encode (messagesFromPacked into a reused buffer), pass ${pass + 1}: ${mbPerSecond(bodyBytes, process.hrtime.bigint() - start)} MB/s`);
  }
  for (let pass = 0; pass < PASSES; pass++) {
    start = process.hrtime.bigint();
    const digest = new ImageDigest();
    encoded = [];
    for (let batch = 0; batch < BATCHES; batch++) {
      const bytes = encoder.messagesFromPacked(packed, MESSAGES_PER_BATCH);
      digest.update(bytes);
      encoded.push(bytes);
    }
    digest.digest();
    console.log(`encode + SHA-256 of the output, pass ${pass + 1}: ${mbPerSecond(bodyBytes, process.hrtime.bigint() - start)} MB/s`);
  }

  const queue: QueueRecord = {
    ...GOLDEN_MODEL.queues[0].queue,
    qnum: BigInt(MESSAGES_PER_BATCH * BATCHES),
    cbytes: BigInt(bodyBytes),
  };
  const head = Buffer.concat([encoder.header(GOLDEN_MODEL.header), encoder.limits(GOLDEN_MODEL.limits), encoder.msgSection(1), encoder.queue(queue)]);
  const whole = new ImageDigest().update(head);
  for (const part of encoded) whole.update(part);
  const image = Buffer.concat([head, ...encoded, encoder.trailer(whole.digest())]);
  encoded = [];

  async function* stream(): AsyncGenerator<Buffer> {
    for (let pos = 0; pos < image.length; pos += INPUT_CHUNK_BYTES) yield image.subarray(pos, pos + INPUT_CHUNK_BYTES);
  }
  for (const reuseBatchBuffer of [false, true]) {
    for (let pass = 0; pass < PASSES; pass++) {
      start = process.hrtime.bigint();
      let messages = 0;
      for await (const event of decodeImage(stream(), { reuseBatchBuffer })) if (event.kind === 'messages') messages += event.count;
      const decodeTime = process.hrtime.bigint() - start;
      if (messages !== MESSAGES_PER_BATCH * BATCHES) throw new Error(`decoded ${messages} messages`);
      const buffers = reuseBatchBuffer ? 'one reused batch buffer' : 'fresh batch buffers';
      console.log(`decode+verify (SHA-256), ${INPUT_CHUNK_BYTES / 1024} KiB input chunks, ${buffers}, pass ${pass + 1}: ${mbPerSecond(bodyBytes, decodeTime)} MB/s`);
    }
  }
  start = process.hrtime.bigint();
  new ImageDigest().update(image).digest();
  console.log(`SHA-256 alone over the image: ${mbPerSecond(bodyBytes, process.hrtime.bigint() - start)} MB/s`);
  console.log(`(${bodyBytes / 2 ** 20} MiB of message bodies per pass; image ${image.length} bytes)`);
}

void main();
