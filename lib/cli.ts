// The ipc-ckpt command line. Exit codes: 0 success, 1 failure, 2 usage error. Images go to
// stdout only when asked (-o -); progress, summaries and errors go to stderr.
import { constants as osConstants } from 'node:os';
import type { SingleBar } from 'cli-progress';
import { CommandSpec, OptionSpec, parseCommandLine, ProgramSpec } from './cli-args';
import { IpcCkptError } from './errors';
import { PACKAGE_VERSION } from './package-info';
import type { RestoreSummary } from './restore';
import type { Target } from './target';

// Each command loads only the modules it runs (`await import` is a require here): a save never
// compiles restore, inspect, verify or check, and cli-progress loads only for a bar on a terminal.

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

/** Show a progress bar only for work this large, and only on a terminal. */
const PROGRESS_MIN_MESSAGES = 20000;

interface SelectionFlags {
  sysvOnly?: boolean;
  posixOnly?: boolean;
}

interface TargetFlags {
  ns?: string;
  pid?: string;
}

function targetOf(flags: TargetFlags): Target {
  if (flags.pid !== undefined && !/^\d+$/.test(flags.pid)) throw new IpcCkptError('E_USAGE', `-t/--pid takes a process id, not '${flags.pid}'`);
  return { ns: flags.ns, pid: flags.pid === undefined ? undefined : Number(flags.pid) };
}

interface LockFlags {
  /** A number of seconds, or false for --no-wait. */
  wait?: string | false;
}

/** The signals that end a run in order (rolled back, exit 128 + the signal's number). */
const ENDING_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
type EndingSignal = (typeof ENDING_SIGNALS)[number];

/** Aborted by the first SIGINT/SIGTERM/SIGHUP of this process; the run rolls back and ends. */
const interruption = { controller: new AbortController(), received: undefined as EndingSignal | undefined };

/** What save/restore/verify need of the command line to wait for the namespace lock and stop on a signal. */
function runControl(flags: LockFlags) {
  let waitSeconds = Infinity;
  if (flags.wait === false) waitSeconds = 0;
  else if (flags.wait !== undefined) {
    if (!/^\d+(\.\d+)?$/.test(flags.wait)) throw new IpcCkptError('E_USAGE', `--wait takes a number of seconds, not '${flags.wait}'`);
    waitSeconds = Number(flags.wait);
  }
  return {
    waitSeconds,
    onLockWait: (text: string) => process.stderr.write(`ipc-ckpt: ${text}\n`),
    signal: interruption.controller.signal,
  };
}

const LOCK_OPTIONS: OptionSpec[] = [
  { flags: '--wait <seconds>', description: 'wait at most this long for another ipc-ckpt run on the same namespace (default: as long as it takes)' },
  { flags: '--no-wait', description: 'fail at once when another ipc-ckpt run holds the namespace (E_LOCKED)' },
];
const LOCK_HELP = ['SIGINT, SIGTERM and SIGHUP end the run rolled back (exit 130, 143, 129); after a SIGKILL the rollback guardian does it.'];

const TARGET_OPTIONS: OptionSpec[] = [
  { flags: '--ns <path>', description: 'the IPC namespace file: /proc/PID/ns/ipc or a bind mount of one', conflicts: 'pid' },
  { flags: '-t, --pid <pid>', description: 'the IPC namespace of this process' },
];
const TARGET_HELP = ['', "Without --ns or --pid the target is the caller's own IPC namespace."];

/** --sysv-only / --posix-only, the target and the lock: what save, restore and verify all take after their own options. */
function namespaceRunOptions(verb: string): OptionSpec[] {
  return [
    { flags: '--sysv-only', description: `${verb} only the SysV message queues`, conflicts: 'posix-only' },
    { flags: '--posix-only', description: `${verb} only the POSIX message queues (mq_open, /dev/mqueue)` },
    ...TARGET_OPTIONS,
    ...LOCK_OPTIONS,
  ];
}
const NAMESPACE_RUN_HELP = [...TARGET_HELP, ...LOCK_HELP];

function humanBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

/** The stream that carries a --json document (stdout, or stderr for `save -o -`), once an action has chosen it. */
let jsonStream: NodeJS.WritableStream | undefined;

