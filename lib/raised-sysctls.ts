// Namespace limits changed for the duration of one operation and always put back: by putBack() on
// every normal path, and by the rollback guardian if this process dies first.
import { namespaceIdsOf } from './id-mapping';
import type { MsgSysctlName, NativeNamespace, SysctlWriter } from './native';
import type { RollbackGuardian } from './rollback-guardian';
import type { ResolvedTarget } from './target';

export class RaisedSysctls {
  private readonly originals = new Map<MsgSysctlName, number>();
  private guardianProcess: RollbackGuardian | undefined;

  constructor(
    private readonly ns: NativeNamespace,
    private readonly target: ResolvedTarget,
    /** The run's guardian (it may guard other things too); one of our own is made when absent. */
    guardian?: RollbackGuardian,
  ) {
    this.guardianProcess = guardian;
  }

  /** Started on first use: most saves change nothing and need no guardian (nor its module, loaded here). */
  get guardian(): RollbackGuardian {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    this.guardianProcess ??= (require('./rollback-guardian') as typeof import('./rollback-guardian')).RollbackGuardian.start(this.target);
    return this.guardianProcess;
  }

  get changed(): boolean {
    return this.originals.size > 0;
  }

  /** Who writes `name`: a user-namespaced target lets only its own root write the limits (msg_next_id needs no switch). */
  private async writerFor(name: MsgSysctlName): Promise<SysctlWriter | undefined> {
    if (name === 'msg_next_id') return undefined;
    return (await namespaceIdsOf(this.ns, this.target.label)).limitWriter;
  }

  /** Sets name to value; `current` is its value now, remembered as the original the first time. */
  async set(name: MsgSysctlName, value: number, current: number): Promise<void> {
    const first = !this.originals.has(name);
    const writer = await this.writerFor(name);
    // The guardian learns the original before the write: we may die right after it.
    if (first) await this.guardian.registerSysctl(name, current, writer && { writeAsUid: writer.uid, writeAsGid: writer.gid });
    await this.ns.writeSysctl(name, value, writer);
    if (first) this.originals.set(name, current);
  }

  /** Writes every original back, newest first; returns the problems instead of stopping at one. */
  async putBack(): Promise<string[]> {
    const problems: string[] = [];
    for (const [name, value] of [...this.originals].reverse()) {
      try {
        await this.ns.writeSysctl(name, value, await this.writerFor(name));
      } catch (error) {
        problems.push(`${name} back to ${value}: ${(error as Error).message}`);
      }
    }
    this.originals.clear();
    return problems;
  }

  /** Ends the guardian: call after putBack(), or once the changes are meant to stay. */
  async finish(): Promise<void> {
    await this.guardianProcess?.finish();
  }
}
