// The CI recipe of README and docs/CONTAINERS.md, run as it is (scripts/ci-recipe.sh) against the real engine: an
// application container's queues checkpointed and restored into fresh containers, by the host's ipc-ckpt and by the
// tool's own image, with --json results that match the documented schema. (test/container/install.test.ts runs it
// once more from an installed tarball, with the default `npx ipc-ckpt`.)
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { recipeLeftovers, recipeResult, runRecipe } from './ci-recipe';
import { buildToolImage, describeWithDocker } from './docker';

jest.setTimeout(15 * 60_000);

/** The tree's own CLI (dist/), in place of `npx ipc-ckpt`. */
const TREE_CLI = `${process.execPath} ${path.resolve(__dirname, '../../bin/ipc-ckpt.js')}`;

describeWithDocker('the CI recipe (scripts/ci-recipe.sh)', () => {
  let workdir: string;
  beforeAll(() => {
    workdir = mkdtempSync(path.join(tmpdir(), 'ipc-ckpt-ci-recipe-'));
  });
  afterAll(() => rmSync(workdir, { recursive: true, force: true }));

  it('checkpoints the application container and restores it into fresh containers, from the host and with the tool image, all verified', () => {
    const out = path.join(workdir, 'ok');
    const run = runRecipe({ env: { IPC_CKPT: TREE_CLI, IPC_CKPT_IMAGE: buildToolImage(), OUT: out } });
    if (run.status !== 0) throw new Error(`ci-recipe.sh exited ${run.status}:\n${run.stdout}\n${run.stderr}`);
    // The application's own checker found every queue and message in both restored containers.
    expect(run.stdout.match(/^OK 7 queues$/gm)).toHaveLength(2);

    expect(recipeResult(out, 'check', 'check')).toMatchObject({ canSave: true, canRestore: true });
    const saved = recipeResult(out, 'save', 'save');
    expect(saved.queues).toBe(7);
    for (const [saveStep, restoreStep, verifyStep] of [['save', 'restore', 'verify'], ['image-save', 'image-restore', 'image-verify']]) {
      expect(recipeResult(out, saveStep, 'save')).toMatchObject({ queues: saved.queues, messages: saved.messages, messageBytes: saved.messageBytes });
      expect(recipeResult(out, restoreStep, 'restore')).toMatchObject({ dryRun: false, queues: saved.queues, messages: saved.messages });
      expect(recipeResult(out, verifyStep, 'verify')).toMatchObject({ equal: true, queues: saved.queues, messages: saved.messages });
    }
    expect(recipeLeftovers()).toBe('');
  });

  it('stops at the restore with its error document when the fresh container already holds the queues', () => {
    const out = path.join(workdir, 'conflict');
    const run = runRecipe({ env: { IPC_CKPT: TREE_CLI, HOLD_COMMAND: 'workload', OUT: out } });
    expect(run.status).toBe(1);
    expect(run.stderr).toMatch(/restore failed \(exit 1\)/);
    expect(recipeResult(out, 'restore', 'error')).toMatchObject({ error: { code: 'E_CONFLICT' } });
    expect(recipeLeftovers()).toBe('');
  });
});
