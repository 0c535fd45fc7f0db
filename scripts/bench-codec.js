#!/usr/bin/env node
// Image codec measurements for `npm run bench`, one phase per process so each peak RSS is the phase's own.
//   bench-codec.js write-image FILE QUEUES MESSAGES SIZE MSGMAX MSGMNB   image of synthetic queues, streamed to FILE
//   bench-codec.js encode-memory TOTAL_BYTES                            encode 64 KiB messages, discard the output
//   bench-codec.js decode-memory TOTAL_BYTES                            decode an in-memory image of 64 KiB messages
//   bench-codec.js decode-file FILE                                     decode an image file as a stream
//   bench-codec.js sha256 TOTAL_BYTES                                   SHA-256 alone (the integrity record's bound)
// Each prints one JSON line: bytes (image bytes), seconds, vmHwmKb.
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const DIST_IMAGE = path.join(__dirname, '..', 'dist', 'lib', 'image');
const { ImageEncoder, ImageDigest } = require(path.join(DIST_IMAGE, 'encoder.js'));
const { PACKED_MESSAGE_HEADER_BYTES, PACKED_TYPE_OFFSET, PACKED_SIZE_OFFSET } = require(path.join(DIST_IMAGE, 'packed.js'));
const { decodeImage } = require(path.join(DIST_IMAGE, 'decoder.js'));

// Keys of the queues the benchmark makes (scripts/bench-baseline.c uses the same): queue i gets KEY_BASE + i.
const KEY_BASE = 0x62650000;
// Messages are handed to the encoder in packed batches of about this size (lib/save.ts's default batch).
const BATCH_BYTES = 4 * 1024 * 1024;
const CODEC_MESSAGE_BYTES = 64 * 1024;
// The message types cycle like the C baseline's fill: 1 + (index % 7).
const TYPE_CYCLE = 7;
const BODY_BYTE = 0x5a;

function elapsedSeconds(start) {
  return Number(process.hrtime.bigint() - start) / 1e9;
}

function vmHwmKb() {
  return Number(/^VmHWM:\s+(\d+)/m.exec(fs.readFileSync('/proc/self/status', 'utf8'))[1]);
}

function print(result) {
  process.stdout.write(`${JSON.stringify({ ...result, vmHwmKb: vmHwmKb() })}\n`);
}

/** A packed batch (the native layout) of `count` messages of `size` bytes, starting at message number `first`. */
function packedBatch(first, count, size) {
  const packed = Buffer.alloc(count * (PACKED_MESSAGE_HEADER_BYTES + size), BODY_BYTE);
  let pos = 0;
  for (let i = 0; i < count; i++) {
    packed.writeBigInt64LE(BigInt(1 + ((first + i) % TYPE_CYCLE)), pos + PACKED_TYPE_OFFSET);
    packed.writeUInt32LE(size, pos + PACKED_SIZE_OFFSET);
    pos += PACKED_MESSAGE_HEADER_BYTES + size;
  }
  return packed;
}

function readKernelNumbers(name) {
  return fs.readFileSync(`/proc/sys/kernel/${name}`, 'utf8').trim().split(/\s+/);
}

function imageHeader() {
  const [major, minor, patch] = os.release().split(/[.-]/).map((part) => Number.parseInt(part, 10) || 0);
  return {
    kernelRelease: os.release(),
    kernelVersion: os.version(),
    machine: os.machine(),
    major,
    minor,
    patch,
    archId: 2,
    time: BigInt(Math.floor(Date.now() / 1000)),
    uflags: 0n,
  };
}

function namespaceLimits(msgmax, msgmnb) {
  const [semMsl, semMns, semOpm, semMni] = readKernelNumbers('sem').map(Number);
  return {
    shmCtlmax: BigInt(readKernelNumbers('shmmax')[0]),
    shmCtlall: BigInt(readKernelNumbers('shmall')[0]),
    shmCtlmni: Number(readKernelNumbers('shmmni')[0]),
    msgCtlmax: msgmax,
    msgCtlmnb: msgmnb,
    msgCtlmni: Number(readKernelNumbers('msgmni')[0]),
    semCtlMsl: semMsl,
    semCtlMns: semMns,
    semCtlOpm: semOpm,
    semCtlMni: semMni,
  };
}

