// check: can this kernel, with these privileges, save and restore the target namespace?
import { IpcCkptError } from './errors';
import { describeUnmapped, namespaceIdsOf, NamespaceIds } from './id-mapping';
import { openNamespace } from './namespace';
import type { NativeNamespace } from './native';
import { resolveTarget, Target } from './target';
import { posixCheckFinding } from './posix-queues';

export interface CheckFinding {
  /** 'ok' works, 'fail' blocks save or restore, 'note' works differently than it could. */
  status: 'ok' | 'fail' | 'note';
  /** What it concerns, e.g. 'MSG_COPY'. */
  subject: string;
  text: string;
  /** Which operations a failure blocks. */
  blocks?: Array<'save' | 'restore'>;
}

export interface CheckResult {
  canSave: boolean;
  canRestore: boolean;
  findings: CheckFinding[];
}

const ENOSYS = 38;

/** Capability bits (linux/capability.h) and what each is needed for. */
const CAPABILITIES: Array<{ bit: number; name: string; why: string; blocks: Array<'save' | 'restore'> }> = [
  { bit: 15, name: 'CAP_IPC_OWNER', why: 'read and fill queues whatever their mode (0000 included)', blocks: ['save', 'restore'] },
  { bit: 21, name: 'CAP_SYS_ADMIN', why: 'set owner, mode and qbytes of restored queues (IPC_SET) and write msg_next_id', blocks: ['restore'] },
  { bit: 6, name: 'CAP_SETGID', why: 'create queues under their creator gid (cgid)', blocks: ['restore'] },
  { bit: 7, name: 'CAP_SETUID', why: 'create queues under their creator uid (cuid)', blocks: ['restore'] },
];
const CAP_SYS_RESOURCE = 24;

export async function check(target?: Target): Promise<CheckResult> {
  const resolved = resolveTarget(target);
  const findings: CheckFinding[] = [];
  let ns;
  try {
    ns = await openNamespace(resolved);
    findings.push({ status: 'ok', subject: 'setns', text: resolved.nsPath === '' ? "works in the caller's own IPC namespace (no setns needed)" : `joined ${resolved.label} on a dedicated thread` });
  } catch (error) {
    if (!(error instanceof IpcCkptError) || error.code === 'E_TARGET' || error.code === 'ENOENT') throw error;
    findings.push({ status: 'fail', subject: 'setns', text: `cannot join ${resolved.label}: ${error.message}`, blocks: ['save', 'restore'] });
    return summarize(findings);
  }
  try {
    const probe = await ns.probe();
    findings.push(
      probe.msgCopyErrno === ENOSYS
        ? { status: 'fail', subject: 'MSG_COPY', text: 'msgrcv(MSG_COPY) is not available: the kernel lacks CONFIG_CHECKPOINT_RESTORE, so queues cannot be read without emptying them', blocks: ['save'] }
        : { status: 'ok', subject: 'MSG_COPY', text: 'msgrcv(MSG_COPY) is available: queues are copied without being changed' },
    );
    findings.push(
      probe.nextIdWritableErrno === 0
        ? { status: 'ok', subject: 'msg_next_id', text: '/proc/sys/kernel/msg_next_id is writable: queues are restored at their exact ids' }
        : { status: 'fail', subject: 'msg_next_id', text: `/proc/sys/kernel/msg_next_id is not writable (errno ${probe.nextIdWritableErrno}): CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN over the namespace is needed to restore ids`, blocks: ['restore'] },
    );
    const capabilities = BigInt(probe.effectiveCapabilities);
    const has = (bit: number) => ((capabilities >> BigInt(bit)) & 1n) === 1n;
    for (const capability of CAPABILITIES) {
      findings.push(
        has(capability.bit)
          ? { status: 'ok', subject: capability.name, text: `present: ${capability.why}` }
          : { status: 'fail', subject: capability.name, text: `missing: needed to ${capability.why}`, blocks: capability.blocks },
      );
    }
    findings.push(
      has(CAP_SYS_RESOURCE)
        ? { status: 'ok', subject: 'CAP_SYS_RESOURCE', text: 'present: qbytes above msgmnb are set directly' }
        : { status: 'note', subject: 'CAP_SYS_RESOURCE', text: "missing: a queue whose qbytes exceeds the target's msgmnb is restored by raising msgmnb in the target for the duration of the restore, then putting it back" },
    );
    let ids: NamespaceIds | undefined;
    try {
      ids = await namespaceIdsOf(ns, resolved.label);
      findings.push({ status: 'ok', subject: 'user namespace', text: ids.ownUserNamespace ? "the IPC namespace belongs to ipc-ckpt's own user namespace: uid/gid/cuid/cgid are saved and restored as they are" : `the IPC namespace is owned by ${ids.describe()}: uid/gid/cuid/cgid are saved as the namespace sees them and restored through the target's own map` });
    } catch (error) {
      if (!(error instanceof IpcCkptError)) throw error;
      findings.push({ status: 'fail', subject: 'user namespace', text: `cannot tell which user namespace owns ${resolved.label}, so ids cannot be translated: ${error.message}`, blocks: ['save', 'restore'] });
    }
    if (ids) findings.push(...(await idFindings(ns, ids)), await limitsFinding(ns, ids));
    findings.push(await posixCheckFinding(ns, ids));
  } finally {
    await ns.close();
  }
  return summarize(findings);
}

