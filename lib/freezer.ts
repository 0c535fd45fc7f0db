// Freezes the cgroup of a target process for the duration of a save (cgroup v2 cgroup.freeze or
// the v1 freezer), so its queues cannot change while they are copied.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { IpcCkptError } from './errors';
import type { RollbackGuardian } from './rollback-guardian';

const CGROUP_ROOT = '/sys/fs/cgroup';
const FREEZE_WAIT_MS = 10_000;

interface FreezerControl {
  /** The file to write. */
  file: string;
  frozen: string;
  thawed: string;
  /** Tells whether the cgroup reached the frozen state. */
  isFrozen(): Promise<boolean>;
}

async function findFreezer(pid: number): Promise<FreezerControl> {
  const control = await findFreezerOf(pid);
  const own = await findFreezerOf(process.pid).catch(() => undefined);
  if (own?.file === control.file) {
    throw new IpcCkptError('E_FREEZE', `--freeze: pid ${pid} shares this process's cgroup; freezing it would freeze ipc-ckpt too`);
  }
  return control;
}

async function findFreezerOf(pid: number): Promise<FreezerControl> {
  let lines: string[];
  try {
    lines = (await fs.readFile(`/proc/${pid}/cgroup`, 'utf8')).split('\n');
  } catch (error) {
    throw new IpcCkptError('E_FREEZE', `--freeze: cannot read /proc/${pid}/cgroup: ${(error as Error).message}`, { cause: error });
  }
  for (const line of lines) {
    const [, controllers, cgroupPath] = /^\d+:([^:]*):(.*)$/.exec(line) ?? [];
    if (controllers === undefined || !controllers.split(',').includes('freezer')) continue;
    if (cgroupPath === '/') throw rootRefusal(pid);
    const directory = path.join(CGROUP_ROOT, 'freezer', cgroupPath);
    const file = path.join(directory, 'freezer.state');
    return { file, frozen: 'FROZEN', thawed: 'THAWED', isFrozen: async () => (await fs.readFile(file, 'utf8')).trim() === 'FROZEN' };
  }
  const unified = lines.map((line) => /^0::(.*)$/.exec(line)?.[1]).find((p) => p !== undefined);
  if (unified !== undefined) {
    if (unified === '/') throw rootRefusal(pid);
    for (const mount of [CGROUP_ROOT, path.join(CGROUP_ROOT, 'unified')]) {
      const directory = path.join(mount, unified);
      const file = path.join(directory, 'cgroup.freeze');
      try {
        await fs.access(file);
      } catch {
        continue;
      }
      const events = path.join(directory, 'cgroup.events');
      return { file, frozen: '1', thawed: '0', isFrozen: async () => /^frozen 1$/m.test(await fs.readFile(events, 'utf8')) };
    }
  }
  throw new IpcCkptError('E_FREEZE', `--freeze: no cgroup freezer found for pid ${pid} (neither a v1 freezer nor cgroup.freeze)`);
}

function rootRefusal(pid: number): IpcCkptError {
  return new IpcCkptError('E_FREEZE', `--freeze: pid ${pid} is in the root cgroup; freezing it would freeze the whole machine. Run the workload in its own cgroup (a container is one) or pause it yourself`);
}

/** A frozen cgroup; thaw() always runs (the guardian thaws it if this process dies). */
export class FrozenCgroup {
  private constructor(private readonly control: FreezerControl) {}

  static async freeze(pid: number, guardian: RollbackGuardian): Promise<FrozenCgroup> {
    const control = await findFreezer(pid);
    await guardian.registerFileRestore(control.file, control.thawed);
    const frozen = new FrozenCgroup(control);
    try {
      await fs.writeFile(control.file, control.frozen);
      const deadline = Date.now() + FREEZE_WAIT_MS;
      while (!(await control.isFrozen())) {
        if (Date.now() > deadline) throw new IpcCkptError('E_FREEZE', `--freeze: ${control.file} did not reach the frozen state within ${FREEZE_WAIT_MS / 1000} s`);
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    } catch (error) {
      await frozen.thaw();
      if (error instanceof IpcCkptError) throw error;
      throw new IpcCkptError('E_FREEZE', `--freeze: writing ${control.file}: ${(error as Error).message}`, { cause: error });
    }
    return frozen;
  }

  async thaw(): Promise<void> {
    await fs.writeFile(this.control.file, this.control.thawed);
  }
}
