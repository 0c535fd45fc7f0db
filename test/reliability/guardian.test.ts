// The rollback guardian (native/rollback_guardian.cc) as the safety net: it rolls back thousands of
// queues in one walk over the namespace, and when it cannot start or dies mid-run, ipc-ckpt rolls
// back by itself and fails with a clear error, never a stack trace.
import { execFileSync, spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createInterface } from 'node:readline';
import { guardianFile } from '../../lib/native';
import { TestNamespace } from '../support/namespace';
import { msgqTool } from '../support/msgq-tool';
import { buildHammer } from '../support/hammer';
import { runCli } from '../support/cli';
import { namespaceState, runCliKilled, seededRandom, testSeed, restoreGuardianLife, waitUntilAlone } from './killed-run';

const GUARDIAN_KILLS = 20;
/** Three createQueues batches (2,048 each): the guardian is asked again between them. */
const KILL_IMAGE_QUEUES = 5000;

jest.setTimeout(10 * 60_000);

let dir: string;

beforeAll(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'ipc-ckpt-guardian-'));
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** Queue ids and keys of a namespace, from /proc/sysvipc/msg read inside it. */
function listQueues(ns: TestNamespace): Array<{ id: number; key: number }> {
  const text = execFileSync('nsenter', [`--ipc=${ns.path}`, 'cat', '/proc/sysvipc/msg'], { encoding: 'utf8', maxBuffer: 1 << 26 });
  return text
    .trim()
    .split('\n')
    .slice(1)
    .map((line) => line.trim().split(/\s+/))
    .map(([key, id]) => ({ key: Number(key) >>> 0, id: Number(id) }));
}

/** Starts the guardian program in ns, registers `queues` in one line, then closes its stdin as if ipc-ckpt died; resolves to the rollback's milliseconds. */
async function guardianRollsBack(ns: TestNamespace, queues: Array<{ id: number; key: number }>): Promise<number> {
  const child = spawn(guardianFile(), [ns.path], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout });
  const replies: string[] = [];
  let wake: (() => void) | undefined;
  lines.on('line', (line) => {
    replies.push(line);
    wake?.();
  });
  const reply = async () => {
    while (replies.length === 0) await new Promise<void>((resolve) => (wake = resolve));
    return replies.shift();
  };
  expect(await reply()).toBe('ready');
  child.stdin.write(`queues ${queues.map((q) => `${q.id} ${q.key}`).join(' ')}\n`);
  expect(await reply()).toBe('ok');
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
  const started = process.hrtime.bigint();
  child.stdin.end();
  expect(await exited).toBe(0);
  return Number(process.hrtime.bigint() - started) / 1e6;
}

test.each([1000, 32000])('the guardian removes %i registered queues in one walk, and only those (same id and key)', async (count) => {
  const ns = await TestNamespace.create();
  try {
    msgqTool(ns.path, 'sysctl', 'msgmni', 32768);
    execFileSync('nsenter', [`--ipc=${ns.path}`, '--', buildHammer(), 'create-many', String(count)]);
    const all = listQueues(ns);
    expect(all).toHaveLength(count);
    // Registered: all but the last 10; of those, one registered under another key than its own.
    const registered = all.slice(0, -10).map((q, i) => (i === 5 ? { id: q.id, key: 0x1234 } : q));
    const ms = await guardianRollsBack(ns, registered);
    console.log(`guardian rollback of ${registered.length} registered queues (of ${count}): ${ms.toFixed(1)} ms`);
    const left = listQueues(ns).map((q) => q.id).sort((a, b) => a - b);
    expect(left).toEqual([all[5].id, ...all.slice(-10).map((q) => q.id)].sort((a, b) => a - b));
  } finally {
    await ns.destroy();
  }
});

