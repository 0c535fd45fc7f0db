// The Docker side of the container tests: engine detection, the test images, containers that clean up after themselves.
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { buildMsgqTool, MSGQ_TOOL_BINARY } from '../support/msgq-tool';

const repositoryRoot = path.resolve(__dirname, '..', '..');

/** The oracle's image: the static msgq-tool alone, FROM scratch. */
export const MSGQ_TOOL_IMAGE = 'ipc-ckpt-test/msgq-tool:latest';
/**
 * Appended to the names of the images built from this tree (the engine is shared: a developer sets e.g. -i15 so
 * that another tree's build does not replace the image under a running test).
 */
const IMAGE_SUFFIX = process.env.IPC_CKPT_TEST_IMAGE_SUFFIX ?? '';
/** ipc-ckpt's own image, built from the top-level Dockerfile. */
export const TOOL_IMAGE = `ipc-ckpt-test/ipc-ckpt${IMAGE_SUFFIX}:latest`;
/**
 * `docker run` options that let ipc-ckpt's image reach another container's IPC namespace: the host's /proc
 * (--pid=host), opening another process's ns file (SYS_PTRACE), setns and msg_next_id (SYS_ADMIN), IPC_STAT of
 * queues it cannot read (IPC_OWNER), and a writable /proc/sys for restore (systempaths=unconfined).
 * `--privileged` grants all of it where root has every capability; here root lacks CAP_SYS_RESOURCE,
 * and --privileged fails with "unable to apply caps".
 */
export const TOOL_RUN_OPTIONS = [
  '--pid=host',
  '--cap-add=SYS_ADMIN',
  '--cap-add=SYS_PTRACE',
  '--cap-add=IPC_OWNER',
  '--security-opt=systempaths=unconfined',
];

/** Every container a test starts carries this label, so a crashed run's leftovers can be found. */
export const TEST_LABEL = 'ipc-ckpt-test';

/** docker's own output, or an Error carrying its stderr. */
export function docker(...args: string[]): string {
  const result = spawnSync('docker', args, { encoding: 'utf8', maxBuffer: 1 << 28 });
  if (result.error) throw result.error;
  if (result.status !== 0) {
    // The tail is where a failed build says why.
    const output = (result.stderr || result.stdout).trim().slice(-4000);
    throw new Error(`docker ${args.join(' ')} exited ${result.status}: ${output}`);
  }
  return result.stdout;
}

/** Why no engine answers, or undefined when one does. */
export function engineUnavailableReason(): string | undefined {
  const result = spawnSync('docker', ['info', '--format', '{{.ServerVersion}}'], { encoding: 'utf8', timeout: 20_000 });
  if (result.error) return `docker client: ${result.error.message}`;
  if (result.status !== 0 || !result.stdout.trim()) return (result.stderr || 'docker info failed').trim();
  return undefined;
}

/**
 * `describe` when an engine answers. Outside CI a missing engine skips with the reason; in CI (CI=true)
 * it is a failure, so a broken setup cannot pass as green.
 */
export function describeWithDocker(name: string, body: () => void): void {
  const reason = engineUnavailableReason();
  if (reason === undefined) {
    describe(name, body);
  } else if (process.env.CI === 'true') {
    describe(name, () => {
      it('needs a Docker engine (CI=true: start one with scripts/docker-setup.sh start)', () => {
        throw new Error(`no Docker engine answers: ${reason}`);
      });
    });
  } else {
    // Straight to stderr: jest drops console output of a file whose tests are all skipped.
    process.stderr.write(`skipping "${name}": no Docker engine answers (${reason}); run scripts/docker-setup.sh start\n`);
    describe.skip(name, body);
  }
}

/** Builds the FROM scratch oracle image from the static binary (seconds; the layer cache makes reruns free). */
export function buildMsgqToolImage(): string {
  buildMsgqTool();
  docker('build', '-q', '-t', MSGQ_TOOL_IMAGE, '-f', path.join(repositoryRoot, 'test/fixtures/msgq-tool.Dockerfile'),
    path.dirname(MSGQ_TOOL_BINARY));
  return MSGQ_TOOL_IMAGE;
}