/** Writes one --json document (docs/JSON.md): JSON.stringify, indented, one trailing newline. */
function writeJson(stream: NodeJS.WritableStream, document: unknown): void {
  stream.write(`${JSON.stringify(document, null, 2)}\n`);
}

/** The error document of a failed --json command (docs/schema/error.schema.json). */
function errorDocument(error: unknown): { error: { code: string; message: string; errno?: number; syscall?: string; offset?: number } } {
  if (!(error instanceof IpcCkptError)) return { error: { code: 'E_INTERNAL', message: error instanceof Error ? error.message : String(error) } };
  const { code, message, errno, syscall, offset } = error;
  return { error: { code, message, ...(errno === undefined ? {} : { errno }), ...(syscall === undefined ? {} : { syscall }), ...(offset === undefined ? {} : { offset }) } };
}

type ProgressCallback = (p: { messagesDone: number; messagesTotal: number }) => void;

/** A progress bar on stderr for large work on a terminal; nothing otherwise. */
function progressBar(label: string, quiet: boolean): { onProgress: ProgressCallback; stop: () => void } {
  if (quiet || !process.stderr.isTTY) return { onProgress: () => undefined, stop: () => undefined };
  let bar: SingleBar | undefined;
  return {
    onProgress: (p) => {
      if (!bar && p.messagesTotal >= PROGRESS_MIN_MESSAGES) {
        // eslint-disable-next-line @typescript-eslint/no-require-imports
        const { SingleBar, Presets } = require('cli-progress') as typeof import('cli-progress');
        bar = new SingleBar({ stream: process.stderr, format: `${label} [{bar}] {percentage}% {value}/{total} messages, eta {eta}s`, hideCursor: true }, Presets.shades_classic);
        bar.start(p.messagesTotal, 0);
      }
      bar?.update(p.messagesDone);
    },
    stop: () => bar?.stop(),
  };
}

function printPlan(summary: RestoreSummary): void {
  const { plan } = summary;
  const lines = [`plan for ${plan.target}${summary.dryRun ? ' (dry run: nothing is changed)' : ''}:`];
  for (const change of plan.during) lines.push(`  raise ${change.name} ${change.from} -> ${change.to} for the duration`);
  for (const q of plan.queues) {
    const { host } = q;
    const hostIds = host.uid !== q.uid || host.gid !== q.gid || host.cuid !== q.cuid || host.cgid !== q.cgid ? ` (host ids ${host.uid}:${host.gid} creator ${host.cuid}:${host.cgid})` : '';
    lines.push(`  create queue id ${q.id} key 0x${q.key.toString(16).padStart(8, '0')} mode 0${q.mode.toString(8).padStart(3, '0')} owner ${q.uid}:${q.gid} creator ${q.cuid}:${q.cgid}${hostIds} qbytes ${q.qbytes}, send ${q.messages} message(s) (${humanBytes(q.messageBytes)})`);
  }
  for (const change of plan.posix?.during ?? []) lines.push(`  raise ${change.name} ${change.from} -> ${change.to} for the duration`);
  for (const q of plan.posix?.queues ?? []) {
    const hostIds = q.host.uid !== q.uid || q.host.gid !== q.gid ? ` (host ids ${q.host.uid}:${q.host.gid})` : '';
    lines.push(`  create POSIX queue '/${q.name}' mode 0${q.mode.toString(8).padStart(3, '0')} owner ${q.uid}:${q.gid}${hostIds} maxmsg ${q.maxmsg} msgsize ${q.msgsize}, send ${q.curmsgs} message(s) (${humanBytes(q.qsize)})`);
  }
  for (const change of plan.final) lines.push(`  set ${change.name} ${change.from} -> ${change.to}`);
  for (const change of plan.posix?.final ?? []) lines.push(`  set ${change.name} ${change.from} -> ${change.to}`);
  if (plan.queues.length === 0 && !plan.posix?.queues.length) lines.push('  (the image holds no queue)');
  process.stderr.write(`${lines.join('\n')}\n`);
}

/** The command line's process is its own: it keeps freed heap for reuse (lib/heap-policy.ts). */
async function keepFreedHeap(): Promise<void> {
  (await import('./heap-policy')).keepFreedHeap();
}

