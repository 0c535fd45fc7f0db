#!/usr/bin/env node
// Calls every function of the native addon, success and error paths, against a fresh IPC namespace:
// small enough to run under valgrind memcheck, where the jest suites would take too long.
// Loads the addon named by IPC_CKPT_ADDON (else build/Release). Exit 0 when every call behaved.
'use strict';
const { spawn } = require('node:child_process');
const { readlinkSync } = require('node:fs');
const assert = require('node:assert/strict');
const path = require('node:path');

const addon = require(path.resolve(process.env.IPC_CKPT_ADDON || path.join(__dirname, '..', 'build', 'Release', 'ipc_ckpt.node')));

/** A packed batch: per message int64 type, uint32 size, body (lib/native.ts). */
function pack(messages) {
  return Buffer.concat(
    messages.flatMap(({ type, body }) => {
      const header = Buffer.alloc(12);
      header.writeBigInt64LE(type, 0);
      header.writeUInt32LE(body.length, 8);
      return [header, body];
    }),
  );
}

function freshNamespace() {
  const child = spawn('unshare', ['--ipc', 'sleep', 'infinity'], { stdio: 'ignore' });
  const host = readlinkSync('/proc/self/ns/ipc');
  return new Promise((resolve, reject) => {
    const poll = (tries) => {
      try {
        if (readlinkSync(`/proc/${child.pid}/ns/ipc`) !== host) return resolve({ path: `/proc/${child.pid}/ns/ipc`, end: () => child.kill('SIGKILL') });
      } catch {
        // not started yet
      }
      if (tries > 2000) return reject(new Error('unshare --ipc did not start'));
      setTimeout(() => poll(tries + 1), 5);
    };
    poll(0);
  });
}

async function rejectsWith(promise, code) {
  await assert.rejects(promise, (error) => {
    assert.equal(error.code, code, `expected ${code}, got ${error.code}: ${error.message}`);
    assert.equal(typeof error.message, 'string');
    return true;
  });
}

async function exercise(target) {
  await rejectsWith(addon.openNamespace('/nonexistent/ns/ipc'), 'ENOENT');
  await rejectsWith(addon.openNamespace('/proc/self/ns/net'), 'E_TARGET');
  const own = await addon.openNamespace('');
  assert.equal(typeof (await own.probe()).msgCopyErrno, 'number');
  await own.close();

  const ns = await addon.openNamespace(target.path);
  const probe = await ns.probe();
  assert.equal(probe.msgCopyErrno, 0);
  const limits = await ns.readSysctls();
  assert.equal(limits.msgmax, 8192);
  await ns.writeSysctl('msgmnb', 1 << 20);
  await ns.writeSysctl('msgmax', 100000);
  await rejectsWith(ns.writeSysctl('msgmax', -5), 'EINVAL');

  const id = await ns.createQueue({ key: 0x5a11, id: 32768 * 2 + 3, mode: 0o640, cuid: 1000, cgid: 1001 });
  assert.equal(id, 32768 * 2 + 3);
  await rejectsWith(ns.createQueue({ key: 0x5a11, id: 9, mode: 0o600, cuid: 0, cgid: 0 }), 'EEXIST');
  const other = await ns.createQueue({ key: 0, id: 10, mode: 0o600, cuid: 0, cgid: 0 });
  await assert.rejects(ns.createQueue({ key: 0x5a12, id: 32768 + 10, mode: 0o600, cuid: 0, cgid: 0 }));

  const messages = [0, 1, 63, 64, 65, 4096, 8192, 70000].map((size, i) => ({ type: BigInt(i + 1) * 2n ** 40n, body: Buffer.alloc(size, i + 1) }));
  assert.equal(await ns.sendMessages(id, pack(messages), messages.length), messages.length);
  await ns.setQueue(id, { uid: 2000, gid: 2001, mode: 0o600, qbytes: 200000 });
  const stat = await ns.statQueue(id);
  assert.equal(stat.qnum, messages.length);
  assert.equal(stat.uid, 2000);

  // Copies from a tiny buffer (grown on E2BIG), in small batches and in one.
  for (const [maxCount, maxBytes] of [[1, 1 << 20], [3, 100], [100, 1 << 22]]) {
    let first = 0;
    let bufferSize = 16;
    const copied = [];
    for (;;) {
      const batch = await ns.copyMessages(id, first, maxCount, maxBytes, bufferSize);
      copied.push(batch.data);
      first += batch.count;
      bufferSize = batch.bufferSize;
      if (batch.end) break;
    }
    assert.deepEqual(Buffer.concat(copied), pack(messages));
  }
  // A message larger than today's msgmax cannot be copied: E2BIG.
  await ns.writeSysctl('msgmax', 8192);
  await rejectsWith(ns.copyMessages(id, 7, 1, 1 << 20, 64), 'E2BIG');
  await ns.writeSysctl('msgmax', 100000);
  assert.equal((await ns.listQueues()).length, 2);

  // A batch that does not fit: the error carries how many were sent.
  await ns.setQueue(other, { uid: 0, gid: 0, mode: 0o600, qbytes: 100 });
  const overflow = [1, 2, 3].map(() => ({ type: 1n, body: Buffer.alloc(40) }));
  await assert.rejects(ns.sendMessages(other, pack(overflow), overflow.length), (error) => error.code === 'EAGAIN' && error.sent === 2);
  await assert.rejects(ns.sendMessages(other, pack(overflow).subarray(0, 20), 1));
  await rejectsWith(ns.setQueue(other, { uid: 0, gid: 0, mode: 0o600, qbytes: 1 << 30 }), 'EPERM');

  await ns.removeQueue(other);
  await rejectsWith(ns.statQueue(other), 'EINVAL');
  await rejectsWith(ns.removeQueue(other), 'EINVAL');
  await rejectsWith(ns.copyMessages(other, 0, 1, 100, 64), 'EINVAL');
  await ns.removeQueue(id);
  await exercisePosixQueues(ns);
  await ns.close();
  await rejectsWith(ns.listQueues(), 'E_INTERNAL');

  // Sessions opened and dropped without close(): the cleanup hook and GC must end them.
  for (let i = 0; i < 4; i++) await addon.openNamespace(target.path);
}

