// lib/cli-args.ts with lib/cli.ts's table: every option of every command parses into what its
// action reads, bad command lines are usage errors that say what is wrong, and --help shows the table.
import { commandHelp, parseCommandLine, programHelp } from '../../lib/cli-args';
import { PROGRAM } from '../../lib/cli';
import { IpcCkptError } from '../../lib/errors';
import { PACKAGE_VERSION } from '../../lib/package-info';
import { runCli } from '../support/cli';

function parsed(argv: string[]) {
  const result = parseCommandLine(PROGRAM, argv);
  if (result.kind !== 'command') throw new Error(`expected a command, got text: ${result.text}`);
  return result;
}

function usageError(argv: string[]): string {
  try {
    parseCommandLine(PROGRAM, argv);
  } catch (error) {
    expect(error).toBeInstanceOf(IpcCkptError);
    expect((error as IpcCkptError).code).toBe('E_USAGE');
    return (error as IpcCkptError).message;
  }
  throw new Error(`${argv.join(' ')} parsed without an error`);
}

const camel = (long: string) => long.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());

describe('every option of every command', () => {
  const cases = PROGRAM.commands.flatMap((command) => command.options.map((option) => [command.name, option.flags, command, option] as const));

  test.each(cases)('%s %s sets what its action reads', (_name, flags, command, option) => {
    const long = /--([a-z0-9-]+)/.exec(flags)![1];
    const short = /^-([a-zA-Z]),/.exec(flags)?.[1];
    const takesValue = flags.endsWith('>');
    const required = command.options.filter((o) => o.required && o !== option).flatMap((o) => [/--[a-z0-9-]+/.exec(o.flags)![0], 'required-value']);
    for (const spelling of [`--${long}`, ...(short ? [`-${short}`] : [])]) {
      const result = parsed([command.name, ...required, spelling, ...(takesValue ? ['the-value'] : [])]);
      const property = long.startsWith('no-') ? camel(long.slice(3)) : camel(long);
      expect(result.flags[property]).toBe(takesValue ? 'the-value' : !long.startsWith('no-'));
    }
  });
});

test('defaults: save writes to stdout, restore and inspect read stdin; nothing else is set', () => {
  expect(parsed(['save']).flags).toEqual({ output: '-' });
  expect(parsed(['restore']).flags).toEqual({ input: '-' });
  expect(parsed(['inspect'])).toMatchObject({ flags: {}, argument: '-' });
  expect(parsed(['inspect', 'q.img', '--json'])).toMatchObject({ flags: { json: true }, argument: 'q.img' });
  expect(parsed(['save', '--ns=/proc/1/ns/ipc', '-o', '-']).flags).toEqual({ ns: '/proc/1/ns/ipc', output: '-' });
});

test.each([
  [['save', '--bogus'], /^Unknown option '--bogus' \(run 'ipc-ckpt save --help' for usage\)$/],
  [['save', '-o'], /^Option '-o, --output <value>' argument missing/],
  [['save', 'extra'], /^Unexpected argument 'extra'/],
  [['save', '--ns', '/proc/1/ns/ipc', '-t', '1'], /^--ns cannot be used with --pid/],
  [['restore', '--sysv-only', '--posix-only'], /^--sysv-only cannot be used with --posix-only/],
  [['save', '--wait', '3', '--no-wait'], /^--no-wait cannot be used with --wait/],
  [['verify'], /^-i, --input <file> is required/],
  [['inspect', 'a.img', 'b.img'], /^too many arguments: inspect takes at most one file/],
  [['frobnicate'], /^unknown command 'frobnicate' \(run 'ipc-ckpt --help' for usage\)$/],
  [['--bogus'], /^unknown option '--bogus': give a command first/],
  [['help', 'frobnicate'], /^unknown command 'frobnicate'/],
])('%j is a usage error', (argv, message) => {
  expect(usageError(argv)).toMatch(message);
});

test('--help shows every option of the table with its description and default, and help COMMAND is the same', () => {
  for (const command of PROGRAM.commands) {
    const text = commandHelp(PROGRAM, command);
    expect(text).toMatch(new RegExp(`^Usage: ipc-ckpt ${command.name} \\[options\\]`));
    for (const option of command.options) {
      const line = text.split('\n').find((l) => l.trimStart().startsWith(`${option.flags} `));
      expect(line).toBeDefined();
      expect(line).toContain(option.description);
      if (option.default !== undefined) expect(line).toContain(`(default: "${option.default}")`);
    }
    for (const line of command.after ?? []) expect(text).toContain(line);
    expect(parseCommandLine(PROGRAM, [command.name, '--help'])).toEqual({ kind: 'text', text });
    expect(parseCommandLine(PROGRAM, ['help', command.name])).toEqual({ kind: 'text', text });
  }
  const text = programHelp(PROGRAM);
  for (const command of PROGRAM.commands) expect(text).toMatch(new RegExp(`^  ${command.name} \\[options\\].*  ${command.description.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`, 'm'));
  expect(parseCommandLine(PROGRAM, [])).toEqual({ kind: 'text', text });
  expect(parseCommandLine(PROGRAM, ['--version'])).toEqual({ kind: 'text', text: `${PACKAGE_VERSION}\n` });
});

test('through the process: help and version on stdout with exit 0, a usage error on stderr with exit 2', () => {
  const help = runCli(['restore', '--help']);
  expect(help.status).toBe(0);
  expect(help.stdout).toMatch(/^Usage: ipc-ckpt restore \[options\]/);
  const version = runCli(['-V']);
  expect(version.status).toBe(0);
  expect(version.stdout).toBe(`${PACKAGE_VERSION}\n`);
  const bad = runCli(['verify', '--ns', '/proc/1/ns/ipc']);
  expect(bad.status).toBe(2);
  expect(bad.stdout).toBe('');
  expect(bad.stderr).toBe("ipc-ckpt: -i, --input <file> is required (run 'ipc-ckpt verify --help' for usage)\n");
});