function queueRecord(index, messages, size, qbytes) {
  const now = BigInt(Math.floor(Date.now() / 1000));
  return {
    id: index,
    key: KEY_BASE + index,
    uid: process.getuid(),
    gid: process.getgid(),
    cuid: process.getuid(),
    cgid: process.getgid(),
    mode: 0o600,
    seq: 0,
    stime: now,
    rtime: 0n,
    ctime: now,
    cbytes: BigInt(messages * size),
    qnum: BigInt(messages),
    qbytes: BigInt(qbytes),
    lspid: 0,
    lrpid: 0,
  };
}

/** Streams a whole image of `queues` queues of `messages` messages of `size` bytes to `file` (encode via a file). */
function writeImage(file, queues, messages, size, msgmax, msgmnb) {
  const encoder = new ImageEncoder();
  const digest = new ImageDigest();
  const fd = fs.openSync(file, 'w');
  let bytes = 0;
  const emit = (piece) => {
    digest.update(piece);
    fs.writeSync(fd, piece);
    bytes += piece.length;
  };
  const perBatch = Math.max(1, Math.floor(BATCH_BYTES / (PACKED_MESSAGE_HEADER_BYTES + size)));
  const start = process.hrtime.bigint();
  emit(encoder.header(imageHeader()));
  emit(encoder.limits(namespaceLimits(msgmax, msgmnb)));
  emit(encoder.msgSection(queues));
  // A fresh namespace's queues are ids 0, 1, 2, ...: the ids the C baseline's fill produces.
  let template = null;
  for (let q = 0; q < queues; q++) {
    emit(encoder.queue(queueRecord(q, messages, size, msgmnb)));
    for (let first = 0; first < messages; first += perBatch) {
      const count = Math.min(perBatch, messages - first);
      // Batches with the same count and phase of the type cycle are identical: build each once.
      if (template === null || template.count !== count || template.phase !== first % TYPE_CYCLE) {
        template = { count, phase: first % TYPE_CYCLE, packed: packedBatch(first, count, size) };
      }
      emit(encoder.messagesFromPacked(template.packed, count));
    }
  }
  const trailer = encoder.trailer(digest.digest());
  fs.writeSync(fd, trailer);
  bytes += trailer.length;
  const seconds = elapsedSeconds(start);
  fs.fsyncSync(fd);
  fs.closeSync(fd);
  return { phase: 'write-image', bytes, messages: queues * messages, seconds, secondsWithFsync: elapsedSeconds(start) };
}

/** Encoding alone: 64 KiB messages through the save path's hot loop and the digest, output discarded. */
function encodeMemory(totalBytes) {
  const perBatch = Math.floor(BATCH_BYTES / (PACKED_MESSAGE_HEADER_BYTES + CODEC_MESSAGE_BYTES));
  const packed = packedBatch(0, perBatch, CODEC_MESSAGE_BYTES);
  const encoder = new ImageEncoder();
  const batches = Math.max(1, Math.round(totalBytes / packed.length));
  let bytes = 0;
  let recordsSeconds = 0;
  const digest = new ImageDigest();
  const start = process.hrtime.bigint();
  for (let i = 0; i < batches; i++) {
    const recordsStart = process.hrtime.bigint();
    const encoded = encoder.messagesFromPacked(packed, perBatch);
    recordsSeconds += elapsedSeconds(recordsStart);
    digest.update(encoded);
    bytes += encoded.length;
  }
  digest.digest();
  return { phase: 'encode-memory', bytes, messages: batches * perBatch, seconds: elapsedSeconds(start), recordsSeconds };
}

/**
 * An in-memory image of about totalBytes of 64 KiB messages, as its list of encoded pieces. The
 * message pieces are one encoded batch repeated (same object), so the image costs little memory.
 */
