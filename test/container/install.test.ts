// What users get: the `npm pack` tarball, installed into a fresh folder of a container. Without a C/C++ compiler or
// make, the prebuilt addon is what loads and `npx ipc-ckpt` checks, saves, restores and verifies; with the toolchain,
// `npm install --build-from-source` compiles the addon from the packaged sources and that one loads instead.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { buildMsgqTool } from '../support/msgq-tool';
import { recipeLeftovers, recipeResult, runRecipe } from './ci-recipe';
import { buildBaseImage, Container, describeWithDocker } from './docker';
import { packTarball, PackedTarball } from './package-tarball';

// Packing compiles the prebuild (about 30 s); an install with a compile about a minute on a loaded machine.
jest.setTimeout(10 * 60_000);

/** The published package's addon for linux-x64 glibc, as prebuildify names it. */
const PREBUILD = 'prebuilds/linux-x64/ipc-ckpt.glibc.node';
/** A fresh project that lets ipc-ckpt's install script run (npm 11 blocks dependency install scripts by default). */
const ALLOW_INSTALL_SCRIPT = 'npm init -y >/dev/null && npm pkg set allowScripts.ipc-ckpt=true --json';
const sources = JSON.parse(readFileSync(path.resolve(__dirname, '../../native/sources.json'), 'utf8')) as string[];

/**
 * A container of the base image running the msgq-tool workload (its 7 sample queues) in a private IPC namespace,
 * with the tarball at /pkg and the capabilities a restore needs inside it (SYS_ADMIN for unshare, setns and
 * msg_next_id, a writable /proc/sys). The workload's raised queue needs msgmnb above the default while it is made.
 */
function startConsumer(image: string, tarballDir: string): Container {
  return Container.start(
    ['--ipc=private', '--sysctl', 'kernel.msgmnb=65536', '--cap-add=SYS_ADMIN', '--cap-add=IPC_OWNER', '--security-opt=systempaths=unconfined',
      '-v', `${tarballDir}:/pkg:ro`, '-v', `${buildMsgqTool()}:/usr/local/bin/msgq-tool:ro`],
    image,
    ['/usr/local/bin/msgq-tool', 'workload'],
  );
}

/** `sh -c script` in the container's /app; the result, for the test to judge. */
function shell(container: Container, script: string): { status: number | null; stdout: string; stderr: string } {
  return container.exec('sh', '-c', `mkdir -p /app && cd /app && ${script}`);
}

function ok(result: { status: number | null; stdout: string; stderr: string }, what: string): string {
  if (result.status !== 0) throw new Error(`${what} exited ${result.status}:\n${result.stdout}\n${result.stderr}`);
  return result.stdout;
}

/**
 * From the installed package in /app: check, save of the workload's namespace, restore into a fresh namespace
 * (unshare --ipc inside the container), verify there, and the workload's own checker in that namespace.
 */
function roundTrip(container: Container): void {
  const check = JSON.parse(ok(shell(container, 'npx ipc-ckpt check --json'), 'check')) as { canSave: boolean; canRestore: boolean };
  expect(check).toMatchObject({ canSave: true, canRestore: true });

  const saved = JSON.parse(ok(shell(container, 'npx ipc-ckpt save -o /tmp/q.img --json'), 'save')) as { queues: number; messages: number };
  expect(saved.queues).toBe(7);

  const restoreAndVerify = ok(
    shell(container, "unshare --ipc sh -c 'npx ipc-ckpt restore -i /tmp/q.img --json >/tmp/restore.json && npx ipc-ckpt verify -i /tmp/q.img --json && msgq-tool check'"),
    'restore, verify and check in a fresh namespace',
  );
  const restored = JSON.parse(ok(container.exec('cat', '/tmp/restore.json'), 'cat')) as { queues: number; messages: number };
  expect(restored).toMatchObject({ queues: saved.queues, messages: saved.messages });
  // verify's document, then the checker's line.
  const documentEnd = restoreAndVerify.lastIndexOf('}') + 1;
  const [verifyDocument, checkerLine] = [restoreAndVerify.slice(0, documentEnd), restoreAndVerify.slice(documentEnd)];
  expect(JSON.parse(verifyDocument)).toMatchObject({ equal: true, queues: saved.queues, messages: saved.messages });
  expect(checkerLine.trim()).toBe('OK 7 queues');
}

/** Which addon file the installed package loads. */
function loadedAddon(container: Container): string {
  return ok(shell(container, "node -p \"require('ipc-ckpt/dist/lib/native').addonFile()\""), 'addonFile').trim();
}

