// Save a container's queues from the host, restore them into a fresh container, and prove that the application
// in it sees the same queues and messages; then prove ipc-ckpt's own image saves the same thing.
import { readFileSync, readlinkSync } from 'node:fs';
import * as path from 'node:path';
import { dumpNamespace, DumpedQueue, msgqTool } from '../support/msgq-tool';
import { cli, inspectWithoutSaveTime, runCli } from './cli';
import { buildToolImage, Container, describeWithDocker, docker, TOOL_RUN_OPTIONS, useContainers } from './docker';

// The workload's raised queue needs msgmnb >= its qbytes while it is set (containers lack CAP_SYS_RESOURCE).
const WORKLOAD_MSGMNB = 65536;
const KERNEL_DEFAULT_MSGMNB = 16384;

/** What restore must reproduce of a queue (times and pids cannot be set from userspace). */
function restorable(queue: DumpedQueue): Partial<DumpedQueue> {
  const fields: Partial<DumpedQueue> = { ...queue };
  for (const unsettable of ['stime', 'rtime', 'ctime', 'lspid', 'lrpid'] as const) delete fields[unsettable];
  return fields;
}

/** The cgroup v1 freezer state of a process's cgroup (Docker here runs with cgroup v1). */
function freezerState(pid: number): string {
  const line = readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n').find((l) => /^\d+:([^:]*,)?freezer(,[^:]*)?:/.test(l));
  if (line === undefined) throw new Error(`pid ${pid} has no freezer cgroup`);
  const cgroupPath = line.slice(line.indexOf(':', line.indexOf(':') + 1) + 1);
  return readFileSync(path.join('/sys/fs/cgroup/freezer', cgroupPath, 'freezer.state'), 'utf8').trim();
}

// Containers start in about a second each; a test runs several.
jest.setTimeout(120_000);

describeWithDocker('a container checkpointed and restored into a fresh container', () => {
  const fixture = useContainers('ipc-ckpt-container-');
  const start = fixture.start;

  it('the checker fails in a fresh container that holds no queues (it can tell)', () => {
    const empty = start(['--ipc=private'], ['idle']);
    const result = empty.exec('/msgq-tool', 'check');
    expect(result.status).toBe(1);
    expect(result.stdout).toMatch(/DIFF namespace: 0 queues, expected 7/);
  });

  describe('workload -> host save -> fresh container -> host restore', () => {
    let source: Container;
    let target: Container;
    const hostImage = () => path.join(fixture.workdir, 'host.img');

    beforeAll(() => {
      source = start(['--ipc=private', '--sysctl', `kernel.msgmnb=${WORKLOAD_MSGMNB}`], ['workload']);
      // Back to the kernel default from the host, so the raised queue's qbytes exceeds its namespace's msgmnb.
      msgqTool(source.nsPath, 'sysctl', 'msgmnb', KERNEL_DEFAULT_MSGMNB);
      target = start(['--ipc=private'], ['idle']);
    }, 60_000);

    it('gives each container its own IPC namespace', () => {
      expect(docker('inspect', '-f', '{{.HostConfig.IpcMode}}', source.name).trim()).toBe('private');
      const namespaces = ['/proc/self/ns/ipc', source.nsPath, target.nsPath].map((p) => readlinkSync(p));
      expect(new Set(namespaces).size).toBe(3);
    });

    it('saves the workload container from the host without changing it', () => {
      const before = dumpNamespace(source.nsPath);
      expect(before.queues).toHaveLength(7);
      expect(before.queues.some((q) => q.qbytes > before.limits.msgmnb)).toBe(true);
      cli('save', '--ns', source.nsPath, '-o', hostImage());
      expect(dumpNamespace(source.nsPath)).toEqual(before);
    });

    it('saves the same image with --freeze and leaves the container thawed and running', () => {
      const frozenImage = path.join(fixture.workdir, 'frozen.img');
      cli('save', '--freeze', '--ns', source.nsPath, '-o', frozenImage);
      expect(inspectWithoutSaveTime(frozenImage)).toEqual(inspectWithoutSaveTime(hostImage()));
      expect(docker('inspect', '-f', '{{.State.Status}}', source.name).trim()).toBe('running');
      expect(freezerState(source.pid)).toBe('THAWED');
    });

    it('restores into the fresh container the same queues and messages, and verify agrees', () => {
      cli('restore', '--ns', target.nsPath, '-i', hostImage());
      const sourceDump = dumpNamespace(source.nsPath);
      const targetDump = dumpNamespace(target.nsPath);
      expect(targetDump.queues.map(restorable)).toEqual(sourceDump.queues.map(restorable));
      expect(targetDump.limits).toEqual(sourceDump.limits);
      const verified = runCli('verify', '--ns', target.nsPath, '-i', hostImage());
      expect(verified).toMatchObject({ status: 0 });
    });

    it('lets the application in the fresh container find every queue by key and receive every message by type', () => {
      const result = target.exec('/msgq-tool', 'check');
      expect(result.stdout).toMatch(/^OK 7 queues$/m);
      expect(result.status).toBe(0);
      // The check received everything: verify must now see the difference.
      expect(runCli('verify', '--ns', target.nsPath, '-i', hostImage()).status).toBe(1);
    });

    it("saves the same image with ipc-ckpt's own Docker image, and restores it into another fresh container", () => {
      const toolImage = buildToolImage();
      const runTool = (...args: string[]) =>
        docker('run', '--rm', ...TOOL_RUN_OPTIONS, '-v', `${fixture.workdir}:/data`, toolImage, ...args);
      runTool('save', '--ns', source.nsPath, '-o', '/data/tool.img');
      expect(inspectWithoutSaveTime(path.join(fixture.workdir, 'tool.img'))).toEqual(inspectWithoutSaveTime(hostImage()));

      const second = start(['--ipc=private'], ['idle']);
      runTool('restore', '--ns', second.nsPath, '-i', '/data/tool.img');
      runTool('verify', '--ns', second.nsPath, '-i', '/data/tool.img');
      expect(second.exec('/msgq-tool', 'check').stdout).toMatch(/^OK 7 queues$/m);
      // And the source is still intact for the application that owns it.
      expect(source.exec('/msgq-tool', 'check').stdout).toMatch(/^OK 7 queues$/m);
    }, 15 * 60_000);
  });
});
