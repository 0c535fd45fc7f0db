// --json on every command: one document that parses, matches docs/schema/ipc-ckpt.schema.json, and carries the
// numbers of the text summary; a failure is one error document on the same stream, with the exit codes unchanged.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import Ajv2020 from 'ajv/dist/2020';
import { runCli, CliResult } from '../support/cli';
import { dumpNamespace, msgqTool } from '../support/msgq-tool';
import { TestNamespace } from '../support/namespace';
import { populateSample } from '../support/sample-namespace';
import type { CheckResult, InspectReport, RestorePlan, RestoreSummary, SaveSummary, VerifyResult } from '../../lib';

jest.setTimeout(60_000);

const schema = JSON.parse(readFileSync(path.resolve(__dirname, '../../docs/schema/ipc-ckpt.schema.json'), 'utf8')) as { $id: string };
const ajv = new Ajv2020({ allErrors: true });
ajv.addSchema(schema);

type DocumentKind = 'save' | 'restore' | 'verify' | 'check' | 'inspect' | 'error';

/** Parses text as exactly one JSON document and checks it against the documented schema of its kind. */
function documentOf(kind: DocumentKind, text: string): Record<string, unknown> {
  const document = JSON.parse(text) as Record<string, unknown>;
  const validate = ajv.getSchema(`${schema.$id}#/$defs/${kind}`);
  if (!validate) throw new Error(`the schema has no $defs/${kind}`);
  if (!validate(document)) throw new Error(`${kind} document does not match the schema: ${ajv.errorsText(validate.errors)}\n${text}`);
  return document;
}

function succeeded(result: CliResult): CliResult {
  if (result.status !== 0) throw new Error(`exited ${result.status}: ${result.stderr}`);
  return result;
}

/** "1.5 KiB" -> whether `bytes` prints as that (the text rounds to one decimal). */
function printsAs(bytes: number, text: string): boolean {
  const [value, unit] = text.split(' ');
  const scale = 1024 ** ['B', 'KiB', 'MiB', 'GiB', 'TiB'].indexOf(unit);
  return Math.abs(bytes / scale - Number(value)) <= 0.05;
}

let source: TestNamespace;
let workdir: string;
const fresh: TestNamespace[] = [];
async function freshNamespace(): Promise<TestNamespace> {
  const ns = await TestNamespace.create();
  fresh.push(ns);
  return ns;
}

beforeAll(async () => {
  source = await TestNamespace.create();
  populateSample(source.path);
  workdir = mkdtempSync(path.join(tmpdir(), 'ipc-ckpt-json-'));
});
afterAll(async () => {
  await Promise.all([source, ...fresh].map((ns) => ns.destroy()));
  rmSync(workdir, { recursive: true, force: true });
});

const image = () => path.join(workdir, 'sample.img');

/** Every field of a result type, checked by the compiler (npm run typecheck): a field added to the type must be added here. */
type FieldsOf<T> = Record<keyof T, true>;
const API_FIELDS: Record<Exclude<DocumentKind, 'error'>, Record<string, true>> = {
  save: { queues: true, messages: true, messageBytes: true, imageBytes: true, seconds: true, retries: true, secondWaits: true, msgmaxRaised: true, digest: true, posixQueues: true, posixMessages: true } satisfies FieldsOf<SaveSummary>,
  restore: { plan: true, dryRun: true, queues: true, messages: true, messageBytes: true, seconds: true, notRestored: true, posixQueues: true, posixMessages: true } satisfies FieldsOf<RestoreSummary>,
  verify: { equal: true, differences: true, queues: true, messages: true, skippedFields: true, idView: true } satisfies FieldsOf<VerifyResult>,
  check: { canSave: true, canRestore: true, findings: true } satisfies FieldsOf<CheckResult>,
  inspect: { format: true, kernel: true, arch: true, time: true, uflags: true, limits: true, ids: true, totals: true, queues: true, integrity: true, posix: true } satisfies FieldsOf<InspectReport>,
};
const PLAN_FIELDS: FieldsOf<RestorePlan> = { target: true, queues: true, during: true, final: true, conflicts: true, beyondLimits: true, posix: true };

