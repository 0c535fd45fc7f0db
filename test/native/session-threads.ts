// Which IPC namespace each thread of this process is in, read from /proc/self/task.
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

/** The name the addon gives its session threads (native/namespace_thread.cc). */
export const SESSION_THREAD_NAME = 'ipc-ckpt-ns';

export interface ThreadNamespace {
  tid: number;
  name: string;
  /** e.g. 'ipc:[4026531839]' */
  ipc: string;
}

export function threadNamespaces(): ThreadNamespace[] {
  const threads: ThreadNamespace[] = [];
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      const name = readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim();
      threads.push({ tid: Number(tid), name, ipc: readlinkSync(`/proc/self/task/${tid}/ns/ipc`) });
    } catch {
      // the thread ended while we looked
    }
  }
  return threads;
}

export function sessionThreads(): ThreadNamespace[] {
  return threadNamespaces().filter((thread) => thread.name === SESSION_THREAD_NAME);
}

/** Threads that are not session threads but sit outside the process's own namespace (should be none). */
export function strayThreads(hostIpc: string): ThreadNamespace[] {
  return threadNamespaces().filter((thread) => thread.name !== SESSION_THREAD_NAME && thread.ipc !== hostIpc);
}
