#!/usr/bin/env node
// `node scripts/bench-posix.js`: POSIX queue save and restore of 10k messages (CLI and API) against a
// C loop of mq_receive/mq_send (scripts/bench-posix-baseline.c) on the same queues, in fresh namespaces.
// 10k messages need several queues: one queue of 10k exceeds RLIMIT_MSGQUEUE (819200 bytes) for any
// single owner here (the kernel charges ~170 bytes a slot at 16 B), so 16 queues of 625, each its own owner.
'use strict';
const { execFileSync, spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const REPO = path.resolve(__dirname, '..');
const CLI = path.join(REPO, 'bin', 'ipc-ckpt.js');
const QUEUES = 16;
const PER_QUEUE = 625;
const SIZE = 16;
const REPEATS = Number(process.env.BENCH_REPEATS ?? 5);
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'ipc-ckpt-bench-posix-'));

function build(source, name, flags = []) {
  const binary = path.join(work, name);
  execFileSync('gcc', ['-O2', ...flags, '-o', binary, source]);
  return binary;
}
const baseline = build(path.join(__dirname, 'bench-posix-baseline.c'), 'baseline');
const mqTool = build(path.join(REPO, 'test', 'fixtures', 'mq-tool.c'), 'mq-tool', ['-static']);

async function namespace() {
  const child = spawn('unshare', ['--ipc', 'sleep', 'infinity'], { stdio: 'ignore' });
  const host = fs.readlinkSync('/proc/self/ns/ipc');
  while (fs.readlinkSync(`/proc/${child.pid}/ns/ipc`) === host) await new Promise((r) => setTimeout(r, 2));
  return { path: `/proc/${child.pid}/ns/ipc`, destroy: () => child.kill('SIGKILL') };
}

const inNs = (ns, ...argv) => execFileSync('nsenter', [`--ipc=${ns.path}`, ...argv], { encoding: 'utf8' });
const names = Array.from({ length: QUEUES }, (_, q) => `bench${q}`);

function populate(ns) {
  inNs(ns, 'sh', '-c', `echo ${PER_QUEUE + 1} > /proc/sys/fs/mqueue/msg_max`);
  names.forEach((name, q) => {
    const uid = String(20000 + q);
    inNs(ns, 'setpriv', `--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', mqTool, 'create', name, String(PER_QUEUE + 1), String(SIZE), '600');
    inNs(ns, mqTool, 'fill', name, String(PER_QUEUE), String(SIZE));
  });
}

function seconds(fn) {
  const start = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - start) / 1e9;
}

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

async function main() {
  const api = require(path.join(REPO, 'dist', 'lib', 'index.js'));
  const rows = { 'C take+put back (save)': [], 'C mq_send (restore)': [], 'CLI save --quiescent': [], 'CLI restore': [], 'API save': [], 'API restore': [] };
  for (let run = 0; run < REPEATS; run++) {
    const source = await namespace();
    const target = await namespace();
    const apiTarget = await namespace();
    const sendTarget = await namespace();
    try {
      populate(source);
      rows['C take+put back (save)'].push(Number(inNs(source, baseline, 'take-back', ...names)));
      const image = path.join(work, 'bench.img');
      rows['CLI save --quiescent'].push(seconds(() => execFileSync(process.execPath, [CLI, 'save', '--ns', source.path, '--quiescent', '-q', '-o', image])));
      let start = process.hrtime.bigint();
      await api.save({ ns: source.path }, path.join(work, 'api.img'), { quiescent: true });
      rows['API save'].push(Number(process.hrtime.bigint() - start) / 1e9);
      rows['CLI restore'].push(seconds(() => execFileSync(process.execPath, [CLI, 'restore', '--ns', target.path, '-q', '-i', image])));
      start = process.hrtime.bigint();
      await api.restore({ ns: apiTarget.path }, image);
      rows['API restore'].push(Number(process.hrtime.bigint() - start) / 1e9);
      // The restore baseline: the same messages sent into queues made beforehand (creation is not timed).
      populate(sendTarget);
      for (const name of names) inNs(sendTarget, mqTool, 'receive-digest', name);
      rows['C mq_send (restore)'].push(names.reduce((sum, name) => sum + Number(inNs(sendTarget, baseline, 'send', name, String(PER_QUEUE), String(SIZE))), 0));
    } finally {
      for (const ns of [source, target, apiTarget, sendTarget]) ns.destroy();
    }
  }
  process.stdout.write(`POSIX queues: ${QUEUES} x ${PER_QUEUE} x ${SIZE} B = ${QUEUES * PER_QUEUE} messages, median of ${REPEATS}\n`);
  for (const [name, values] of Object.entries(rows)) process.stdout.write(`  ${name.padEnd(24)} ${(median(values) * 1000).toFixed(1).padStart(8)} ms\n`);
  fs.rmSync(work, { recursive: true, force: true });
}

main().catch((error) => {
  process.stderr.write(`${error.stack ?? error}\n`);
  process.exit(1);
});