type SaveFlags = TargetFlags & LockFlags & SelectionFlags & { output: string; freeze?: boolean; quiescent?: boolean; strictV16?: boolean; quiet?: boolean; json?: boolean };
type RestoreFlags = TargetFlags & LockFlags & SelectionFlags & { input: string; dryRun?: boolean; keepLimits?: boolean; strictV16?: boolean; quiet?: boolean; json?: boolean };
type InspectFlags = { json?: boolean; messages?: boolean };
type VerifyFlags = TargetFlags & LockFlags & SelectionFlags & { input: string; ignoreLimits?: boolean; ignoreOtherQueues?: boolean; quiescent?: boolean; json?: boolean };
type CheckFlags = TargetFlags & { json?: boolean };

async function saveCommand(flags: SaveFlags): Promise<void> {
  if (flags.output === '-' && process.stdout.isTTY) {
    throw new IpcCkptError('E_USAGE', 'refusing to write an image to a terminal: give -o FILE, or pipe or redirect stdout');
  }
  const { save } = await import('./save');
  if (flags.json) jsonStream = flags.output === '-' ? process.stderr : process.stdout;
  await keepFreedHeap();
  const bar = progressBar('save', (flags.quiet || flags.json) ?? false);
  try {
    const summary = await save(targetOf(flags), flags.output, { freeze: flags.freeze, quiescent: flags.quiescent, sysvOnly: flags.sysvOnly, posixOnly: flags.posixOnly, strictV16: flags.strictV16, onProgress: bar.onProgress, ...runControl(flags) });
    bar.stop();
    if (jsonStream) writeJson(jsonStream, summary);
    else if (!flags.quiet) {
      const where = flags.output === '-' ? 'stdout' : flags.output;
      const extra = [summary.retries ? `${summary.retries} re-copied after changes` : '', summary.secondWaits ? `waited ${summary.secondWaits} time(s) for the next second (queues had just changed)` : '', summary.msgmaxRaised ? 'msgmax raised for the copy and put back' : ''].filter(Boolean);
      const posix = summary.posixQueues ? ` and ${summary.posixQueues} POSIX queue(s) with ${summary.posixMessages} message(s)` : '';
      process.stderr.write(`saved ${summary.queues} queue(s), ${summary.messages} message(s)${posix}, ${humanBytes(summary.messageBytes)} of messages in ${summary.seconds.toFixed(2)} s to ${where} (${humanBytes(summary.imageBytes)})${extra.length ? `; ${extra.join('; ')}` : ''}\n`);
    }
  } finally {
    bar.stop();
  }
}

async function restoreCommand(flags: RestoreFlags): Promise<void> {
  if (flags.input === '-' && process.stdin.isTTY) throw new IpcCkptError('E_USAGE', 'no image on stdin (it is a terminal): give -i FILE or pipe one in');
  const { restore } = await import('./restore');
  if (flags.json) jsonStream = process.stdout;
  await keepFreedHeap();
  const bar = progressBar('restore', (flags.quiet || flags.json) ?? false);
  try {
    const summary = await restore(targetOf(flags), flags.input, { dryRun: flags.dryRun, keepLimits: flags.keepLimits, strictV16: flags.strictV16, sysvOnly: flags.sysvOnly, posixOnly: flags.posixOnly, onProgress: bar.onProgress, ...runControl(flags) });
    bar.stop();
    if (jsonStream) writeJson(jsonStream, summary);
    else if (flags.dryRun) printPlan(summary);
    else if (!flags.quiet) {
      process.stderr.write(
        `restored ${summary.queues} queue(s), ${summary.messages} message(s), ${humanBytes(summary.messageBytes)}${summary.posixQueues ? ` and ${summary.posixQueues} POSIX queue(s) with ${summary.posixMessages} message(s)` : ''} into ${summary.plan.target} in ${summary.seconds.toFixed(2)} s; ` +
          `not restorable from userspace, left to the kernel: ${summary.notRestored.join(', ')}\n`,
      );
    }
  } finally {
    bar.stop();
  }
}

