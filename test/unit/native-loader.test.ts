// Which addon file the loader picks in an installed package: a local compile, else the prebuild that fits, else a clear error.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { ADDON_PATH_ENV, addonFile } from '../../lib/native';

describe('the addon loader (lib/native.ts addonFile)', () => {
  let root: string;
  const savedOverride = process.env[ADDON_PATH_ENV];

  /** An empty file at root/relative (the loader only looks at names; nothing is loaded). */
  function touch(relative: string): string {
    const file = path.join(root, relative);
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, '');
    return file;
  }

  beforeEach(() => {
    root = mkdtempSync(path.join(tmpdir(), 'ipc-ckpt-loader-'));
    writeFileSync(path.join(root, 'package.json'), JSON.stringify({ name: 'ipc-ckpt' }));
    delete process.env[ADDON_PATH_ENV];
  });
  afterEach(() => {
    rmSync(root, { recursive: true, force: true });
    if (savedOverride === undefined) delete process.env[ADDON_PATH_ENV];
    else process.env[ADDON_PATH_ENV] = savedOverride;
  });

  it('takes the linux-x64 glibc prebuild of a published package (no build/ directory)', () => {
    const prebuild = touch('prebuilds/linux-x64/ipc-ckpt.glibc.node');
    expect(addonFile(root)).toBe(prebuild);
  });

  it('prefers a local compile (npm install --build-from-source) over the prebuild', () => {
    touch('prebuilds/linux-x64/ipc-ckpt.glibc.node');
    const compiled = touch('build/Release/ipc_ckpt.node');
    expect(addonFile(root)).toBe(compiled);
  });

  it('takes IPC_CKPT_ADDON over both', () => {
    touch('prebuilds/linux-x64/ipc-ckpt.glibc.node');
    touch('build/Release/ipc_ckpt.node');
    process.env[ADDON_PATH_ENV] = 'build-cmake/Release/ipc_ckpt.node';
    expect(addonFile(root)).toBe(path.resolve('build-cmake/Release/ipc_ckpt.node'));
  });

  it('refuses a prebuild of another libc or arch with E_ADDON, saying how to build from source', () => {
    touch('prebuilds/linux-x64/ipc-ckpt.musl.node');
    touch('prebuilds/linux-arm64/ipc-ckpt.glibc.node');
    expect(() => addonFile(root)).toThrow(expect.objectContaining({ code: 'E_ADDON', message: expect.stringContaining('--build-from-source') }));
  });
});
