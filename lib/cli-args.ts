// The command line's grammar: commands and their options in one table, parsed by node:util's
// parseArgs (already in every Node process: nothing to load), and the --help text made from the
// same table. lib/cli.ts holds the table and the actions.
import { parseArgs } from 'node:util';
import { IpcCkptError } from './errors';

export interface OptionSpec {
  /** '-o, --output <file>', '--dry-run', '--no-wait' (sets `wait` to false). */
  flags: string;
  description: string;
  /** The value when the option is not given (string options). */
  default?: string;
  /** The long name of an option that cannot be given with this one. */
  conflicts?: string;
  /** The command fails without it. */
  required?: boolean;
}

/** One optional positional argument, shown as [name]. */
export interface ArgumentSpec {
  name: string;
  description: string;
  default: string;
}

export interface CommandSpec {
  name: string;
  description: string;
  options: OptionSpec[];
  argument?: ArgumentSpec;
  /** Lines shown after the options in --help. */
  after?: string[];
}

/** C: the caller's command type (a CommandSpec with, say, its action), handed back by parseCommandLine. */
export interface ProgramSpec<C extends CommandSpec = CommandSpec> {
  name: string;
  description: string;
  version: string;
  commands: C[];
}

/** What a command line asks for: text to print (help, version), or a command to run. */
export type ParsedCommandLine<C extends CommandSpec = CommandSpec> =
  | { kind: 'text'; text: string }
  | { kind: 'command'; command: C; flags: Record<string, string | boolean>; argument: string | undefined };

interface ParsedFlags {
  short?: string;
  long: string;
  takesValue: boolean;
  /** The property it sets: camelCase of the long name, without a 'no-' prefix. */
  property: string;
  negated: boolean;
}

const HELP: OptionSpec = { flags: '-h, --help', description: 'display help for command' };
const VERSION: OptionSpec = { flags: '-V, --version', description: 'output the version number' };

function camelCase(name: string): string {
  return name.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

function parseFlags(flags: string): ParsedFlags {
  const match = /^(?:-([a-zA-Z]), )?--([a-z0-9-]+)(?: <[^>]+>)?$/.exec(flags);
  if (!match) throw new IpcCkptError('E_INTERNAL', `bad option spec '${flags}'`);
  const long = match[2];
  const negated = long.startsWith('no-');
  return { short: match[1], long, takesValue: flags.endsWith('>'), property: camelCase(negated ? long.slice(3) : long), negated };
}

function usageLine(program: ProgramSpec, command: CommandSpec): string {
  return `Usage: ${program.name} ${command.name} [options]${command.argument ? ` [${command.argument.name}]` : ''}`;
}

function usage(program: ProgramSpec, command: CommandSpec | undefined, problem: string): IpcCkptError {
  const help = command ? `${program.name} ${command.name} --help` : `${program.name} --help`;
  return new IpcCkptError('E_USAGE', `${problem} (run '${help}' for usage)`);
}

/** Two columns, the first padded to its widest entry. */
function columns(rows: Array<[string, string]>): string[] {
  const width = Math.max(...rows.map(([left]) => left.length));
  return rows.map(([left, right]) => `  ${left.padEnd(width)}  ${right}`.trimEnd());
}

function optionRow(option: OptionSpec): [string, string] {
  const extra = option.default !== undefined ? ` (default: ${JSON.stringify(option.default)})` : option.required ? ' (required)' : '';
  return [option.flags, `${option.description}${extra}`];
}

export function commandHelp(program: ProgramSpec, command: CommandSpec): string {
  const lines = [usageLine(program, command), '', command.description, ''];
  if (command.argument) {
    lines.push('Arguments:', ...columns([[command.argument.name, `${command.argument.description} (default: ${JSON.stringify(command.argument.default)})`]]), '');
  }
  lines.push('Options:', ...columns([...command.options, HELP].map(optionRow)));
  if (command.after) lines.push(...command.after);
  return `${lines.join('\n')}\n`;
}

export function programHelp(program: ProgramSpec): string {
  const commands: Array<[string, string]> = program.commands.map((c) => [`${c.name} [options]${c.argument ? ` [${c.argument.name}]` : ''}`, c.description]);
  commands.push(['help [command]', 'display help for command']);
  const lines = [`Usage: ${program.name} [options] [command]`, '', program.description, '', 'Options:', ...columns([VERSION, HELP].map(optionRow)), '', 'Commands:', ...columns(commands)];
  return `${lines.join('\n')}\n`;
}

function parseCommand<C extends CommandSpec>(program: ProgramSpec<C>, command: C, args: string[]): ParsedCommandLine<C> {
  const specs = [...command.options, HELP].map((option) => ({ option, flags: parseFlags(option.flags) }));
  const config: Record<string, { type: 'string' | 'boolean'; short?: string }> = {};
  for (const { flags } of specs) config[flags.long] = { type: flags.takesValue ? 'string' : 'boolean', ...(flags.short ? { short: flags.short } : {}) };
  let parsed;
  try {
    parsed = parseArgs({ args, options: config, strict: true, allowPositionals: command.argument !== undefined });
  } catch (error) {
    // parseArgs' own words: "Unknown option '--bogus'", "Option '-o, --output <value>' argument missing", ...
    throw usage(program, command, (error as Error).message.split('. ')[0]);
  }
  const { values, positionals } = parsed;
  if (values.help) return { kind: 'text', text: commandHelp(program, command) };
  if (positionals.length > 1) throw usage(program, command, `too many arguments: ${command.name} takes at most one ${command.argument?.name}`);
  const flags: Record<string, string | boolean> = {};
  for (const { option, flags: f } of specs) {
    if (f.long === 'help') continue;
    const value = values[f.long];
    if (value === undefined) {
      if (option.required) throw usage(program, command, `${option.flags} is required`);
      if (option.default !== undefined && flags[f.property] === undefined) flags[f.property] = option.default;
      continue;
    }
    if (option.conflicts !== undefined && values[option.conflicts] !== undefined) {
      throw usage(program, command, `--${f.long} cannot be used with --${option.conflicts}`);
    }
    if (f.negated) {
      const other = specs.find((s) => !s.flags.negated && s.flags.property === f.property);
      if (other && values[other.flags.long] !== undefined) throw usage(program, command, `--${f.long} cannot be used with --${other.flags.long}`);
      flags[f.property] = false;
    } else flags[f.property] = value;
  }
  return { kind: 'command', command, flags, argument: command.argument ? (positionals[0] ?? command.argument.default) : undefined };
}

/** The command line (without node and the script): help or version text, or a command with its flags. */
export function parseCommandLine<C extends CommandSpec>(program: ProgramSpec<C>, argv: string[]): ParsedCommandLine<C> {
  const [first, ...rest] = argv;
  if (first === undefined || first === '-h' || first === '--help') return { kind: 'text', text: programHelp(program) };
  if (first === '-V' || first === '--version') return { kind: 'text', text: `${program.version}\n` };
  if (first === 'help') {
    if (rest.length === 0) return { kind: 'text', text: programHelp(program) };
    const command = program.commands.find((c) => c.name === rest[0]);
    if (!command) throw usage(program, undefined, `unknown command '${rest[0]}'`);
    return { kind: 'text', text: commandHelp(program, command) };
  }
  if (first.startsWith('-')) throw usage(program, undefined, `unknown option '${first}': give a command first`);
  const command = program.commands.find((c) => c.name === first);
  if (!command) throw usage(program, undefined, `unknown command '${first}'`);
  return parseCommand(program, command, rest);
}