/** Pids of running ipc-ckpt-guardian programs whose argument is nsPath. */
function guardiansOf(nsPath: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (argv[0].endsWith('ipc-ckpt-guardian') && argv[1] === nsPath) found.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

test('the guardian SIGKILLed at random moments of a restore: ipc-ckpt rolls back by itself and fails with one clear line', async () => {
  const many = await TestNamespace.create();
  const image = path.join(dir, 'many.img');
  try {
    execFileSync('nsenter', [`--ipc=${many.path}`, '--', buildHammer(), 'create-many', String(KILL_IMAGE_QUEUES)]);
    msgqTool(many.path, 'sysctl', 'msgmnb', 100000);
    expect(runCli(['save', '--ns', many.path, '-o', image]).status).toBe(0);
  } finally {
    await many.destroy();
  }
  const seed = testSeed() + 50;
  const random = seededRandom(seed);
  const tally = { guardianKilled: 0, rolledBackByIpcCkpt: 0, completed: 0 };
  const problems: string[] = [];
  const prepare = (target: TestNamespace) => {
    msgqTool(target.path, 'sysctl', 'msgmnb', 30000);
    msgqTool(target.path, 'create', '0x7001', '640', '--id', 20000);
  };
  // The kills land within the guardian's life in an unkilled restore (it starts after the validating pass),
  // so they hit a restore however fast this machine makes it.
  const guardianLifeMs = await restoreGuardianLife(image, { prepare, present: (target) => guardiansOf(target.path).length > 0 });
  for (let run = 0; run < GUARDIAN_KILLS; run++) {
    const target = await TestNamespace.create();
    try {
      prepare(target);
      const before = namespaceState(target);
      let killedGuardian = false;
      const delayMs = Math.floor(random() * 0.5 * guardianLifeMs);
      // The "kill" is of the guardian: the CLI itself is never signalled (its plan's delay is far away).
      const watcher = setInterval(() => {
        const [pid] = guardiansOf(target.path);
        if (pid !== undefined && !killedGuardian) {
          killedGuardian = true;
          setTimeout(() => {
            try {
              process.kill(pid, 'SIGKILL');
            } catch {
              killedGuardian = false; // it had exited already
            }
          }, delayMs);
        }
      }, 1);
      const result = await runCliKilled(['restore', '--ns', target.path, '-i', image], { delayMs: 10 * 60_000 });
      clearInterval(watcher);
      await waitUntilAlone(target);
      const state = namespaceState(target);
      if (/\n\s+at /.test(result.stderr) || /internal error|EPIPE/.test(result.stderr)) problems.push(`run ${run}: ${result.stderr}`);
      if (result.status === 0) {
        tally.completed++;
        if (runCli(['verify', '--ignore-other-queues', '--ns', target.path, '-i', image]).status !== 0) problems.push(`run ${run}: exit 0 but not restored`);
      } else {
        if (killedGuardian) tally.guardianKilled++;
        if (!/^ipc-ckpt: the rollback guardian (died|could not start) \(it was killed by SIGKILL\)/.test(result.stderr)) problems.push(`run ${run}: exit ${result.status}: ${result.stderr.trim()}`);
        if (JSON.stringify(state) === JSON.stringify(before)) tally.rolledBackByIpcCkpt++;
        else problems.push(`run ${run}: the target is not as before (${state.queues.length} queues, limits ${JSON.stringify(state.limits)})`);
      }
    } finally {
      await target.destroy();
    }
  }
  console.log(`guardian kills during restore (seed ${seed}, guardian life ${guardianLifeMs} ms): ${JSON.stringify(tally)}`);
  expect(problems).toEqual([]);
  expect(tally.rolledBackByIpcCkpt).toBeGreaterThan(GUARDIAN_KILLS / 2);
});

test('a guardian that cannot start: restore and save fail with a clear error, change nothing and leave no file', async () => {
  // An addon without its guardian program beside it (as a broken install would be).
  const broken = path.join(dir, 'broken');
  mkdirSync(broken);
  copyFileSync(path.resolve(__dirname, '../../build/Release/ipc_ckpt.node'), path.join(broken, 'ipc_ckpt.node'));
  const env = { IPC_CKPT_ADDON: path.join(broken, 'ipc_ckpt.node'), TMPDIR: path.join(dir, 'tmp') };
  mkdirSync(env.TMPDIR);
  const source = await TestNamespace.create();
  const target = await TestNamespace.create();
  try {
    msgqTool(source.path, 'create', '0x42', '600');
    const image = path.join(dir, 'one.img');
    expect(runCli(['save', '--ns', source.path, '-o', image]).status).toBe(0);
    const before = namespaceState(target);
    const restored = runCli(['restore', '--ns', target.path, '-i', '-'], { input: readFileSync(image), env });
    expect(restored.status).toBe(1);
    expect(restored.stderr).toMatch(/^ipc-ckpt: the rollback guardian could not start \(starting .*ipc-ckpt-guardian: No such file or directory \(ENOENT\)\)/);
    expect(restored.stderr).not.toMatch(/\n\s+at /);
    expect(namespaceState(target)).toEqual(before);
    const out = path.join(dir, 'out');
    mkdirSync(out);
    const saved = runCli(['save', '--ns', source.path, '-o', path.join(out, 'q.img')], { env });
    expect(saved.status).toBe(1);
    expect(saved.stderr).toMatch(/^ipc-ckpt: the rollback guardian could not start/);
    expect(readdirSync(out)).toEqual([]);
    expect(readdirSync(env.TMPDIR)).toEqual([]);
  } finally {
    await Promise.all([source.destroy(), target.destroy()]);
  }
});

/** An IPC namespace owned by a user namespace whose root is host uid/gid 100000 (as a rootless container's). */
async function userNamespaced(): Promise<{ ns: string; stop: () => void }> {
  const child = spawn('unshare', ['--user', '--ipc', 'sh', '-c', 'read go; exec sleep infinity'], { stdio: ['pipe', 'ignore', 'inherit'] });
  const pid = child.pid!;
  // unshare execs sh once it has unshared: then the maps can be written.
  while (readFileSync(`/proc/${pid}/cmdline`, 'utf8').startsWith('unshare')) await new Promise((r) => setTimeout(r, 2));
  writeFileSync(`/proc/${pid}/uid_map`, '0 100000 65536');
  writeFileSync(`/proc/${pid}/setgroups`, 'deny');
  writeFileSync(`/proc/${pid}/gid_map`, '0 100000 65536');
  child.stdin!.write('go\n');
  return { ns: `/proc/${pid}/ns/ipc`, stop: () => child.kill('SIGKILL') };
}

test("after a SIGKILL the guardian writes a sysctl of a user-namespaced IPC namespace back as that namespace's root uid (host root gets EACCES)", async () => {
  const { ns, stop } = await userNamespaced();
  try {
    const readMsgmax = () => execFileSync('nsenter', [`--ipc=${ns}`, 'cat', '/proc/sys/kernel/msgmax'], { encoding: 'utf8' }).trim();
    expect(() => execFileSync('nsenter', [`--ipc=${ns}`, 'sh', '-c', 'echo 9000 > /proc/sys/kernel/msgmax'], { stdio: 'pipe' })).toThrow(/Permission denied/);
    const script = `
      const { RollbackGuardian } = require(${JSON.stringify(path.resolve(__dirname, '../../dist/lib/rollback-guardian.js'))});
      const guardian = new RollbackGuardian({ nsPath: ${JSON.stringify(ns)}, label: 'test' });
      guardian.registerSysctl('msgmax', 12345, { writeAsUid: 100000, writeAsGid: 100000 }).then(() => process.kill(process.pid, 'SIGKILL'));`;
    const killed = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'ignore', 'pipe'] });
    const stderr: Buffer[] = [];
    killed.stderr.on('data', (d: Buffer) => stderr.push(d));
    await new Promise((resolve) => killed.on('close', resolve));
    // The guardian outlives the killed process by the moment its rollback takes.
    for (let i = 0; i < 500 && readMsgmax() !== '12345'; i++) await new Promise((r) => setTimeout(r, 10));
    expect(readMsgmax()).toBe('12345');
    expect(Buffer.concat(stderr).toString()).toMatch(/ipc-ckpt-guardian: ipc-ckpt ended before it was done; rolled back: 0 queue\(s\) removed, 1 file\(s\) written back/);
  } finally {
    stop();
  }
});
