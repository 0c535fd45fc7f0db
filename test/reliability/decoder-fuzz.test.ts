// The decoder against 100,000 mutated images: every rejection is a typed IpcCkptError, nothing
// crashes, hangs or grows memory without bound; and restore never touches a real namespace for an
// image the decoder rejects.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import fc from 'fast-check';
import { IpcCkptError } from '../../lib/errors';
import { decodeImage } from '../../lib/image/decoder';
import { encodeImage } from '../../lib/image/encoder';
import { imageArb } from '../unit/image/arbitraries';
import { GOLDEN_IMAGE } from '../unit/image/golden';
import { inChunks, seal, unsealed } from '../unit/image/support';
import { TestNamespace } from '../support/namespace';
import { msgqTool } from '../support/msgq-tool';
import { populateSample } from '../support/sample-namespace';
import { runCli } from '../support/cli';
import { namespaceState, seededRandom, testSeed } from './killed-run';

const MUTANTS = 100_000;
/** The codes a decoder may reject bad bytes with. */
const IMAGE_CODES = ['E_IMAGE_CORRUPT', 'E_IMAGE_UNSUPPORTED', 'E_IMAGE_LIMIT'];
/** One decode of a few-KiB image taking longer than this is a hang. */
const DECODE_BOUND_MS = 2000;
/** Resident memory may not grow more than this over the whole run. */
const MEMORY_BOUND_BYTES = 256 * 1024 * 1024;

jest.setTimeout(15 * 60_000);

type Random = () => number;

const BOUNDARY_32 = [0, 1, 0x7f, 0x80, 0xff, 0xffff, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff];
const BOUNDARY_64 = [0n, 1n, 2n ** 31n, 2n ** 32n, 2n ** 63n - 1n, 2n ** 63n, 2n ** 64n - 1n];

function pick<T>(random: Random, items: readonly T[]): T {
  return items[Math.floor(random() * items.length)];
}

function at(random: Random, length: number): number {
  return Math.floor(random() * Math.max(1, length));
}

/** One to three random edits: bit flips, boundary values in 1/4/8-byte fields, cuts, deletions, insertions, duplications, splices. */
function mutate(random: Random, image: Buffer, donors: readonly Buffer[]): Buffer {
  let bytes = Buffer.from(image);
  const edits = 1 + Math.floor(random() * 3);
  for (let edit = 0; edit < edits; edit++) {
    const kind = Math.floor(random() * 9);
    const offset = at(random, bytes.length);
    switch (kind) {
      case 0:
        if (bytes.length > 0) bytes[offset] ^= 1 << Math.floor(random() * 8);
        break;
      case 1:
        if (bytes.length > 0) bytes[offset] = pick(random, [0x00, 0x01, 0x7f, 0x80, 0xff]);
        break;
      case 2: {
        // Record headers and lengths are 4-byte aligned: hit them often.
        const aligned = offset & ~3;
        if (aligned + 4 <= bytes.length) bytes.writeUInt32LE(pick(random, BOUNDARY_32), aligned);
        break;
      }
      case 3: {
        const aligned = offset & ~7;
        if (aligned + 8 <= bytes.length) bytes.writeBigUInt64LE(pick(random, BOUNDARY_64), aligned);
        break;
      }
      case 4:
        bytes = bytes.subarray(0, offset);
        break;
      case 5:
        bytes = Buffer.concat([bytes.subarray(0, offset), bytes.subarray(offset + 1 + at(random, 64))]);
        break;
      case 6: {
        const inserted = Buffer.alloc(1 + at(random, 32));
        for (let i = 0; i < inserted.length; i++) inserted[i] = Math.floor(random() * 256);
        bytes = Buffer.concat([bytes.subarray(0, offset), inserted, bytes.subarray(offset)]);
        break;
      }
      case 7: {
        const length = 1 + at(random, 256);
        bytes = Buffer.concat([bytes.subarray(0, offset + length), bytes.subarray(offset, offset + length), bytes.subarray(offset + length)]);
        break;
      }
      default: {
        const donor = pick(random, donors);
        bytes = Buffer.concat([bytes.subarray(0, offset), donor.subarray(at(random, donor.length))]);
      }
    }
  }
  return bytes;
}

/** Decodes to the end; resolves to the IpcCkptError it threw, or undefined when the image decoded. */
async function decodeOutcome(input: Buffer | AsyncIterable<Buffer>): Promise<IpcCkptError | undefined> {
  try {
    for await (const event of decodeImage(input)) void event;
    return undefined;
  } catch (error) {
    if (error instanceof IpcCkptError) return error;
    throw new Error(`the decoder threw a non-IpcCkptError: ${error instanceof Error ? error.stack : String(error)}`);
  }
}

/** Valid images to mutate: the golden image and encoder output for generated namespaces. */
function validImages(seed: number): Buffer[] {
  const generated = fc.sample(imageArb(3), { seed, numRuns: 12 }).map((image) => encodeImage(image));
  return [GOLDEN_IMAGE, ...generated.filter((image) => image.length < 256 * 1024)];
}

interface FuzzTally {
  mutants: number;
  sameAsAValidImage: number;
  rejectedUnsealed: number;
  resealedRejected: number;
  resealedAccepted: number;
  codes: Record<string, number>;
  slowestMs: number;
  rssGrowthBytes: number;
}

