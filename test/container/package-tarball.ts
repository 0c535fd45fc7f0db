// `npm pack` of this tree as a release makes it (prepack: prebuildify; prepare: tsc and the CLI bundle), in a staging copy so the
// tree's own build/ and dist/ are left alone while other tests load them.
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

const repositoryRoot = path.resolve(__dirname, '..', '..');

/** What the build reads besides the package's "files" sources (the outputs dist/ and prebuilds/ are made fresh). */
const BUILD_INPUTS = ['package.json', 'package-lock.json', 'README.md', 'lib', 'tsconfig.json', 'tsconfig.build.json', 'scripts/prebuild-guardian.js', 'scripts/bundle-cli.js'];

export interface PackedFile {
  path: string;
  size: number;
}

export interface PackedTarball {
  /** The .tgz file. */
  file: string;
  /** Compressed and unpacked bytes, as npm reports them. */
  size: number;
  unpackedSize: number;
  files: PackedFile[];
}

/** Packs the tree into destination (a directory) and returns what npm says the tarball holds. */
export function packTarball(destination: string): PackedTarball {
  const manifest = JSON.parse(readFileSync(path.join(repositoryRoot, 'package.json'), 'utf8')) as { files: string[] };
  const sources = manifest.files.filter((entry) => !entry.startsWith('!') && !/^(dist|prebuilds)\//.test(entry));
  const staging = mkdtempSync(path.join(tmpdir(), 'ipc-ckpt-pack-'));
  try {
    for (const entry of [...BUILD_INPUTS, ...sources]) {
      mkdirSync(path.dirname(path.join(staging, entry)), { recursive: true });
      cpSync(path.join(repositoryRoot, entry), path.join(staging, entry), { recursive: true });
    }
    symlinkSync(path.join(repositoryRoot, 'node_modules'), path.join(staging, 'node_modules'));
    const output = execFileSync('npm', ['pack', '--json', '--pack-destination', destination], {
      cwd: staging,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      maxBuffer: 1 << 26,
    });
    // Lifecycle scripts print to stdout too; npm's JSON report is the last thing printed.
    const [report] = JSON.parse(output.slice(output.lastIndexOf('\n[\n') + 1)) as Array<{ filename: string; size: number; unpackedSize: number; files: PackedFile[] }>;
    return { file: path.join(destination, report.filename), size: report.size, unpackedSize: report.unpackedSize, files: report.files };
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
}