test('the documented schema has exactly the fields of the API result types', () => {
  const defs = (schema as unknown as { $defs: Record<string, { properties: Record<string, { properties?: Record<string, unknown> }> }> }).$defs;
  for (const [kind, fields] of Object.entries(API_FIELDS)) expect([kind, Object.keys(defs[kind].properties).sort()]).toEqual([kind, Object.keys(fields).sort()]);
  expect(Object.keys(defs.restore.properties.plan.properties ?? {}).sort()).toEqual(Object.keys(PLAN_FIELDS).sort());
});

describe('result documents', () => {
  let saved: Record<string, unknown>;

  beforeAll(() => {
    saved = documentOf('save', succeeded(runCli(['save', '--ns', source.path, '-o', image(), '--json'])).stdout);
  });

  it('save -o FILE --json: the summary on stdout, with the text summary\'s numbers', () => {
    const text = succeeded(runCli(['save', '--ns', source.path, '-o', path.join(workdir, 'text.img')])).stderr;
    const match = /^saved (\d+) queue\(s\), (\d+) message\(s\), ([\d.]+ \w+) of messages in [\d.]+ s to .* \(([\d.]+ \w+)\)/.exec(text);
    expect(match).not.toBeNull();
    const [, queues, messages, messageBytes, imageBytes] = match as RegExpExecArray;
    expect(saved).toMatchObject({ queues: Number(queues), messages: Number(messages), msgmaxRaised: true, retries: 0 });
    expect(saved.queues).toBe(5);
    expect(printsAs(saved.messageBytes as number, messageBytes)).toBe(true);
    expect(printsAs(saved.imageBytes as number, imageBytes)).toBe(true);
    expect(saved.imageBytes).toBe(readFileSync(image()).length);
  });

  it('save -o - --json: the image on stdout, the one summary document on stderr', () => {
    const result = succeeded(runCli(['save', '--ns', source.path, '-o', '-', '--json']));
    const summary = documentOf('save', result.stderr);
    // The same namespace again: the same counts and image size (runCli decodes stdout as text, so its length is not the size).
    expect(summary).toMatchObject({ queues: saved.queues, messages: saved.messages, messageBytes: saved.messageBytes, imageBytes: saved.imageBytes });
    expect(result.stdout.length).toBeGreaterThan(0);
  });

  it('inspect --json: the report, whose totals are the save\'s', () => {
    const report = documentOf('inspect', succeeded(runCli(['inspect', image(), '--json', '--messages'])).stdout);
    expect(report.totals).toEqual({ queues: saved.queues, messages: saved.messages, messageBytes: saved.messageBytes });
    expect((report.integrity as { digest: string }).digest).toBe(saved.digest);
  });

  it('restore --dry-run --json: the plan, nothing changed', async () => {
    const target = await freshNamespace();
    const summary = documentOf('restore', succeeded(runCli(['restore', '--ns', target.path, '-i', image(), '--dry-run', '--json'])).stdout);
    const planned = (summary.plan as { queues: Array<{ messages: number; messageBytes: number }> }).queues;
    expect(summary).toMatchObject({ dryRun: true, queues: 0, messages: 0 });
    expect(planned).toHaveLength(saved.queues as number);
    expect(planned.reduce((sum, q) => sum + q.messages, 0)).toBe(saved.messages);
    expect(planned.reduce((sum, q) => sum + q.messageBytes, 0)).toBe(saved.messageBytes);
    expect(dumpNamespace(target.path).queues).toEqual([]);
  });

  it('restore --json and verify --json: the same numbers as their text summaries', async () => {
    const textTarget = await freshNamespace();
    const textRestore = succeeded(runCli(['restore', '--ns', textTarget.path, '-i', image()])).stderr;
    const textVerify = succeeded(runCli(['verify', '--ns', textTarget.path, '-i', image()])).stdout;

    const target = await freshNamespace();
    const restored = documentOf('restore', succeeded(runCli(['restore', '--ns', target.path, '-i', image(), '--json'])).stdout);
    const [, queues, messages, bytes] = /^restored (\d+) queue\(s\), (\d+) message\(s\), ([\d.]+ \w+) into /.exec(textRestore) as RegExpExecArray;
    expect(restored).toMatchObject({ dryRun: false, queues: Number(queues), messages: Number(messages), messageBytes: saved.messageBytes });
    expect(restored.queues).toBe(saved.queues);
    expect(printsAs(restored.messageBytes as number, bytes)).toBe(true);

    const verified = documentOf('verify', succeeded(runCli(['verify', '--ns', target.path, '-i', image(), '--json'])).stdout);
    const [, vQueues, vMessages] = /^equal: (\d+) queue\(s\), (\d+) message\(s\)/.exec(textVerify) as RegExpExecArray;
    expect(verified).toMatchObject({ equal: true, differences: [], queues: Number(vQueues), messages: Number(vMessages) });
    expect(verified.messages).toBe(saved.messages);
  });

  it('verify --json of a namespace that differs: exit 1, equal false and the differences', async () => {
    const target = await freshNamespace();
    succeeded(runCli(['restore', '--ns', target.path, '-i', image(), '-q']));
    const id = dumpNamespace(target.path).queues[0].id;
    msgqTool(target.path, 'send', id, 1, 3, 1);
    const result = runCli(['verify', '--ns', target.path, '-i', image(), '--json']);
    expect(result.status).toBe(1);
    const verified = documentOf('verify', result.stdout);
    expect(verified.equal).toBe(false);
    expect((verified.differences as string[]).length).toBeGreaterThan(0);
  });

  it('check --json: the findings', () => {
    const result = documentOf('check', succeeded(runCli(['check', '--ns', source.path, '--json'])).stdout);
    expect(result).toMatchObject({ canSave: true, canRestore: true });
  });
});