test('100,000 mutated images: each a typed IpcCkptError (or, re-sealed, a valid decode); no crash, no hang, bounded memory', async () => {
  const seed = testSeed();
  const random = seededRandom(seed);
  const images = validImages(seed);
  const problems: string[] = [];
  const tally: FuzzTally = { mutants: 0, sameAsAValidImage: 0, rejectedUnsealed: 0, resealedRejected: 0, resealedAccepted: 0, codes: {}, slowestMs: 0, rssGrowthBytes: 0 };
  const rssBefore = process.memoryUsage().rss;
  for (let i = 0; i < MUTANTS; i++) {
    const original = pick(random, images);
    // Half are re-sealed with a correct integrity record, so the structure checks must catch the defect alone.
    const resealed = random() < 0.5;
    const mutant = resealed ? seal(mutate(random, unsealed(original), images)) : mutate(random, original, images);
    tally.mutants++;
    // A splice can rebuild another valid image whole (its digest then matches): not a mutant.
    if (images.some((image) => image.equals(mutant))) {
      tally.sameAsAValidImage++;
      continue;
    }
    // Every eighth input arrives in small pieces, as from a pipe.
    const input = i % 8 === 0 ? inChunks(mutant, [1 + at(random, 7), 1 + at(random, 300)]) : mutant;
    const started = performance.now();
    const error = await decodeOutcome(input);
    tally.slowestMs = Math.max(tally.slowestMs, performance.now() - started);
    if (error) {
      tally.codes[error.code] = (tally.codes[error.code] ?? 0) + 1;
      if (!IMAGE_CODES.includes(error.code)) problems.push(`mutant ${i}: code ${error.code}: ${error.message}`);
      if (typeof error.offset !== 'number' || !/^record at offset \d+: /.test(error.message)) problems.push(`mutant ${i}: the error does not say where: ${error.message}`);
      if (resealed) tally.resealedRejected++;
      else tally.rejectedUnsealed++;
    } else if (resealed) {
      tally.resealedAccepted++;
    } else {
      problems.push(`mutant ${i} (seed ${seed}) decoded although its bytes changed and its integrity record did not`);
    }
    if (i % 1000 === 0) tally.rssGrowthBytes = Math.max(tally.rssGrowthBytes, process.memoryUsage().rss - rssBefore);
    if (problems.length > 20) break;
  }
  console.log(`decoder fuzz (seed ${seed}, ${images.length} valid images): ${JSON.stringify(tally)}`);
  expect(problems).toEqual([]);
  expect(tally.mutants).toBe(MUTANTS);
  expect(tally.slowestMs).toBeLessThan(DECODE_BOUND_MS);
  expect(tally.rssGrowthBytes).toBeLessThan(MEMORY_BOUND_BYTES);
});

describe('restore of rejected images into a real namespace', () => {
  let source: TestNamespace;
  let target: TestNamespace;
  let dir: string;

  beforeAll(async () => {
    [source, target] = await Promise.all([TestNamespace.create(), TestNamespace.create()]);
    dir = mkdtempSync(path.join(os.tmpdir(), 'ipc-ckpt-fuzz-'));
    populateSample(source.path);
    msgqTool(target.path, 'create', '0x7001', '600', '--id', 400);
    msgqTool(target.path, 'sysctl', 'msgmax', 4096);
  });

  afterAll(async () => {
    await Promise.all([source.destroy(), target.destroy()]);
    rmSync(dir, { recursive: true, force: true });
  });

  test('a handful of mutated real images are refused with E_IMAGE_CORRUPT before the target is touched', async () => {
    const imageFile = path.join(dir, 'real.img');
    expect(runCli(['save', '--ns', source.path, '-o', imageFile]).status).toBe(0);
    const real = readFileSync(imageFile);
    const body = unsealed(real);
    const flipped = (bytes: Buffer, offset: number) => {
      const copy = Buffer.from(bytes);
      copy[offset] ^= 0x10;
      return copy;
    };
    // Defects found only at the end (the integrity record, or the last records) are the ones a
    // streaming restore would already have acted on.
    const mutants: Record<string, Buffer> = {
      'last message byte flipped': flipped(real, body.length - 3),
      'integrity digest flipped': flipped(real, body.length + 20),
      'cut before the TAIL record': real.subarray(0, real.length - 8),
      'cut in the middle': real.subarray(0, Math.floor(real.length / 2)),
      're-sealed, last message length beyond the image': seal(Buffer.concat([body, Buffer.from('0300000000ffffff', 'hex')])),
      're-sealed, one byte appended': seal(Buffer.concat([body, Buffer.from([0])])),
    };
    const before = namespaceState(target);
    for (const [name, bytes] of Object.entries(mutants)) {
      expect([name, (await decodeOutcome(bytes))?.code]).toEqual([name, 'E_IMAGE_CORRUPT']);
      const file = path.join(dir, 'mutant.img');
      writeFileSync(file, bytes);
      const result = runCli(['restore', '--ns', target.path, '-i', file]);
      expect([name, result.status, result.stderr]).toEqual([name, 1, expect.stringMatching(/^ipc-ckpt: .*record at offset \d+: /)]);
      expect([name, namespaceState(target)]).toEqual([name, before]);
    }
  });
});
