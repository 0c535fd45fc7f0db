// What --ns /proc/PID/ns/ipc means under Docker's other IPC modes: --ipc=host and --ipc=shareable/container:NAME.
import { createHash, randomBytes } from 'node:crypto';
import { readlinkSync } from 'node:fs';
import * as path from 'node:path';
import { dumpNamespace, msgqTool, patternBody } from '../support/msgq-tool';
import { cli, inspectWithoutSaveTime } from './cli';
import { describeWithDocker, docker, useContainers } from './docker';

interface InspectedQueue {
  key: number;
  qnum: number | string;
}

/** The queues of `inspect --json` (the document's queue list, wherever the CLI nests it). */
function inspectedQueues(imageFile: string): InspectedQueue[] {
  const document = JSON.parse(cli('inspect', imageFile, '--json')) as { queues?: unknown[]; namespace?: { queues?: unknown[] } };
  const queues = document.queues ?? document.namespace?.queues;
  if (!Array.isArray(queues)) throw new Error(`inspect --json has no queue list: ${JSON.stringify(document).slice(0, 300)}`);
  return queues.map((entry) => {
    const record = entry as Record<string, unknown> & { queue?: Record<string, unknown> };
    const queue = record.queue ?? record;
    return { key: Number(queue.key), qnum: queue.qnum as number | string };
  });
}

/** A random key that is neither IPC_PRIVATE nor likely to meet another test's. */
function randomKey(): number {
  return (randomBytes(4).readUInt32BE() | 0x40000000) >>> 0;
}

// Containers start in about a second each; a test runs several.
jest.setTimeout(120_000);

describeWithDocker("Docker's IPC modes", () => {
  const fixture = useContainers('ipc-ckpt-ipc-modes-');
  const start = fixture.start;

  it('--ipc=host: the container uses the host namespace, so a save of it is a save of the host queues', () => {
    const hostContainer = start(['--ipc=host'], ['idle']);
    expect(readlinkSync(hostContainer.nsPath)).toBe(readlinkSync('/proc/self/ns/ipc'));
    const key = randomKey();
    const created = hostContainer.exec('/msgq-tool', 'create', String(key), '600');
    expect(created.status).toBe(0);
    const id = Number(created.stdout.trim());
    try {
      expect(hostContainer.exec('/msgq-tool', 'send', String(id), '3', '40', '9').status).toBe(0);
      // The host's own view (no nsenter into anything else) holds the container's queue.
      expect(dumpNamespace('/proc/self/ns/ipc').queues.find((q) => q.key === key)).toMatchObject({ id, qnum: 1, cbytes: 40 });
      const image = path.join(fixture.workdir, 'host-mode.img');
      cli('save', '--ns', hostContainer.nsPath, '-o', image);
      expect(inspectedQueues(image).filter((q) => q.key === key)).toEqual([{ key, qnum: expect.anything() }]);
      expect(Number(inspectedQueues(image).find((q) => q.key === key)?.qnum)).toBe(1);
    } finally {
      msgqTool('/proc/self/ns/ipc', 'rm', id);
    }
  });

  it('--ipc=shareable and --ipc=container:NAME: two containers, one namespace, the same save from either', () => {
    const owner = start(['--ipc=shareable'], ['idle']);
    const joiner = start([`--ipc=container:${owner.name}`], ['idle']);
    const ownerId = docker('inspect', '-f', '{{.Id}}', owner.name).trim();
    expect(docker('inspect', '-f', '{{.HostConfig.IpcMode}}', joiner.name).trim()).toBe(`container:${ownerId}`);
    expect(readlinkSync(joiner.nsPath)).toBe(readlinkSync(owner.nsPath));
    expect(readlinkSync(owner.nsPath)).not.toBe(readlinkSync('/proc/self/ns/ipc'));

    const key = randomKey();
    const created = owner.exec('/msgq-tool', 'create', String(key), '640');
    expect(created.status).toBe(0);
    const id = created.stdout.trim();
    // Written by one container, seen by the other.
    expect(joiner.exec('/msgq-tool', 'send', id, '7', '123', '5').status).toBe(0);
    expect(owner.exec('/msgq-tool', 'send', id, '8', '0').status).toBe(0);

    const fromOwner = path.join(fixture.workdir, 'shareable-owner.img');
    const fromJoiner = path.join(fixture.workdir, 'shareable-joiner.img');
    cli('save', '--ns', owner.nsPath, '-o', fromOwner);
    cli('save', '--ns', joiner.nsPath, '-o', fromJoiner);
    expect(inspectWithoutSaveTime(fromJoiner)).toEqual(inspectWithoutSaveTime(fromOwner));
    expect(inspectedQueues(fromOwner).map((q) => q.key)).toEqual([key]);

    // Restored into a fresh private container, the application receives both messages by type.
    const fresh = start(['--ipc=private'], ['idle']);
    cli('restore', '--ns', fresh.nsPath, '-i', fromOwner);
    expect(dumpNamespace(fresh.nsPath).queues.map((q) => [q.id, q.key, q.mode, q.qnum])).toEqual([[Number(id), key, 0o640, 2]]);
    const sha256 = (body: Buffer) => createHash('sha256').update(body).digest('hex');
    expect(fresh.exec('/msgq-tool', 'recv', id, '8', '--nowait').stdout).toBe(`8 0 ${sha256(Buffer.alloc(0))}\n`);
    expect(fresh.exec('/msgq-tool', 'recv', id, '7', '--nowait').stdout).toBe(`7 123 ${sha256(patternBody(123, 5))}\n`);
  });
});