/** The POSIX queue calls (native/posix_queue_calls.cc): list, create, send, take and put back, limits, remove. */
async function exercisePosixQueues(ns) {
  const packPosix = (messages) =>
    Buffer.concat(messages.flatMap(({ priority, body }) => {
      const header = Buffer.alloc(8);
      header.writeUInt32LE(priority, 0);
      header.writeUInt32LE(body.length, 4);
      return [header, body];
    }));
  // valgrind does not know fsopen/fsmount (ENOSYS there): the POSIX calls run under ASan+UBSan only.
  try {
    await ns.listPosixQueues();
  } catch (error) {
    if (error.code !== 'ENOSYS') throw error;
    process.stdout.write('sanitize-exercise: fsopen is not implemented here (valgrind): POSIX queue calls skipped\n');
    return;
  }
  const limits = await ns.readMqueueLimits();
  await ns.writeMqueueLimit('msg_max', 20);
  await ns.createPosixQueue({ name: 'exercise', mode: 0o640, uid: 1000, gid: 1001, maxmsg: 20, msgsize: 8192 });
  await rejectsWith(ns.createPosixQueue({ name: 'exercise', mode: 0o600, uid: 0, gid: 0, maxmsg: 1, msgsize: 1 }), 'EEXIST');
  await rejectsWith(ns.createPosixQueue({ name: 'too-big', mode: 0o600, uid: 0, gid: 0, maxmsg: 21, msgsize: 1 }), 'EINVAL');
  const messages = [0, 1, 8192, 100].map((size, i) => ({ priority: [5, 32767, 5, 0][i], body: Buffer.alloc(size, i + 1) }));
  assert.equal(await ns.sendPosixMessages('exercise', packPosix(messages), messages.length), messages.length);
  const taken = await ns.takePosixMessages('exercise');
  assert.deepEqual(taken.data, packPosix([messages[1], messages[0], messages[2], messages[3]]));
  assert.equal(taken.after.curmsgs, 4);
  assert.equal((await ns.listPosixQueues()).length, 1);
  await rejectsWith(ns.takePosixMessages('missing'), 'ENOENT');
  await rejectsWith(ns.takePosixMessages('a/b'), 'E_INTERNAL');
  await rejectsWith(ns.sendPosixMessages('exercise', Buffer.alloc(5), 1), 'E_INTERNAL');
  await ns.removePosixQueue('exercise');
  await rejectsWith(ns.removePosixQueue('exercise'), 'ENOENT');
  await ns.writeMqueueLimit('msg_max', limits.msg_max);
}

/** The calls that touch no namespace: read leases, fstatfs, the heap policy. */
function exerciseFileCalls() {
  const fs = require('node:fs');
  const os = require('node:os');
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'sanitize-')), 'leased');
  fs.writeFileSync(file, 'bytes');
  const fd = fs.openSync(file, 'r');
  try {
    assert.equal(typeof addon.fileSystemMagic(fd), 'number');
    assert.equal(addon.takeReadLease(fd), true);
    assert.equal(addon.readLeaseHeld(fd), true);
  } finally {
    fs.closeSync(fd);
  }
  assert.throws(() => addon.takeReadLease(1 << 20), { code: 'EBADF' });
  assert.throws(() => addon.fileSystemMagic('x'));
  // libasan's and valgrind's allocators answer mallopt as they like: only the call is exercised here.
  assert.equal(typeof addon.keepFreedHeap(32 << 20, 64 << 20), 'boolean');
  assert.throws(() => addon.keepFreedHeap(0, 0));
  fs.rmSync(path.dirname(file), { recursive: true });
}

async function main() {
  const target = await freshNamespace();
  try {
    await exercise(target);
  } finally {
    target.end();
  }
  exerciseFileCalls();
  process.stdout.write('sanitize-exercise: every native call behaved\n');
}

main().catch((error) => {
  process.stderr.write(`sanitize-exercise: ${error && error.stack ? error.stack : error}\n`);
  process.exit(1);
});
