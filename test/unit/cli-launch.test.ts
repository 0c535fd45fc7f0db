// The CLI's launch from its bundle with a V8 code cache per command (lib/cli-launch.ts), run as a user
// runs it (bin/ipc-ckpt.js after `npm run build:ts`), with the caches in a directory of the test's own.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { cacheKeyOf, CLI_BUNDLE } from '../../lib/cli-launch';
import { runCli } from '../support/cli';
import { GOLDEN_IMAGE } from './image/golden';

let workdir: string;
let image: string;
let cacheDir: string;
const bundle = path.resolve(__dirname, '../../dist/lib/cli.bundle.js');

beforeEach(() => {
  workdir = mkdtempSync(path.join(tmpdir(), 'ipc-ckpt-launch-'));
  image = path.join(workdir, 'golden.img');
  writeFileSync(image, GOLDEN_IMAGE);
  cacheDir = path.join(workdir, 'cache');
  mkdirSync(cacheDir);
});
afterEach(() => rmSync(workdir, { recursive: true, force: true }));

const inspectCache = () => path.join(cacheDir, 'cli.bundle.inspect.v8cache');
const inspectRun = (env: NodeJS.ProcessEnv = { IPC_CKPT_CODE_CACHE: cacheDir }) => runCli(['inspect', '--json', image], { env });

/** What a cache was made for: its header without the digest of its data. */
const madeFor = (cache: Buffer) => cache.subarray(0, cache.indexOf(10)).toString('latin1').split(' ').filter((_, i) => i !== 3).join(' ');

/** The cache file is now made for what good was made for, and the next run uses it as it is. */
function expectAcceptedCacheLike(good: Buffer): void {
  const now = readFileSync(inspectCache());
  expect(madeFor(now)).toBe(madeFor(good));
  expect(inspectRun().status).toBe(0);
  expect(readFileSync(inspectCache()).equals(now)).toBe(true);
}

/** A run without a cache (what every run must print) and the good cache a first run leaves. */
function referenceAndGoodCache(): { reference: string; good: Buffer } {
  const reference = inspectRun({ IPC_CKPT_CODE_CACHE: 'off' }).stdout;
  expect(inspectRun().status).toBe(0);
  return { reference, good: readFileSync(inspectCache()) };
}

/** With `replaced` in the cache's place: the run prints what reference does, and leaves a good cache instead. */
function expectRunReplacing(replaced: Buffer, reference: string, good: Buffer): void {
  writeFileSync(inspectCache(), replaced);
  const run = inspectRun();
  expect(run.status).toBe(0);
  expect(run.stdout).toBe(reference);
  expect(readFileSync(inspectCache()).equals(replaced)).toBe(false);
  expectAcceptedCacheLike(good);
}

test('the build made the bundle the CLI runs, beside the modules', () => {
  expect(CLI_BUNDLE.endsWith(path.join('lib', 'cli.bundle.js'))).toBe(true);
  expect(existsSync(bundle)).toBe(true);
});

test('a successful run writes its command\'s cache; the next run uses it and leaves it as it was', () => {
  const first = inspectRun();
  expect(first.status).toBe(0);
  const contents = readFileSync(inspectCache());
  const header = contents.subarray(0, contents.indexOf(10) + 1).toString('latin1');
  expect(header).toMatch(new RegExp(`^ipc-ckpt-code-cache 1 [0-9a-f]{64} [0-9a-f]{64} node-${process.version.replace(/\./g, '\\.')} ${process.arch}\\n$`));
  expect(contents.length).toBeGreaterThan(header.length + 10000);
  const written = statSync(inspectCache()).mtimeMs;
  const second = inspectRun();
  expect(second.status).toBe(0);
  expect(second.stdout).toBe(first.stdout);
  expect(statSync(inspectCache()).mtimeMs).toBe(written);
  expect(readFileSync(inspectCache()).equals(contents)).toBe(true);
});

test('a cache made for another bundle is not used: the run is the same, and the cache is made anew', () => {
  const { reference, good } = referenceAndGoodCache();
  const otherBundle = Buffer.from(good.toString('latin1').replace(/^(ipc-ckpt-code-cache 1 )[0-9a-f]{64}/, `$1${'0'.repeat(64)}`), 'latin1');
  expectRunReplacing(otherBundle, reference, good);
});

test('a damaged cache is never run: its data no longer matches its digest, V8 would not see it; it is replaced', () => {
  const { reference, good } = referenceAndGoodCache();
  const damaged = Buffer.from(good);
  const payload = good.indexOf(10) + 1;
  // In the middle of the bytecode, where V8 (no checksum in a release build) would not notice.
  for (let i = payload + 5000; i < payload + 5064; i++) damaged[i] ^= 0xa5;
  expectRunReplacing(damaged, reference, good);
});

test('a cache V8 refuses (made by another V8 or with other flags) is replaced, and the run is unharmed', () => {
  const { reference, good } = referenceAndGoodCache();
  // A cache made under --no-lazy carries another flag hash: our header matches, V8 rejects the data.
  const script = `
    const { Script } = require('node:vm'); const { createHash } = require('node:crypto'); const fs = require('node:fs');
    const source = fs.readFileSync(${JSON.stringify(bundle)}, 'utf8');
    const data = new Script('(function (exports, require, module, __filename, __dirname) {' + source + '\\n})', { filename: ${JSON.stringify(bundle)} }).createCachedData();
    const h = (d) => createHash('sha256').update(d).digest('hex');
    fs.writeFileSync(${JSON.stringify(inspectCache())}, Buffer.concat([Buffer.from('ipc-ckpt-code-cache 1 ' + h(source) + ' ' + h(data) + ' node-' + process.version + ' ' + process.arch + '\\n', 'latin1'), data]));`;
  expect(spawnSync(process.execPath, ['--no-lazy', '-e', script]).status).toBe(0);
  expectRunReplacing(readFileSync(inspectCache()), reference, good);
});

test('failed runs, help and version write no cache; off writes none; an unwritable directory is no error', () => {
  expect(inspectRun({ IPC_CKPT_CODE_CACHE: 'off' }).status).toBe(0);
  expect(existsSync(inspectCache())).toBe(false);
  expect(runCli(['inspect', path.join(workdir, 'missing.img')], { env: { IPC_CKPT_CODE_CACHE: cacheDir } }).status).toBe(1);
  expect(runCli(['inspect', '--help'], { env: { IPC_CKPT_CODE_CACHE: cacheDir } }).status).toBe(0);
  expect(runCli(['--version'], { env: { IPC_CKPT_CODE_CACHE: cacheDir } }).status).toBe(0);
  expect(existsSync(inspectCache())).toBe(false);
  const notADirectory = path.join(workdir, 'golden.img', 'cache');
  const run = runCli(['inspect', '--json', image], { env: { IPC_CKPT_CODE_CACHE: notADirectory } });
  expect(run.status).toBe(0);
  expect(run.stderr).toBe('');
});

test('the cache key is the command word, never a help or version run', () => {
  expect(cacheKeyOf(['save', '-o', 'x.img'])).toBe('save');
  expect(cacheKeyOf(['restore', '-i', 'x.img', '--dry-run'])).toBe('restore');
  expect(cacheKeyOf(['save', '--help'])).toBeUndefined();
  expect(cacheKeyOf(['--version'])).toBeUndefined();
  expect(cacheKeyOf(['../etc'])).toBeUndefined();
  expect(cacheKeyOf([])).toBeUndefined();
});