describe('the npm pack tarball', () => {
  let tarball: PackedTarball;
  let workdir: string;

  beforeAll(() => {
    workdir = mkdtempSync(path.join(tmpdir(), 'ipc-ckpt-install-'));
    tarball = packTarball(workdir);
  }, 5 * 60_000);
  afterAll(() => {
    if (workdir) rmSync(workdir, { recursive: true, force: true });
  });

  it('holds the prebuild and the rollback guardian program beside it, the compiled JavaScript with types, every native source of native/sources.json and the build files; no tests, no TypeScript sources, no source maps', () => {
    const files = tarball.files.map((f) => f.path);
    expect(files).toEqual(expect.arrayContaining([PREBUILD, path.posix.join(path.posix.dirname(PREBUILD), 'ipc-ckpt-guardian'), 'bin/ipc-ckpt.js', 'dist/lib/index.js', 'dist/lib/index.d.ts', 'dist/lib/cli.js', 'dist/lib/cli-launch.js', 'dist/lib/cli.bundle.js',
      'binding.gyp', 'CMakeLists.txt', 'native/sources.json', ...sources, 'docs/JSON.md', 'docs/schema/ipc-ckpt.schema.json', 'scripts/ci-recipe.sh', 'package.json', 'README.md']));
    expect(files.filter((f) => /^(test|lib|build)\/|^scripts\/(?!ci-recipe\.sh$)|\.map$|\.ts$|\.v8cache$/.test(f) && !f.endsWith('.d.ts'))).toEqual([]);
    // A published package of a few hundred kB: the prebuild (about 250 kB unstripped) is most of it.
    process.stderr.write(`npm pack: ${tarball.files.length} files, ${tarball.size} bytes packed, ${tarball.unpackedSize} unpacked\n`);
    expect(tarball.size).toBeLessThan(1 << 20);
  });

  describeWithDocker('installed in a container', () => {
    const containers: Container[] = [];
    afterAll(() => {
      for (const container of containers) container.remove();
    });
    const tgz = () => `/pkg/${path.basename(tarball.file)}`;

    it('without a C/C++ compiler or make: the install compiles nothing, loads the prebuild, and check and a save/restore/verify round trip work', () => {
      const consumer = startConsumer(buildBaseImage('no-toolchain'), workdir);
      containers.push(consumer);
      // The machine really lacks the toolchain (python3 may stay: it is not a compiler).
      expect(shell(consumer, 'command -v cc gcc g++ c++ clang make || true').stdout.trim()).toBe('');
      // allowScripts: run the package's install script, as npm 10 (Node 20's own) always does; it must find the prebuild loadable.
      ok(shell(consumer, `${ALLOW_INSTALL_SCRIPT} && npm install --no-audit --no-fund ${tgz()}`), 'npm install');
      expect(shell(consumer, 'ls node_modules/ipc-ckpt/build 2>&1').status).not.toBe(0);
      expect(loadedAddon(consumer)).toBe(`/app/node_modules/ipc-ckpt/${PREBUILD}`);
      roundTrip(consumer);
    });

    it('with the toolchain, npm install --build-from-source compiles the addon from the packaged sources and loads that one', () => {
      const consumer = startConsumer(buildBaseImage('toolchain'), workdir);
      containers.push(consumer);
      // node's own headers (PREFIX/include/node) instead of a download from nodejs.org, which is out of reach here.
      ok(shell(consumer, `${ALLOW_INSTALL_SCRIPT} && npm_config_nodedir=/usr npm install --no-audit --no-fund --build-from-source ${tgz()}`), 'npm install --build-from-source');
      expect(loadedAddon(consumer)).toBe('/app/node_modules/ipc-ckpt/build/Release/ipc_ckpt.node');
      roundTrip(consumer);
    });

    it("on the host, the CI job of docs/CONTAINERS.md as written: the installed package's scripts/ci-recipe.sh with npx ipc-ckpt", () => {
      const project = path.join(workdir, 'ci-job');
      mkdirSync(project);
      execFileSync('sh', ['-c', `${ALLOW_INSTALL_SCRIPT} && npm install --no-audit --no-fund ${tarball.file}`], { cwd: project, stdio: ['ignore', 'ignore', 'pipe'] });
      const out = path.join(project, 'ipc-ckpt-results');
      // IPC_CKPT unset: the recipe's default, `npx ipc-ckpt`, which finds the installed package.
      const run = runRecipe({ script: 'node_modules/ipc-ckpt/scripts/ci-recipe.sh', cwd: project, env: { IPC_CKPT: undefined, IPC_CKPT_ADDON: undefined, OUT: out } });
      if (run.status !== 0) throw new Error(`ci-recipe.sh exited ${run.status}:\n${run.stdout}\n${run.stderr}`);
      expect(run.stdout).toMatch(/^OK 7 queues$/m);
      const saved = recipeResult(out, 'save', 'save');
      expect(saved.queues).toBe(7);
      expect(recipeResult(out, 'restore', 'restore')).toMatchObject({ queues: saved.queues, messages: saved.messages });
      expect(recipeResult(out, 'verify', 'verify')).toMatchObject({ equal: true, queues: saved.queues, messages: saved.messages });
      expect(recipeLeftovers()).toBe('');
    });
  });
});