async function inspectCommand(flags: InspectFlags, file: string): Promise<void> {
  if (file === '-' && process.stdin.isTTY) throw new IpcCkptError('E_USAGE', 'no image on stdin (it is a terminal): give a FILE or pipe one in');
  if (flags.json) jsonStream = process.stdout;
  const [{ openImageSource }, { formatInspectJson, formatInspectTable, inspect }] = await Promise.all([import('./image-input'), import('./inspect')]);
  const source = await openImageSource(file, { signal: interruption.controller.signal });
  try {
    const report = await inspect(source.read(), { messages: flags.messages });
    process.stdout.write(flags.json ? formatInspectJson(report) : formatInspectTable(report, { messages: flags.messages }));
  } finally {
    await source.close();
  }
}

async function verifyCommand(flags: VerifyFlags): Promise<void> {
  if (flags.json) jsonStream = process.stdout;
  const { verify } = await import('./verify');
  await keepFreedHeap();
  const result = await verify(targetOf(flags), flags.input, { ignoreLimits: flags.ignoreLimits, ignoreOtherQueues: flags.ignoreOtherQueues, quiescent: flags.quiescent, sysvOnly: flags.sysvOnly, posixOnly: flags.posixOnly, ...runControl(flags) });
  if (!result.equal) process.exitCode = EXIT_FAILURE;
  if (jsonStream) {
    writeJson(jsonStream, result);
    return;
  }
  const skipped = `not compared (not restorable from userspace): ${result.skippedFields.join(', ')}; ${result.idView}`;
  if (result.equal) {
    process.stdout.write(`equal: ${result.queues} queue(s), ${result.messages} message(s); ${skipped}\n`);
  } else {
    process.stdout.write(`different:\n  ${result.differences.join('\n  ')}\n${skipped}\n`);
  }
}

async function checkCommand(flags: CheckFlags): Promise<void> {
  const { check } = await import('./check');
  if (flags.json) jsonStream = process.stdout;
  const result = await check(targetOf(flags));
  if (jsonStream) writeJson(jsonStream, result);
  else {
    for (const f of result.findings) process.stdout.write(`${f.status.padEnd(4)} ${f.subject}: ${f.text}\n`);
    process.stdout.write(`save: ${result.canSave ? 'can work' : 'cannot work'}; restore: ${result.canRestore ? 'can work' : 'cannot work'}\n`);
  }
  if (!result.canSave || !result.canRestore) process.exitCode = EXIT_FAILURE;
}

type Command = CommandSpec & { action: (flags: never, argument: string) => Promise<void> };

/** Every command: its options (the --help text is made from them) and what it runs. */
const COMMANDS: Command[] = [
  {
    name: 'save',
    description: 'save every message queue of an IPC namespace into an image (SysV: non-destructive, MSG_COPY; POSIX: each message taken and put back, with --freeze or --quiescent)',
    options: [
      { flags: '-o, --output <file>', description: "the image file, written atomically; '-' writes to stdout (never a terminal); an existing device, FIFO or /dev/stdout is written to, never replaced", default: '-' },
      { flags: '--freeze', description: "freeze the target pid's cgroup during the save (cgroup v1 freezer or v2 cgroup.freeze), always thawed" },
      { flags: '--quiescent', description: 'assert that nothing sends or receives on the POSIX queues during the save (instead of --freeze): their messages are taken and put back' },
      { flags: '--strict-v16', description: 'pure v16 records: refuse message types beyond 2^31-1 instead of widening the record, write host ids without the id-mapping record, and refuse POSIX queues' },
      { flags: '-q, --quiet', description: 'no progress bar and no summary line' },
      { flags: '--json', description: 'the summary as one JSON document on stdout (on stderr with -o -, since stdout carries the image)' },
      ...namespaceRunOptions('save'),
    ],
    after: NAMESPACE_RUN_HELP,
    action: saveCommand,
  },
  {
    name: 'restore',
    description: 'recreate the queues of an image in an IPC namespace: same ids, keys, owners, modes, qbytes and messages; all or nothing',
    options: [
      { flags: '-i, --input <file>', description: "the image file; '-' reads stdin", default: '-' },
      { flags: '--dry-run', description: 'validate the image, print the plan, change nothing' },
      { flags: '--keep-limits', description: "keep the target's msgmax/msgmnb/msgmni instead of setting the image's" },
      { flags: '--strict-v16', description: 'refuse images that use the widened message record or the id-mapping record' },
      { flags: '-q, --quiet', description: 'no progress bar and no summary line' },
      { flags: '--json', description: 'the summary (with the plan) as one JSON document on stdout' },
      ...namespaceRunOptions('restore'),
    ],
    after: NAMESPACE_RUN_HELP,
    action: restoreCommand,
  },
  {
    name: 'inspect',
    description: 'show what an image holds (the integrity record is checked)',
    argument: { name: 'file', description: "the image file; '-' or nothing reads stdin", default: '-' },
    options: [
      { flags: '--json', description: 'one JSON document with every saved field' },
      { flags: '--messages', description: "add each message's type, size and body (base64 in JSON, a preview in the table)" },
    ],
    action: inspectCommand,
  },
  {
    name: 'verify',
    description: 'compare a live IPC namespace with an image: exit 0 when equal, 1 with the differences',
    options: [
      { flags: '-i, --input <file>', description: "the image file; '-' reads stdin", required: true },
      { flags: '--ignore-limits', description: 'do not compare msgmax/msgmnb/msgmni or the POSIX limits (after restore --keep-limits)' },
      { flags: '--ignore-other-queues', description: "compare only the image's queues: the namespace's other queues are not differences" },
      { flags: '--quiescent', description: 'assert that nothing uses the POSIX queues meanwhile: their messages are taken, compared and put back' },
      { flags: '--json', description: 'the result as one JSON document on stdout (exit 1 still means different)' },
      ...namespaceRunOptions('compare'),
    ],
    after: NAMESPACE_RUN_HELP,
    action: verifyCommand,
  },
  {
    name: 'check',
    description: 'say whether this kernel and these privileges can save and restore (exit 0 when both can)',
    options: [{ flags: '--json', description: 'the findings as JSON' }, ...TARGET_OPTIONS],
    after: TARGET_HELP,
    action: checkCommand,
  },
];