/** Queues whose owner or creator the namespace cannot see: a save refuses them (the image would lose them). */
async function idFindings(ns: NativeNamespace, ids: NamespaceIds): Promise<CheckFinding[]> {
  if (ids.ownUserNamespace) return [];
  const unmapped = (await ns.listQueues())
    .map((q) => ({ q, missing: ids.namespaceView({ uid: q.uid, gid: q.gid, cuid: q.cuid, cgid: q.cgid }).unmapped }))
    .filter(({ missing }) => missing.length > 0);
  if (unmapped.length === 0) return [{ status: 'ok', subject: 'queue ids', text: 'every queue\'s owner and creator are mapped in the namespace\'s user namespace' }];
  const list = unmapped.slice(0, 5).map(({ q, missing }) => `queue ${q.id}: host ${describeUnmapped(missing)}`).join('; ');
  return [{ status: 'fail', subject: 'queue ids', text: `${unmapped.length} queue(s) have ids the namespace does not map (it sees the overflow id), so save refuses them: ${list}${unmapped.length > 5 ? '; ...' : ''}`, blocks: ['save'] }];
}

/** Whether msgmax/msgmnb/msgmni can really be written, tried with the ids a save or restore would use. */
async function limitsFinding(ns: NativeNamespace, ids: NamespaceIds): Promise<CheckFinding> {
  const sysctls = await ns.readSysctls();
  const values = `msgmax ${sysctls.msgmax}, msgmnb ${sysctls.msgmnb}, msgmni ${sysctls.msgmni}`;
  const writer = ids.limitWriter;
  const as = writer ? ` as uid ${writer.uid} gid ${writer.gid}, the namespace's own root (its user namespace lets no other euid write them)` : '';
  const refused: string[] = [];
  for (const name of ['msgmax', 'msgmnb', 'msgmni'] as const) {
    const errno = await ns.sysctlWritable(name, writer);
    if (errno !== 0) refused.push(`${name} (errno ${errno})`);
  }
  if (refused.length === 0) return { status: 'ok', subject: 'limits', text: `${values}: writable${as} on the namespace thread, for the duration of a save or restore` };
  return {
    status: 'fail',
    subject: 'limits',
    text: `${values}: ${refused.join(', ')} cannot be opened for writing${as}. A save still works unless a message exceeds msgmax; a restore only with --keep-limits of an image that needs nothing raised`,
    blocks: ['restore'],
  };
}

function summarize(findings: CheckFinding[]): CheckResult {
  const blocked = (what: 'save' | 'restore') => findings.some((f) => f.status === 'fail' && f.blocks?.includes(what));
  return { canSave: !blocked('save'), canRestore: !blocked('restore'), findings };
}
