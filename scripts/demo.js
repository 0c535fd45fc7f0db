#!/usr/bin/env node
// npm run demo: a throwaway IPC namespace with sample queues is saved, inspected, restored into a
// second fresh namespace and verified, each step printed with the command a user would type.
'use strict';
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const cli = path.join(root, 'bin', 'ipc-ckpt.js');
const { loadNative } = require(path.join(root, 'dist', 'lib', 'native.js'));

function step(title) {
  process.stdout.write(`\n== ${title}\n`);
}

/** A fresh IPC namespace held by a sleeping child; its path is /proc/PID/ns/ipc. */
async function freshNamespace() {
  const child = spawn('unshare', ['--ipc', 'sleep', 'infinity'], { stdio: 'ignore' });
  const host = fs.readlinkSync('/proc/self/ns/ipc');
  for (let i = 0; i < 500; i++) {
    try {
      if (fs.readlinkSync(`/proc/${child.pid}/ns/ipc`) !== host) return { child, path: `/proc/${child.pid}/ns/ipc` };
    } catch {
      // not started yet
    }
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
  throw new Error('unshare --ipc did not start');
}

function pack(messages) {
  return Buffer.concat(
    messages.flatMap(([type, body]) => {
      const header = Buffer.alloc(12);
      header.writeBigInt64LE(BigInt(type), 0);
      header.writeUInt32LE(body.length, 8);
      return [header, body];
    }),
  );
}

/** The sample an application might leave behind: keys, modes, owners, types and sizes. */
async function populate(nsPath) {
  const ns = await loadNative().openNamespace(nsPath);
  try {
    await ns.writeSysctl('msgmax', 65536);
    await ns.writeSysctl('msgmnb', 262144);
    const orders = await ns.createQueue({ key: 0x0000feed, id: 0, mode: 0o600, cuid: 0, cgid: 0 });
    await ns.sendMessages(orders, pack([[1, Buffer.from('order #1: 3 apples')], [1, Buffer.from('order #2: 1 pear')], [7, Buffer.alloc(0)]]), 3);
    const events = await ns.createQueue({ key: 0x0000beef, id: 32768 + 1, mode: 0o640, cuid: 1000, cgid: 1000 });
    await ns.sendMessages(events, pack([[2n ** 62n, Buffer.alloc(20000, 0x61)], [42, Buffer.from('large above, small here')]]), 2);
    await ns.setQueue(events, { uid: 1000, gid: 100, mode: 0o640, qbytes: 200000 });
    const scratch = await ns.createQueue({ key: 0, id: 2, mode: 0o000, cuid: 0, cgid: 0 });
    await ns.sendMessages(scratch, pack([[5, Buffer.from([0, 1, 2, 3, 255])]]), 1);
    await ns.writeSysctl('msgmax', 32768);
    await ns.writeSysctl('msgmnb', 65536);
  } finally {
    await ns.close();
  }
}

function run(args) {
  process.stdout.write(`$ ipc-ckpt ${args.join(' ')}\n`);
  const result = spawnSync(process.execPath, [cli, ...args], { stdio: 'inherit' });
  if (result.status !== 0) throw new Error(`ipc-ckpt ${args[0]} exited with ${result.status}`);
}

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ipc-ckpt-demo-'));
  const image = path.join(dir, 'queues.img');
  const source = await freshNamespace();
  const target = await freshNamespace();
  try {
    step(`a throwaway IPC namespace (${source.path}) with three sample queues`);
    await populate(source.path);
    spawnSync('nsenter', [`--ipc=${source.path}`, 'ipcs', '-q'], { stdio: 'inherit' });
    step('check: can this kernel and these privileges save and restore?');
    run(['check', '--ns', source.path]);
    step('save it');
    run(['save', '--ns', source.path, '-o', image]);
    step('what the image holds');
    run(['inspect', image]);
    step(`restore it into a second fresh namespace (${target.path})`);
    run(['restore', '--ns', target.path, '-i', image]);
    spawnSync('nsenter', [`--ipc=${target.path}`, 'ipcs', '-q'], { stdio: 'inherit' });
    step('verify: every restorable field and every message, in order');
    run(['verify', '--ns', target.path, '-i', image]);
    step('done: the demo namespaces are gone when their holders exit');
  } finally {
    source.child.kill('SIGKILL');
    target.child.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((error) => {
  process.stderr.write(`demo failed: ${error.message}\n`);
  process.exitCode = 1;
});