function inMemoryImage(totalBytes) {
  const encoder = new ImageEncoder();
  const perBatch = Math.floor(BATCH_BYTES / (PACKED_MESSAGE_HEADER_BYTES + CODEC_MESSAGE_BYTES)) * TYPE_CYCLE;
  const batch = encoder.messagesFromPacked(packedBatch(0, perBatch, CODEC_MESSAGE_BYTES), perBatch);
  const batches = Math.max(1, Math.round(totalBytes / batch.length));
  const messages = batches * perBatch;
  const pieces = [
    encoder.header(imageHeader()),
    encoder.limits(namespaceLimits(CODEC_MESSAGE_BYTES, Math.min(messages * CODEC_MESSAGE_BYTES, 0x7fffffff))),
    encoder.msgSection(1),
    encoder.queue(queueRecord(0, messages, CODEC_MESSAGE_BYTES, Math.min(messages * CODEC_MESSAGE_BYTES, 0x7fffffff))),
  ];
  for (let i = 0; i < batches; i++) pieces.push(batch);
  const digest = new ImageDigest();
  for (const piece of pieces) digest.update(piece);
  pieces.push(encoder.trailer(digest.digest()));
  return { pieces, messages, bytes: pieces.reduce((sum, piece) => sum + piece.length, 0) };
}

/** Runs the decoder over the whole input, as restore's validating pass does; returns the messages seen. */
async function drainDecoder(input) {
  let messages = 0;
  let imageBytes = 0;
  for await (const event of decodeImage(input)) {
    if (event.kind === 'messages') messages += event.count;
    else if (event.kind === 'end') imageBytes = event.imageBytes;
  }
  return { messages, imageBytes };
}

async function decodeMemory(totalBytes) {
  const image = inMemoryImage(totalBytes);
  const start = process.hrtime.bigint();
  const decoded = await drainDecoder(image.pieces);
  const seconds = elapsedSeconds(start);
  if (decoded.messages !== image.messages) throw new Error(`decoded ${decoded.messages} messages, the image holds ${image.messages}`);
  return { phase: 'decode-memory', bytes: image.bytes, messages: decoded.messages, seconds };
}

/** Decodes an image file read in 1 MiB chunks, the chunk size lib/image-input.ts reads files with. */
async function decodeFile(file) {
  const start = process.hrtime.bigint();
  const decoded = await drainDecoder(fs.createReadStream(file, { highWaterMark: 1024 * 1024 }));
  return { phase: 'decode-file', bytes: decoded.imageBytes, messages: decoded.messages, seconds: elapsedSeconds(start) };
}

/** node:crypto's SHA-256 over 4 MiB pieces: every byte of an image goes through it once on save and restore. */
function sha256Only(totalBytes) {
  const piece = Buffer.alloc(BATCH_BYTES, BODY_BYTE);
  const pieces = Math.max(1, Math.round(totalBytes / piece.length));
  const digest = new ImageDigest();
  const start = process.hrtime.bigint();
  for (let i = 0; i < pieces; i++) digest.update(piece);
  digest.digest();
  return { phase: 'sha256', bytes: pieces * piece.length, seconds: elapsedSeconds(start) };
}

async function main() {
  const [phase, ...args] = process.argv.slice(2);
  if (phase === 'write-image') {
    const [file, ...numbers] = args;
    const [queues, messages, size, msgmax, msgmnb] = numbers.map(Number);
    print(writeImage(file, queues, messages, size, msgmax, msgmnb));
  } else if (phase === 'encode-memory') {
    print(encodeMemory(Number(args[0])));
  } else if (phase === 'decode-memory') {
    print(await decodeMemory(Number(args[0])));
  } else if (phase === 'sha256') {
    print(sha256Only(Number(args[0])));
  } else if (phase === 'decode-file') {
    print(await decodeFile(args[0]));
  } else {
    process.stderr.write('usage: bench-codec.js write-image|encode-memory|decode-memory|decode-file ...\n');
    process.exit(2);
  }
}

main().catch((error) => {
  process.stderr.write(`bench-codec: ${error && error.stack ? error.stack : error}\n`);
  process.exit(1);
});
