// ipc-ckpt's command line as the container tests run it on the host: the built CLI, a real process.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as path from 'node:path';

const repositoryRoot = path.resolve(__dirname, '..', '..');
const cliEntry = path.join(repositoryRoot, 'bin', 'ipc-ckpt.js');

export interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `node bin/ipc-ckpt.js ...args` (needs the TypeScript build in dist/ and the addon in build/). */
export function runCli(...args: string[]): CliResult {
  if (!existsSync(path.join(repositoryRoot, 'dist', 'lib', 'cli.js'))) {
    throw new Error('dist/lib/cli.js is missing: run `npm run build` before the container tests');
  }
  const result = spawnSync(process.execPath, [cliEntry, ...args], { encoding: 'utf8', maxBuffer: 1 << 28 });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

/** runCli that must succeed; its error shows the exit status and stderr. */
export function cli(...args: string[]): string {
  const result = runCli(...args);
  if (result.status !== 0) {
    throw new Error(`ipc-ckpt ${args.join(' ')} exited ${result.status}: ${result.stderr.trim()}`);
  }
  return result.stdout;
}

/** Names of header fields that legitimately differ between two saves of the same namespace. */
const PER_SAVE_FIELDS = new Set(['time', 'digest']);

/** Drops per-save fields (the save time, and digests that cover it) wherever they appear. */
function withoutPerSaveFields(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(withoutPerSaveFields);
  if (value === null || typeof value !== 'object') return value;
  return Object.fromEntries(
    Object.entries(value as Record<string, unknown>)
      .filter(([key]) => !PER_SAVE_FIELDS.has(key))
      .map(([key, field]) => [key, withoutPerSaveFields(field)]),
  );
}

/** `inspect --json --messages` of an image file, parsed, without the fields that differ per save. */
export function inspectWithoutSaveTime(imageFile: string): unknown {
  return withoutPerSaveFields(JSON.parse(cli('inspect', imageFile, '--json', '--messages')));
}