describe('failures with --json', () => {
  it('restore into a namespace that holds the ids: exit 1, an error document on stdout, the text line on stderr', async () => {
    const result = runCli(['restore', '--ns', source.path, '-i', image(), '--json']);
    expect(result.status).toBe(1);
    expect(documentOf('error', result.stdout)).toEqual({ error: { code: 'E_CONFLICT', message: expect.stringContaining('slot') } });
    expect(result.stderr).toMatch(/^ipc-ckpt: cannot restore/);
  });

  it('save -o - to a missing target: exit 1, stdout empty, stderr exactly one error document', () => {
    const result = runCli(['save', '--ns', path.join(workdir, 'missing'), '-o', '-', '--json']);
    expect(result.status).toBe(1);
    expect(result.stdout).toBe('');
    expect(documentOf('error', result.stderr)).toMatchObject({ error: { code: 'E_TARGET' } });
  });

  it('verify and inspect of a corrupt image: exit 1, E_IMAGE_CORRUPT with the offset', () => {
    const corrupt = path.join(workdir, 'corrupt.img');
    const bytes = readFileSync(image());
    bytes[bytes.length - 40] ^= 0xff;
    writeFileSync(corrupt, bytes);
    for (const args of [['verify', '--ns', source.path, '-i', corrupt, '--json'], ['inspect', corrupt, '--json']]) {
      const result = runCli(args);
      expect(result.status).toBe(1);
      expect(documentOf('error', result.stdout)).toMatchObject({ error: { code: 'E_IMAGE_CORRUPT', offset: expect.any(Number) } });
    }
  });

  it('an addon that cannot load: exit 1, E_ADDON saying how to build one', () => {
    const result = runCli(['save', '--ns', source.path, '-o', path.join(workdir, 'never.img'), '--json'], { env: { IPC_CKPT_ADDON: path.join(workdir, 'missing.node') } });
    expect(result.status).toBe(1);
    expect(documentOf('error', result.stdout)).toMatchObject({ error: { code: 'E_ADDON', message: expect.stringMatching(/cannot load the ipc-ckpt addon .*missing\.node: Cannot find module [^\n]*--build-from-source/) } });
  });

  it('a usage error stays exit 2 with no document', () => {
    const result = runCli(['save', '-t', 'not-a-pid', '-o', path.join(workdir, 'x.img'), '--json']);
    expect(result.status).toBe(2);
    expect(result.stdout).toBe('');
    expect(result.stderr).toMatch(/-t\/--pid takes a process id/);
  });
});
