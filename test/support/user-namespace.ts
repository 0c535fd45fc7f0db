// A fresh IPC namespace owned by a fresh user namespace (a rootless container's shape): a `sleep`
// child under `unshare --user --ipc`, its uid_map and gid_map written from outside.
import { execFileSync, spawn, ChildProcess } from 'node:child_process';
import { readlinkSync, writeFileSync } from 'node:fs';
import { buildMsgqTool, MsgqToolError, NamespaceDump } from './msgq-tool';

/** "INSIDE OUTSIDE COUNT" lines, as /proc/PID/uid_map takes them. */
export type IdMapLines = string;

export class UserNamespacedIpc {
  private constructor(
    private readonly child: ChildProcess,
    readonly pid: number,
  ) {}

  /** /proc/PID/ns/ipc of the holder. */
  get path(): string {
    return `/proc/${this.pid}/ns/ipc`;
  }

  /** Its IPC namespace mapped through `uidMap` (and `gidMap`, the same by default), e.g. '0 100000 65536'. */
  static async create(uidMap: IdMapLines, gidMap: IdMapLines = uidMap): Promise<UserNamespacedIpc> {
    const child = spawn('unshare', ['--user', '--ipc', 'sleep', 'infinity'], { stdio: 'ignore' });
    const pid = child.pid;
    if (pid === undefined) throw new Error('unshare --user --ipc did not start');
    const own = readlinkSync('/proc/self/ns/user');
    // unshare execs sleep in place: wait until the child's user namespace is no longer ours.
    for (let attempt = 0; attempt < 500; attempt++) {
      try {
        if (readlinkSync(`/proc/${pid}/ns/user`) !== own && readlinkSync(`/proc/${pid}/exe`).endsWith('/sleep')) {
          writeFileSync(`/proc/${pid}/uid_map`, `${uidMap}\n`);
          writeFileSync(`/proc/${pid}/gid_map`, `${gidMap}\n`);
          return new UserNamespacedIpc(child, pid);
        }
      } catch {
        // not there yet
      }
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    child.kill('SIGKILL');
    throw new Error('unshare --user --ipc never left the caller\'s user namespace');
  }

  /**
   * msgq-tool inside both namespaces (nsenter --user --ipc), as the container sees it: as its root, or
   * as `as` (ids of the namespace's own view).
   */
  tool(args: Array<string | number | bigint>, as?: { uid: number; gid: number }): string {
    const ids = as ? [`--setuid=${as.uid}`, `--setgid=${as.gid}`] : [];
    const argv = args.map(String);
    try {
      return execFileSync('nsenter', [`--target=${this.pid}`, '--user', '--ipc', ...ids, '--', buildMsgqTool(), ...argv], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 1 << 30 });
    } catch (error) {
      const failed = error as { status?: number | null; stderr?: string; stdout?: string };
      throw new MsgqToolError(argv, failed.status ?? null, failed.stderr ?? '', failed.stdout ?? '');
    }
  }

  /** Any command inside both namespaces (e.g. ipcs), as its root; returns stdout. */
  run(...argv: string[]): string {
    return execFileSync('nsenter', [`--target=${this.pid}`, '--user', '--ipc', '--', ...argv], { encoding: 'utf8' });
  }

  /** Every queue and message as seen from inside (the namespace's own ids). */
  dumpInside(): NamespaceDump {
    return JSON.parse(this.tool(['dump'])) as NamespaceDump;
  }

  async destroy(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.kill('SIGKILL');
    await exited;
  }
}

/** Bind-mounts an nsfs file (it keeps the namespace alive with no process in it); returns an unmount. */
export function bindNamespaceFile(nsPath: string, file: string): () => void {
  writeFileSync(file, '');
  execFileSync('mount', ['--bind', nsPath, file]);
  return () => execFileSync('umount', [file]);
}