/**
 * Builds ipc-ckpt's image from the top-level Dockerfile. The base is $IPC_CKPT_TEST_BASE_IMAGE when set,
 * else the offline base that scripts/docker-base-image.sh makes from the host's packages.
 */
export function buildToolImage(): string {
  const base = process.env.IPC_CKPT_TEST_BASE_IMAGE ?? buildBaseImage('toolchain');
  docker('build', '-q', '--build-arg', `BASE_IMAGE=${base}`, '-t', TOOL_IMAGE, repositoryRoot);
  return TOOL_IMAGE;
}

/**
 * The offline base from the host's packages (scripts/docker-base-image.sh): with node, npm, g++, make and python3,
 * or with 'no-toolchain' node and npm but no C/C++ compiler and no make (a consumer's slim machine).
 */
export function buildBaseImage(kind: 'toolchain' | 'no-toolchain'): string {
  const args = kind === 'toolchain' ? [] : ['--no-toolchain', `ipc-ckpt-local/node-runtime-base${IMAGE_SUFFIX}`];
  return execFileSync('bash', [path.join(repositoryRoot, 'scripts/docker-base-image.sh'), ...args], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  }).trim();
}

/** A running container started by a test; remove() is safe to call twice. */
export class Container {
  private constructor(
    readonly name: string,
    readonly pid: number,
  ) {}

  /** Starts `docker run -d` with the given options, image and command, and waits until it prints READY. */
  static start(options: string[], image: string, command: string[]): Container {
    const name = `ipc-ckpt-test-${randomBytes(4).toString('hex')}`;
    docker('run', '-d', '--name', name, '--label', TEST_LABEL, ...options, image, ...command);
    try {
      waitForReady(name);
      const pid = Number(docker('inspect', '-f', '{{.State.Pid}}', name).trim());
      if (!(pid > 0)) throw new Error(`container ${name} has no pid`);
      return new Container(name, pid);
    } catch (error) {
      spawnSync('docker', ['rm', '-f', name]);
      throw error;
    }
  }

  /** The container's IPC namespace as the host sees it. */
  get nsPath(): string {
    return `/proc/${this.pid}/ns/ipc`;
  }

  /** `docker exec` of a command; returns status and output instead of throwing (a failed check is a result). */
  exec(...command: string[]): { status: number | null; stdout: string; stderr: string } {
    const result = spawnSync('docker', ['exec', this.name, ...command], { encoding: 'utf8' });
    return { status: result.status, stdout: result.stdout, stderr: result.stderr };
  }

  remove(): void {
    spawnSync('docker', ['rm', '-f', this.name]);
  }
}

function waitForReady(name: string): void {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const logs = spawnSync('docker', ['logs', name], { encoding: 'utf8' });
    if (logs.stdout.includes('READY')) return;
    const running = docker('inspect', '-f', '{{.State.Running}}', name).trim();
    if (running !== 'true' || Date.now() > deadline) {
      throw new Error(`container ${name} never became READY (running: ${running}): ${logs.stdout}${logs.stderr}`);
    }
    spawnSync('sleep', ['0.1']);
  }
}

/** What each container test file needs: the msgq-tool image, a work directory, containers removed at the end. */
export interface ContainerFixture {
  /** Starts a container of the msgq-tool image, removed after the file's tests. */
  start(options: string[], command: string[]): Container;
  /** A fresh directory for images, removed after the file's tests. */
  readonly workdir: string;
}

/** Call inside a describe block: registers the beforeAll/afterAll that build and clean up the fixture. */
export function useContainers(workdirPrefix: string): ContainerFixture {
  let image = '';
  let workdir = '';
  const containers: Container[] = [];
  beforeAll(() => {
    image = buildMsgqToolImage();
    workdir = mkdtempSync(path.join(tmpdir(), workdirPrefix));
  }, 120_000);
  afterAll(() => {
    for (const container of containers) container.remove();
    if (workdir) rmSync(workdir, { recursive: true, force: true });
  });
  return {
    start(options, command) {
      const container = Container.start(options, image, command);
      containers.push(container);
      return container;
    },
    get workdir() {
      return workdir;
    },
  };
}
