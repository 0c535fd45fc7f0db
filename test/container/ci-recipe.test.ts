// The CI recipe of README and docs/CONTAINERS.md, run exactly (scripts/ci-recipe.sh) against the real engine: an
// application container's queues checkpointed and restored into fresh containers, by the host's ipc-ckpt and by the
// tool's own image, with --json results that match the documented schema.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import Ajv2020 from 'ajv/dist/2020';
import { buildMsgqToolImage, buildToolImage, describeWithDocker, docker, TEST_LABEL } from './docker';

jest.setTimeout(15 * 60_000);

const repositoryRoot = path.resolve(__dirname, '..', '..');
const schema = JSON.parse(readFileSync(path.join(repositoryRoot, 'docs/schema/ipc-ckpt.schema.json'), 'utf8')) as { $id: string };
const ajv = new Ajv2020({ allErrors: true });
ajv.addSchema(schema);

/** The JSON document a step left in the recipe's OUT, checked against its documented schema. */
function result(out: string, step: string, kind: string): Record<string, unknown> {
  const text = readFileSync(path.join(out, `${step}.json`), 'utf8');
  const document = JSON.parse(text) as Record<string, unknown>;
  const validate = ajv.getSchema(`${schema.$id}#/$defs/${kind}`);
  if (!validate?.(document)) throw new Error(`${step}.json is not a ${kind} document: ${ajv.errorsText(validate?.errors)}\n${text}`);
  return document;
}

/** The recipe with the test's application: msgq-tool's workload (7 queues) and its checker. */
function runRecipe(out: string, overrides: Record<string, string>): { status: number | null; stdout: string; stderr: string } {
  const env = {
    ...process.env,
    APP_IMAGE: buildMsgqToolImage(),
    APP_COMMAND: 'workload',
    READY_LOG: 'READY 7 queues',
    HOLD_COMMAND: 'idle',
    CHECK_COMMAND: '/msgq-tool check',
    // The workload's raised queue needs msgmnb above the default while it is made; the label finds leftovers.
    DOCKER_RUN_OPTIONS: `--sysctl kernel.msgmnb=65536 --label ${TEST_LABEL}`,
    IPC_CKPT: `${process.execPath} ${path.join(repositoryRoot, 'bin/ipc-ckpt.js')}`,
    OUT: out,
    ...overrides,
  };
  const run = spawnSync('bash', [path.join(repositoryRoot, 'scripts/ci-recipe.sh')], { env, encoding: 'utf8' });
  return { status: run.status, stdout: run.stdout, stderr: run.stderr };
}

/** Containers of this recipe run still present (the recipe removes what it starts). */
function leftovers(): string {
  return docker('ps', '-a', '--filter', `label=${TEST_LABEL}`, '--filter', 'name=ipc-ckpt-ci-', '--format', '{{.Names}}').trim();
}

describeWithDocker('the CI recipe (scripts/ci-recipe.sh)', () => {
  let workdir: string;
  beforeAll(() => {
    workdir = mkdtempSync(path.join(tmpdir(), 'ipc-ckpt-ci-recipe-'));
  });
  afterAll(() => rmSync(workdir, { recursive: true, force: true }));

  it('checkpoints the application container and restores it into fresh containers, from the host and with the tool image, all verified', () => {
    const out = path.join(workdir, 'ok');
    const run = runRecipe(out, { IPC_CKPT_IMAGE: buildToolImage() });
    if (run.status !== 0) throw new Error(`ci-recipe.sh exited ${run.status}:\n${run.stdout}\n${run.stderr}`);
    // The application's own checker found every queue and message in both restored containers.
    expect(run.stdout.match(/^OK 7 queues$/gm)).toHaveLength(2);

    expect(result(out, 'check', 'check')).toMatchObject({ canSave: true, canRestore: true });
    const saved = result(out, 'save', 'save');
    expect(saved.queues).toBe(7);
    for (const [restoreStep, verifyStep, saveStep] of [['restore', 'verify', 'save'], ['image-restore', 'image-verify', 'image-save']]) {
      const fromSave = result(out, saveStep, 'save');
      expect(fromSave).toMatchObject({ queues: saved.queues, messages: saved.messages, messageBytes: saved.messageBytes });
      expect(result(out, restoreStep, 'restore')).toMatchObject({ dryRun: false, queues: saved.queues, messages: saved.messages });
      expect(result(out, verifyStep, 'verify')).toMatchObject({ equal: true, queues: saved.queues, messages: saved.messages });
    }
    expect(leftovers()).toBe('');
  });

  it('fails at the restore with its error document when the fresh container already holds the queues', () => {
    const out = path.join(workdir, 'conflict');
    const run = runRecipe(out, { HOLD_COMMAND: 'workload' });
    expect(run.status).toBe(1);
    expect(run.stderr).toMatch(/restore failed \(exit 1\)/);
    expect(result(out, 'restore', 'error')).toMatchObject({ error: { code: 'E_CONFLICT' } });
    expect(leftovers()).toBe('');
  });
});
