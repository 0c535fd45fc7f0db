// Runs the CI recipe (scripts/ci-recipe.sh) with the test's application, and reads the --json results it leaves.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import Ajv2020 from 'ajv/dist/2020';
import { buildMsgqToolImage, docker, TEST_LABEL } from './docker';

const repositoryRoot = path.resolve(__dirname, '..', '..');
export const RECIPE_SCRIPT = path.join(repositoryRoot, 'scripts/ci-recipe.sh');

const schema = JSON.parse(readFileSync(path.join(repositoryRoot, 'docs/schema/ipc-ckpt.schema.json'), 'utf8')) as { $id: string };
const ajv = new Ajv2020({ allErrors: true });
ajv.addSchema(schema);

export interface RecipeRun {
  status: number | null;
  stdout: string;
  stderr: string;
}

/**
 * `bash script` in cwd with the test's application: msgq-tool's workload (7 queues) and its checker, the label
 * that finds leftovers, and the workload's msgmnb (its raised queue needs more than the default while it is made).
 */
export function runRecipe(options: { script?: string; cwd?: string; env: Record<string, string | undefined> }): RecipeRun {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    APP_IMAGE: buildMsgqToolImage(),
    APP_COMMAND: 'workload',
    READY_LOG: 'READY 7 queues',
    HOLD_COMMAND: 'idle',
    CHECK_COMMAND: '/msgq-tool check',
    DOCKER_RUN_OPTIONS: `--sysctl kernel.msgmnb=65536 --label ${TEST_LABEL}`,
    ...options.env,
  };
  const run = spawnSync('bash', [options.script ?? RECIPE_SCRIPT], { cwd: options.cwd, env, encoding: 'utf8' });
  return { status: run.status, stdout: run.stdout, stderr: run.stderr };
}

/** The JSON document a step left in the recipe's OUT, checked against its documented schema (docs/JSON.md). */
export function recipeResult(out: string, step: string, kind: 'save' | 'restore' | 'verify' | 'check' | 'error'): Record<string, unknown> {
  const text = readFileSync(path.join(out, `${step}.json`), 'utf8');
  const document = JSON.parse(text) as Record<string, unknown>;
  const validate = ajv.getSchema(`${schema.$id}#/$defs/${kind}`);
  if (!validate?.(document)) throw new Error(`${step}.json is not a ${kind} document: ${ajv.errorsText(validate?.errors)}\n${text}`);
  return document;
}

/** Containers of recipe runs still present (the recipe removes what it starts). */
export function recipeLeftovers(): string {
  return docker('ps', '-a', '--filter', `label=${TEST_LABEL}`, '--filter', 'name=ipc-ckpt-ci-', '--format', '{{.Names}}').trim();
}
