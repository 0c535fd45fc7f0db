// How bin/ipc-ckpt.js starts the CLI: from one bundled file (dist/lib/cli.bundle.js, made by
// scripts/bundle-cli.js after tsc) compiled with V8's code cache of the command, so a run neither
// resolves two dozen modules nor compiles the functions the previous run of that command compiled
// (an empty save: 79 -> 69 ms here, `node -e 0` 52 ms). Node 20 has no module compile cache of its
// own (module.enableCompileCache is Node 22). Without the bundle (a plain tsc build) the modules load as usual.
import { createHash } from 'node:crypto';
import { readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { Script } from 'node:vm';

/** The bundle scripts/bundle-cli.js writes beside this file. */
export const CLI_BUNDLE = path.join(__dirname, 'cli.bundle.js');
/** off: no cache; a directory: the caches go there (a read-only install); unset: beside the bundle. */
const CODE_CACHE_ENV = 'IPC_CKPT_CODE_CACHE';
const CACHE_FORMAT = 'ipc-ckpt-code-cache 1';

interface CliModule {
  main(argv: string[]): Promise<number>;
}

export interface LoadedCli {
  cli: CliModule;
  /** Writes the cache of what this run compiled, unless V8 took this run's code from a valid one; never throws. */
  saveCache(): void;
}

/**
 * One cache per command: a save's run compiles save's functions, a restore's restore's. Only a plain
 * command word names one; help and version runs write none (they would leave a cache of the help text).
 */
export function cacheKeyOf(argv: readonly string[]): string | undefined {
  const [command] = argv;
  if (command === undefined || !/^[a-z]{1,16}$/.test(command)) return undefined;
  if (argv.some((arg) => arg === '-h' || arg === '--help' || arg === '-V' || arg === '--version')) return undefined;
  return command;
}

function cacheFileOf(key: string, environment: NodeJS.ProcessEnv): string | undefined {
  const setting = environment[CODE_CACHE_ENV];
  if (setting === 'off') return undefined;
  const directory = setting === undefined || setting === '' ? path.dirname(CLI_BUNDLE) : path.resolve(setting);
  return path.join(directory, `${path.basename(CLI_BUNDLE, '.js')}.${key}.v8cache`);
}

const sha256 = (data: string | Buffer) => createHash('sha256').update(data).digest('hex');

/**
 * The cache's first line: what it was made for, and the digest of the V8 data after it. V8 itself
 * checks its version, its flags and the source's length, but not the data (no checksum in release builds).
 */
function headerOf(bundleDigest: string, data: Buffer): string {
  return `${CACHE_FORMAT} ${bundleDigest} ${sha256(data)} node-${process.version} ${process.arch}\n`;
}

/** The V8 data of the cache file; undefined when there is none, or it was made for something else, or is damaged. */
function readCache(file: string, bundleDigest: string): Buffer | undefined {
  let contents: Buffer;
  try {
    contents = readFileSync(file);
  } catch {
    return undefined;
  }
  const newline = contents.indexOf(10);
  const data = contents.subarray(newline + 1);
  return newline >= 0 && contents.toString('latin1', 0, newline + 1) === headerOf(bundleDigest, data) ? data : undefined;
}

/** Loads the CLI from the bundle with the cache for argv's command; undefined when there is no bundle. */
export function loadCli(argv: readonly string[], environment: NodeJS.ProcessEnv = process.env): LoadedCli | undefined {
  let source: string;
  try {
    source = readFileSync(CLI_BUNDLE, 'utf8');
  } catch {
    return undefined;
  }
  const key = cacheKeyOf(argv);
  const file = key === undefined ? undefined : cacheFileOf(key, environment);
  const bundleDigest = file === undefined ? '' : sha256(source);
  const cached = file === undefined ? undefined : readCache(file, bundleDigest);
  // The same wrapper Node gives a CommonJS module, so the bundle runs as dist/lib/cli.bundle.js would.
  const script = new Script(`(function (exports, require, module, __filename, __dirname) {${source}\n})`, { filename: CLI_BUNDLE, cachedData: cached });
  const run = script.runInThisContext() as (exports: object, require: NodeJS.Require, module: { exports: object }, filename: string, dirname: string) => void;
  const module = { exports: {} };
  run.call(module.exports, module.exports, createRequire(CLI_BUNDLE), module, CLI_BUNDLE, path.dirname(CLI_BUNDLE));
  const cacheAccepted = cached !== undefined && script.cachedDataRejected !== true;
  return {
    cli: module.exports as CliModule,
    saveCache() {
      if (file === undefined || cacheAccepted) return;
      // Beside it, then renamed: a run reading it meanwhile sees the old cache or the new one, whole.
      const temporary = `${file}.${process.pid}.tmp`;
      try {
        const data = script.createCachedData();
        writeFileSync(temporary, Buffer.concat([Buffer.from(headerOf(bundleDigest, data), 'latin1'), data]), { mode: 0o644 });
        renameSync(temporary, file);
      } catch {
        // A read-only install or a full disk: the next run compiles again, nothing else changes.
        try {
          unlinkSync(temporary);
        } catch {
          // it was never created
        }
      }
    },
  };
}

/** bin/ipc-ckpt.js: runs the command line; a successful run leaves the code cache of its command. */
export async function runCli(argv: string[]): Promise<number> {
  const loaded = loadCli(argv);
  if (loaded === undefined) return (await import('./cli')).main(argv);
  const code = await loaded.cli.main(argv);
  if (code === 0) loaded.saveCache();
  return code;
}
