// Docker with --userns-remap=default: every container's IPC namespace is owned by a user namespace that
// maps its uid 0 to dockremap's first subordinate id. A second engine (scripts/docker-userns-remap.sh: its own
// data root, exec root, socket and containerd) runs these containers, so the shared engine is left as it is.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { buildMsgqTool, MSGQ_TOOL_BINARY } from '../support/msgq-tool';
import { UserNamespacedIpc } from '../support/user-namespace';
import { runCli } from '../support/cli';
import { describeWithDocker, TEST_LABEL } from './docker';

const repositoryRoot = path.resolve(__dirname, '..', '..');
const ENGINE_SCRIPT = path.join(repositoryRoot, 'scripts/docker-userns-remap.sh');
const IMAGE = 'ipc-ckpt-test/msgq-tool:latest';
/** The workload's raised queue needs msgmnb >= its qbytes while it is set (containers lack CAP_SYS_RESOURCE). */
const WORKLOAD_MSGMNB = 65536;

jest.setTimeout(180_000);

describeWithDocker('Docker userns-remap: a container round trip through the host', () => {
  let dir: string;
  let socket: string;

  const docker = (...args: string[]): string => {
    const result = spawnSync('docker', ['-H', socket, ...args], { encoding: 'utf8' });
    if (result.status !== 0) throw new Error(`docker ${args.join(' ')} exited ${result.status}: ${(result.stderr || result.stdout).trim().slice(-2000)}`);
    return result.stdout;
  };

  /** Starts a container of the remapped engine and waits until it prints READY; resolves to its pid. */
  const start = (options: string[], command: string): number => {
    const name = `ipc-ckpt-userns-${path.basename(dir)}-${command}`;
    docker('run', '-d', '--name', name, '--label', TEST_LABEL, '--network', 'none', '--ipc=private', ...options, IMAGE, command);
    const deadline = Date.now() + 30_000;
    while (!docker('logs', name).includes('READY')) {
      if (Date.now() > deadline) throw new Error(`container ${name} never printed READY`);
      execFileSync('sleep', ['0.1']);
    }
    return Number(docker('inspect', '-f', '{{.State.Pid}}', name).trim());
  };

  beforeAll(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'ipc-ckpt-userns-remap-'));
    socket = execFileSync('bash', [ENGINE_SCRIPT, 'start', dir], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
    buildMsgqTool();
    docker('build', '-q', '-t', IMAGE, '-f', path.join(repositoryRoot, 'test/fixtures/msgq-tool.Dockerfile'), path.dirname(MSGQ_TOOL_BINARY));
  }, 180_000);

  afterAll(() => {
    if (socket !== undefined) {
      const leftovers = docker('ps', '-aq', '--filter', `label=${TEST_LABEL}`).split('\n').filter(Boolean);
      if (leftovers.length > 0) docker('rm', '-f', ...leftovers);
    }
    execFileSync('bash', [ENGINE_SCRIPT, 'stop', dir], { stdio: 'inherit' });
    rmSync(dir, { recursive: true, force: true });
  }, 120_000);

  it('saves a remapped workload container and restores it into a fresh one and into another mapping: ids as the containers see them', async () => {
    const sourcePid = start(['--sysctl', `kernel.msgmnb=${WORKLOAD_MSGMNB}`], 'workload');
    const targetPid = start([], 'idle');
    const [, outside] = readFileSync(`/proc/${sourcePid}/uid_map`, 'utf8').trim().split(/\s+/).map(Number);
    expect(outside).toBeGreaterThan(0);

    const image = path.join(dir, 'workload.img');
    expect(runCli(['save', '-t', String(sourcePid), '-o', image, '-q']).status).toBe(0);
    const report = JSON.parse(runCli(['inspect', '--json', image]).stdout);
    expect(report.ids).toMatchObject({ view: 'namespace', mapping: { ownUserNamespace: false, uid: [{ inside: 0, outside, count: 65536 }] } });

    const checked = runCli(['check', '-t', String(targetPid)]);
    expect(checked.stdout).toMatch(new RegExp(`^ok +limits: .*writable as uid ${outside} gid ${outside}, the namespace's own root`, 'm'));
    expect(checked.status).toBe(0);
    const restored = runCli(['restore', '-t', String(targetPid), '-i', image]);
    expect(restored.stderr).toMatch(/restored 7 queue\(s\)/);
    expect(restored.status).toBe(0);
    expect(runCli(['verify', '-t', String(targetPid), '-i', image]).status).toBe(0);
    // The checker inside the new container: ids, owners, modes, qbytes and messages as the workload made them.
    expect(docker('exec', `ipc-ckpt-userns-${path.basename(dir)}-idle`, '/msgq-tool', 'check')).toMatch(/^OK 7 queues/);

    // Another engine's range (another host, another dockremap): the same ids inside.
    const elsewhere = await UserNamespacedIpc.create(`0 ${outside + 200000} 65536`);
    try {
      expect(runCli(['restore', '-t', String(elsewhere.pid), '-i', image, '-q']).status).toBe(0);
      expect(elsewhere.tool(['check'])).toMatch(/^OK 7 queues/);
    } finally {
      await elsewhere.destroy();
    }
  });
});
