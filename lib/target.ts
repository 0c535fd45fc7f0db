// Which IPC namespace a command acts on: --ns PATH, -t/--pid PID, or the caller's own.
import { existsSync, statSync } from 'node:fs';
import { IpcCkptError } from './errors';

export interface Target {
  /** An nsfs file of type IPC: /proc/PID/ns/ipc or a bind mount made by `unshare --ipc=FILE`. */
  ns?: string;
  /** A process whose IPC namespace is the target. */
  pid?: number;
}

export interface ResolvedTarget {
  /** The path handed to the native layer; '' means the caller's own namespace. */
  nsPath: string;
  /** The pid, when the target was given as one (the freezer needs it). */
  pid?: number;
  /** How messages name the target. */
  label: string;
}

export function resolveTarget(target: Target = {}): ResolvedTarget {
  if (target.ns !== undefined && target.pid !== undefined) {
    throw new IpcCkptError('E_USAGE', 'give either --ns or --pid, not both');
  }
  if (target.pid !== undefined) {
    if (!Number.isSafeInteger(target.pid) || target.pid <= 0) {
      throw new IpcCkptError('E_USAGE', `--pid takes a positive process id, not ${String(target.pid)}`);
    }
    const nsPath = `/proc/${target.pid}/ns/ipc`;
    if (!existsSync(`/proc/${target.pid}`)) {
      throw new IpcCkptError('E_TARGET', `no process with pid ${target.pid} (${nsPath} does not exist)`);
    }
    return { nsPath, pid: target.pid, label: nsPath };
  }
  if (target.ns !== undefined) {
    if (target.ns === '') throw new IpcCkptError('E_USAGE', '--ns takes a path');
    let stat;
    try {
      stat = statSync(target.ns);
    } catch (error) {
      const e = error as NodeJS.ErrnoException;
      const why = e.code === 'ENOENT' ? 'does not exist' : `cannot be opened: ${e.message}`;
      throw new IpcCkptError(e.code === 'ENOENT' ? 'E_TARGET' : (e.code ?? 'E_TARGET'), `${target.ns} ${why}`, { errno: e.errno, syscall: e.syscall, cause: error });
    }
    if (stat.isDirectory()) {
      throw new IpcCkptError('E_TARGET', `${target.ns} is a directory, not an IPC namespace file`);
    }
    const pid = /^\/proc\/(\d+)\/ns\/ipc$/.exec(target.ns);
    return { nsPath: target.ns, pid: pid ? Number(pid[1]) : undefined, label: target.ns };
  }
  return { nsPath: '', label: "the caller's own IPC namespace" };
}