export const PROGRAM: ProgramSpec<Command> = {
  name: 'ipc-ckpt',
  description: 'Checkpoint and restore the SysV and POSIX message queues of a Linux IPC namespace (v16 image format).',
  version: PACKAGE_VERSION,
  commands: COMMANDS,
};

/** Runs the CLI; resolves to the exit code. */
export async function main(argv: string[]): Promise<number> {
  // A reader that goes away (`| head`) is not a crash: text output just stops; a save to it fails on its own.
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code !== 'EPIPE') throw error;
  });
  jsonStream = undefined;
  // A signal does not kill the run: it aborts it, and the run rolls back and ends in order.
  const onSignal = (name: EndingSignal) => {
    if (interruption.received) return;
    interruption.received = name;
    interruption.controller.abort(new IpcCkptError('E_INTERRUPTED', `interrupted by ${name}; everything this run changed was put back and its temporary files removed`));
  };
  for (const name of ENDING_SIGNALS) process.on(name, onSignal);
  try {
    const parsed = parseCommandLine(PROGRAM, argv);
    if (parsed.kind === 'text') {
      process.stdout.write(parsed.text);
      return EXIT_OK;
    }
    await parsed.command.action(parsed.flags as never, parsed.argument ?? '');
    return typeof process.exitCode === 'number' ? process.exitCode : EXIT_OK;
  } catch (error) {
    if (error instanceof IpcCkptError && error.code === 'E_INTERRUPTED' && interruption.received) {
      if (jsonStream) writeJson(jsonStream, errorDocument(error));
      if (jsonStream !== process.stderr) process.stderr.write(`ipc-ckpt: ${error.message}\n`);
      return 128 + osConstants.signals[interruption.received];
    }
    // With --json a failure is one error document on the JSON stream (and the text line too, unless that stream is stderr).
    if (jsonStream && !(error instanceof IpcCkptError && error.code === 'E_USAGE')) {
      writeJson(jsonStream, errorDocument(error));
      if (jsonStream === process.stderr) return EXIT_FAILURE;
    }
    if (error instanceof IpcCkptError) {
      process.stderr.write(`ipc-ckpt: ${error.message}${error.code.startsWith('E_') ? '' : ` [${error.code}]`}\n`);
      return error.code === 'E_USAGE' ? EXIT_USAGE : EXIT_FAILURE;
    }
    process.stderr.write(`ipc-ckpt: internal error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    return EXIT_FAILURE;
  }
}
