// A fresh IPC namespace per test: a `sleep` child under `unshare --ipc`, never the host's namespace.
import { spawn, ChildProcess } from 'node:child_process';
import { readlinkSync } from 'node:fs';

export class TestNamespace {
  private constructor(
    private readonly child: ChildProcess,
    readonly pid: number,
  ) {}

  /** /proc/PID/ns/ipc of the namespace's holder process. */
  get path(): string {
    return `/proc/${this.pid}/ns/ipc`;
  }

  /** The namespace's inode link, e.g. 'ipc:[4026532281]'. */
  get inode(): string {
    return readlinkSync(this.path);
  }

  static async create(): Promise<TestNamespace> {
    const child = spawn('unshare', ['--ipc', 'sleep', 'infinity'], { stdio: 'ignore' });
    const pid = child.pid;
    if (pid === undefined) throw new Error('unshare --ipc did not start');
    const host = readlinkSync('/proc/self/ns/ipc');
    // unshare execs sleep in place: wait until the child's namespace is no longer ours.
    for (let attempt = 0; attempt < 500; attempt++) {
      try {
        if (readlinkSync(`/proc/${pid}/ns/ipc`) !== host) return new TestNamespace(child, pid);
      } catch {
        // not there yet
      }
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    child.kill('SIGKILL');
    throw new Error('unshare --ipc never left the host namespace');
  }

  async destroy(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.kill('SIGKILL');
    await exited;
  }
}

/** The calling thread's own IPC namespace link, to prove a call left it where it was. */
export function ownNamespace(): string {
  return readlinkSync('/proc/thread-self/ns/ipc');
}
