// POSIX message queues: the save, restore and verify policy (save.ts, restore.ts and verify.ts call in
// through small hooks). mq_receive is destructive, so a save takes every message of a queue and puts
// the same messages back (native takePosixMessages, safe against a SIGKILL of this process); it does
// so only with the workload frozen (--freeze) or asserted quiescent (--quiescent).
import { IpcCkptError } from './errors';
import { describeUnmapped, imageIdsInNamespaceView, imageIdsToHost, namespaceIdsOf, NamespaceIds } from './id-mapping';
import { PosixSectionEncoder } from './image/posix-queues';
import type { ImageIdMapping, PosixLimits, PosixQueueRecord } from './image/model';
import { MQUEUE_LIMIT_NAMES, MqueueLimitName, MqueueLimits, NativeNamespace, POSIX_PACKED_HEADER_BYTES, PosixQueueStat, SysctlWriter } from './native';
import type { RollbackGuardian } from './rollback-guardian';
import type { PosixImageEvent } from './image/posix-queues';

/** Which kinds of queue an operation covers (--sysv-only / --posix-only). */
export type QueueSelection = 'all' | 'sysv' | 'posix';

export function queueSelection(options: { sysvOnly?: boolean; posixOnly?: boolean }): QueueSelection {
  if (options.sysvOnly && options.posixOnly) throw new IpcCkptError('E_USAGE', 'give either --sysv-only or --posix-only, not both');
  return options.sysvOnly ? 'sysv' : options.posixOnly ? 'posix' : 'all';
}

/** The kernel's defaults: a namespace with these limits and no queue needs no POSIX section. */
const DEFAULT_LIMITS: PosixLimits = { queuesMax: 256, msgMax: 10, msgsizeMax: 8192, msgDefault: 10, msgsizeDefault: 8192 };

const LIMIT_FIELDS: ReadonlyArray<[MqueueLimitName, keyof PosixLimits]> = [
  ['queues_max', 'queuesMax'],
  ['msg_max', 'msgMax'],
  ['msgsize_max', 'msgsizeMax'],
  ['msg_default', 'msgDefault'],
  ['msgsize_default', 'msgsizeDefault'],
];

export function posixLimitsFromNative(limits: MqueueLimits): PosixLimits {
  return { queuesMax: limits.queues_max, msgMax: limits.msg_max, msgsizeMax: limits.msgsize_max, msgDefault: limits.msg_default, msgsizeDefault: limits.msgsize_default };
}

type PosixOwner = { uid: number; gid: number };

/**
 * A queue's owner as the image holds it: the namespace's own view (lib/id-mapping.ts, as for SysV owners).
 * An owner the namespace does not map (it sees the overflow id) cannot be saved exactly and is refused.
 */
export function posixOwnerForImage(stat: PosixQueueStat, ids: NamespaceIds, targetLabel: string): PosixOwner {
  const { ids: view, unmapped } = ids.namespaceView({ uid: stat.uid, gid: stat.gid });
  if (unmapped.length > 0) {
    throw new IpcCkptError('E_UNMAPPED_ID', `${label(stat.name)} in ${targetLabel} has host ${describeUnmapped(unmapped)}, which the user namespace that owns it, ${ids.describe()}, does not map: the namespace sees it as the overflow id. Give the queue a mapped owner (fchown), or save with --sysv-only to leave POSIX queues out`);
  }
  return view;
}

/** The inverse of posixOwnerForImage: the host ids to create a restored queue with; `unmapped` when the target cannot. */
export function posixOwnerForTarget(record: PosixQueueRecord, ids: NamespaceIds, idMapping: ImageIdMapping | undefined): { owner: PosixOwner; unmapped: string } {
  const { ids: owner, unmapped } = imageIdsToHost(ids, { uid: record.uid, gid: record.gid }, idMapping);
  return { owner, unmapped: describeUnmapped(unmapped) };
}

export function posixRecordFromStat(stat: PosixQueueStat, ids: NamespaceIds, targetLabel: string): PosixQueueRecord {
  return { name: stat.name, mode: stat.mode, ...posixOwnerForImage(stat, ids, targetLabel), maxmsg: stat.maxmsg, msgsize: stat.msgsize, curmsgs: stat.curmsgs, qsize: stat.qsize };
}

/** The namespace's POSIX queues; a refused mqueue mount (no CAP_SYS_ADMIN) says how to go without them. */
async function listOrAdvise(ns: NativeNamespace, targetLabel: string): Promise<PosixQueueStat[]> {
  try {
    return await ns.listPosixQueues();
  } catch (error) {
    if (error instanceof IpcCkptError && (error.code === 'EPERM' || error.code === 'EACCES')) {
      error.message += `; the POSIX queues of ${targetLabel} cannot be listed without CAP_SYS_ADMIN: give --sysv-only to leave them out`;
    }
    throw error;
  }
}

function label(name: string): string {
  return `POSIX queue '/${name}'`;
}

/** Why a queue cannot be taken and put back unchanged, or undefined. */
function unsavable(stat: PosixQueueStat): { code: string; text: string } | undefined {
  if (stat.curmsgs === 0) return undefined;
  if (stat.notifyPid !== 0) return { code: 'E_MQ_NOTIFY', text: `${label(stat.name)} has an mq_notify registration (pid ${stat.notifyPid}): putting its messages back would fire it` };
  if (stat.curmsgs >= stat.maxmsg) return { code: 'E_MQ_FULL', text: `${label(stat.name)} is full (${stat.curmsgs} of ${stat.maxmsg} messages): taking one would let a blocked sender's message in` };
  return undefined;
}

export interface PosixSaveSummary {
  queues: number;
  messages: number;
  messageBytes: number;
}

/** The save half: checks everything before any message is taken, then writes the section queue by queue. */
export class PosixQueueSaver {
  readonly summary: PosixSaveSummary = { queues: 0, messages: 0, messageBytes: 0 };
  private queues: PosixQueueStat[] = [];
  private limits: PosixLimits = DEFAULT_LIMITS;
  private ids: NamespaceIds | undefined;

  constructor(
    private readonly ns: NativeNamespace,
    private readonly targetLabel: string,
    private readonly options: { strictV16?: boolean; frozen: boolean; quiescent?: boolean },
  ) {}

  /** Lists the queues and refuses, before anything is taken, what cannot be saved exactly. */
  async prepare(): Promise<void> {
    this.queues = await listOrAdvise(this.ns, this.targetLabel);
    this.limits = posixLimitsFromNative(await this.ns.readMqueueLimits());
    const ids = await namespaceIdsOf(this.ns, this.targetLabel);
    this.ids = ids;
    const withMessages = this.queues.filter((q) => q.curmsgs > 0);
    if (this.options.strictV16 && this.queues.length > 0) {
      throw new IpcCkptError('E_IMAGE_UNSUPPORTED', `${this.targetLabel} holds ${this.queues.length} POSIX queue(s), which v16 has no record for: save with --sysv-only to leave them out, or without --strict-v16`);
    }
    if (withMessages.length > 0 && !this.options.frozen && !this.options.quiescent) {
      throw new IpcCkptError(
        'E_NOT_QUIESCENT',
        `${this.targetLabel} has POSIX queues with messages (${withMessages.map((q) => `'/${q.name}'`).join(', ')}); reading them takes each message out and puts it back, which is exact only while nothing else uses them: ` +
          'save with --freeze -t PID (freezes the workload), or with --quiescent if you know nothing sends or receives meanwhile (e.g. `docker pause`), or with --sysv-only to leave POSIX queues out',
      );
    }
    // Every owner translated once now: an unmapped one is refused before any message is taken.
    for (const queue of this.queues) posixOwnerForImage(queue, ids, this.targetLabel);
    const problems = this.queues.map(unsavable).filter((p) => p !== undefined);
    if (problems.length > 0) {
      throw new IpcCkptError(problems[0].code, `cannot save ${this.targetLabel}, nothing was taken from any queue:\n  ${problems.map((p) => p.text).join('\n  ')}`);
    }
  }

  /** True when the image needs a POSIX section: queues, or limits other than the kernel's defaults. */
  private get needed(): boolean {
    if (this.options.strictV16) return false;
    return this.queues.length > 0 || LIMIT_FIELDS.some(([, field]) => this.limits[field] !== DEFAULT_LIMITS[field]);
  }

  /** Writes the section: every queue's messages are taken, put back and checked before the next queue. */
  async save(write: (part: Buffer) => Promise<void> | void): Promise<void> {
    if (!this.needed) return;
    const encoder = new PosixSectionEncoder(this.options.strictV16);
    await write(encoder.section(this.limits, this.queues.length));
    const saved: PosixQueueRecord[] = [];
    const ids = this.ids!;
    const recordOf = (stat: PosixQueueStat) => posixRecordFromStat(stat, ids, this.targetLabel);
    for (const listed of this.queues) {
      let record = recordOf(listed);
      if (listed.curmsgs === 0) {
        await write(encoder.queue(record));
      } else {
        const taken = await this.ns.takePosixMessages(listed.name);
        const { before, after } = taken;
        const bodyBytes = taken.data.length - taken.count * POSIX_PACKED_HEADER_BYTES;
        if (taken.count !== before.curmsgs || bodyBytes !== before.qsize || after.curmsgs !== before.curmsgs || after.qsize !== before.qsize || after.notifyPid !== 0) {
          throw torn(listed.name, this.targetLabel, `it held ${before.curmsgs} messages (${before.qsize} bytes) before the copy, ${taken.count} (${bodyBytes} bytes) were taken and put back, it holds ${after.curmsgs} (${after.qsize} bytes) after`);
        }
        record = recordOf(before);
        await write(encoder.queue(record));
        await write(encoder.messagesFromPacked(record, taken.data, taken.count));
        this.summary.messages += taken.count;
        this.summary.messageBytes += bodyBytes;
      }
      saved.push(record);
      this.summary.queues++;
    }
    // One listing at the end: every queue still as saved, none created or removed meanwhile.
    const now = new Map((await this.ns.listPosixQueues()).map((q) => [q.name, recordOf(q)]));
    for (const record of saved) {
      const current = now.get(record.name);
      if (!current) throw torn(record.name, this.targetLabel, 'it was removed');
      if (JSON.stringify(current) !== JSON.stringify(record)) throw torn(record.name, this.targetLabel, 'its attributes or message count changed');
      now.delete(record.name);
    }
    for (const name of now.keys()) throw torn(name, this.targetLabel, 'it was created during the save');
  }
}

function torn(name: string, targetLabel: string, what: string): IpcCkptError {
  return new IpcCkptError('E_TORN', `${label(name)} in ${targetLabel} changed while it was copied (${what}): the workload is not quiescent; freeze it (--freeze) and save again`);
}

/** What the restore's validation pass learned of the POSIX section. */
export interface PosixImageSummary {
  limits: PosixLimits;
  queues: PosixQueueRecord[];
}

export interface PosixLimitChange {
  name: MqueueLimitName;
  from: number;
  to: number;
}

/** A queue of the image as restore creates it: uid/gid as the image holds them; `host` as the kernel takes them. */
export type PlannedPosixQueue = PosixQueueRecord & { host: PosixOwner };

export interface PosixRestorePlan {
  queues: PlannedPosixQueue[];
  during: PosixLimitChange[];
  final: PosixLimitChange[];
  conflicts: string[];
}

/** Decides every POSIX change before the first one; a name already present or an owner the target cannot map is a conflict. */
export function planPosixRestore(
  image: PosixImageSummary | undefined,
  existing: PosixQueueStat[],
  current: MqueueLimits,
  keepLimits: boolean,
  target: { ids: NamespaceIds; idMapping: ImageIdMapping | undefined; label: string },
): PosixRestorePlan {
  const plan: PosixRestorePlan = { queues: [], during: [], final: [], conflicts: [] };
  if (!image) return plan;
  const names = new Set(existing.map((q) => q.name));
  for (const queue of image.queues) {
    if (names.has(queue.name)) plan.conflicts.push(`${label(queue.name)} already exists`);
    const { owner, unmapped } = posixOwnerForTarget(queue, target.ids, target.idMapping);
    if (unmapped !== '') {
      const view = target.idMapping ? 'as the saved namespace saw them' : 'host ids: the image has no id-mapping record';
      plan.conflicts.push(`${label(queue.name)}: ${unmapped} (${view}) have no mapping in ${target.ids.describe()}, the owner of ${target.label}`);
    }
    plan.queues.push({ ...queue, host: owner });
  }
  // Without CAP_SYS_RESOURCE mq_open wants maxmsg <= msg_max and msgsize <= msgsize_max, and a free queues_max slot.
  const needed: Partial<Record<MqueueLimitName, number>> = {
    queues_max: existing.length + image.queues.length,
    msg_max: Math.max(0, ...image.queues.map((q) => q.maxmsg)),
    msgsize_max: Math.max(0, ...image.queues.map((q) => q.msgsize)),
  };
  for (const [name, field] of LIMIT_FIELDS) {
    const during = Math.max(current[name], needed[name] ?? 0);
    if (during !== current[name]) plan.during.push({ name, from: current[name], to: during });
    const final = keepLimits ? current[name] : image.limits[field];
    if (final !== during) plan.final.push({ name, from: during, to: final });
  }
  return plan;
}

/** Where tests make a restore fail midway: IPC_CKPT_TEST_FAULT=after-posix-queue:N fails once N POSIX queues exist. */
function injectedFault(created: number): void {
  const fault = /^after-posix-queue:(\d+)$/.exec(process.env.IPC_CKPT_TEST_FAULT ?? '');
  if (fault && created === Number(fault[1])) throw new IpcCkptError('E_INTERNAL', `injected fault after ${created} POSIX queue(s) (IPC_CKPT_TEST_FAULT)`);
}

/** The POSIX half of one restore: its changes, undone by rollback(). */
export class PosixQueueRestorer {
  private readonly created: string[] = [];
  private readonly originals = new Map<MqueueLimitName, number>();
  private queue: PosixQueueRecord | undefined;
  messages = 0;
  messageBytes = 0;

  constructor(
    private readonly ns: NativeNamespace,
    private readonly guardian: () => RollbackGuardian,
    private readonly plan: PosixRestorePlan,
    /** The namespace's own root when it alone may write the limits (NamespaceIds.limitWriter). */
    private readonly limitWriter: SysctlWriter | undefined,
  ) {}

  private async setLimit(change: PosixLimitChange): Promise<void> {
    if (!this.originals.has(change.name)) {
      // The guardian learns the original before the write: we may die right after it.
      const writer = this.limitWriter;
      await this.guardian().registerFileRestore(`/proc/sys/fs/mqueue/${change.name}`, String(change.from), writer && { writeAsUid: writer.uid, writeAsGid: writer.gid });
      this.originals.set(change.name, change.from);
    }
    await this.ns.writeMqueueLimit(change.name, change.to, this.limitWriter);
  }

  /** Handles one decoder event of the POSIX section, in image order. */
  async apply(event: PosixImageEvent): Promise<void> {
    if (event.kind === 'posix-section') {
      for (const change of this.plan.during) await this.setLimit(change);
    } else if (event.kind === 'posix-queue') {
      const record = event.queue;
      const owner = this.ownerOf(record);
      // Registered before mq_open: a kill between the two must not leave the queue behind.
      await this.guardian().registerPosixQueue(record.name);
      try {
        await this.ns.createPosixQueue({ name: record.name, mode: record.mode, ...owner, maxmsg: record.maxmsg, msgsize: record.msgsize });
      } catch (error) {
        await this.guardian().forgetPosixQueue(record.name);
        throw error;
      }
      this.created.push(record.name);
      this.queue = record;
      injectedFault(this.created.length);
    } else if (event.kind === 'posix-messages') {
      if (!this.queue || this.queue.name !== event.queueName) throw new IpcCkptError('E_IMAGE_CORRUPT', 'the image changed between validation and restore');
      this.messages += await this.ns.sendPosixMessages(event.queueName, event.packed, event.count);
      this.messageBytes += event.packed.length - event.count * POSIX_PACKED_HEADER_BYTES;
    }
  }

  /** The plan's host ids of a queue (translated and checked before any change). */
  private ownerOf(record: PosixQueueRecord): PosixOwner {
    const planned = this.plan.queues.find((q) => q.name === record.name);
    if (!planned) throw new IpcCkptError('E_IMAGE_CORRUPT', 'the image changed between validation and restore');
    return planned.host;
  }

  /** After the last event: the final limits, then every created queue checked against its record (owners as host ids). */
  async finish(): Promise<void> {
    for (const change of this.plan.final) await this.setLimit(change);
    if (this.plan.queues.length === 0) return;
    const live = new Map((await this.ns.listPosixQueues()).map((q) => [q.name, q]));
    for (const record of this.plan.queues) {
      const stat = live.get(record.name);
      if (!stat) throw new IpcCkptError('E_VERIFY', `restored ${label(record.name)} is missing`);
      const expected = { ...record, ...record.host };
      for (const field of ['mode', 'uid', 'gid', 'maxmsg', 'msgsize', 'curmsgs', 'qsize'] as const) {
        if (stat[field] !== expected[field]) throw new IpcCkptError('E_VERIFY', `restored ${label(record.name)} has ${field} ${stat[field]}, the image says ${expected[field]}${field === 'uid' || field === 'gid' ? ' (host ids)' : ''}`);
      }
    }
  }

  /** Removes the queues this restore created and puts the limits back; returns the problems. */
  async rollback(): Promise<string[]> {
    const problems: string[] = [];
    for (const name of this.created.reverse()) {
      try {
        await this.ns.removePosixQueue(name);
        await this.guardian().forgetPosixQueue(name);
      } catch (error) {
        problems.push(`${label(name)}: ${(error as Error).message}`);
      }
    }
    problems.push(...(await this.putBackLimits()));
    return problems;
  }

  private async putBackLimits(): Promise<string[]> {
    const problems: string[] = [];
    for (const [name, value] of [...this.originals].reverse()) {
      try {
        await this.ns.writeMqueueLimit(name, value, this.limitWriter);
      } catch (error) {
        problems.push(`${name} back to ${value}: ${(error as Error).message}`);
      }
    }
    this.originals.clear();
    return problems;
  }
}

/** The verify half: each live queue against the image's, attributes and (taken and put back) messages. */
export class PosixQueueComparison {
  private live = new Map<string, PosixQueueStat>();
  private current: { name: string; packed: Buffer; offset: number; index: number; failed: boolean } | undefined;
  queues = 0;
  messages = 0;

  constructor(
    private readonly ns: NativeNamespace,
    private readonly targetLabel: string,
    private readonly differences: string[],
    private readonly options: { quiescent?: boolean; ignoreLimits?: boolean },
    /** The image's id-mapping record as decoded so far (it precedes the POSIX section). */
    private readonly idMapping: () => ImageIdMapping | undefined,
  ) {}

  private ids: NamespaceIds | undefined;

  async prepare(): Promise<void> {
    this.live = new Map((await listOrAdvise(this.ns, this.targetLabel)).map((q) => [q.name, q]));
    this.ids = await namespaceIdsOf(this.ns, this.targetLabel);
  }

  /** Live and image owners, both as the target namespace sees them; an unmapped one is a difference. */
  private ownersInNamespaceView(stat: PosixQueueStat, record: PosixQueueRecord): { live: PosixOwner; image: PosixOwner } {
    const ids = this.ids!;
    const live = ids.namespaceView({ uid: stat.uid, gid: stat.gid });
    const image = imageIdsInNamespaceView(ids, { uid: record.uid, gid: record.gid }, this.idMapping());
    if (live.unmapped.length > 0) this.differences.push(`${label(record.name)}: host ${describeUnmapped(live.unmapped)} of the live queue not mapped in ${ids.userNamespace}`);
    if (image.unmapped.length > 0) this.differences.push(`${label(record.name)}: the image's host ${describeUnmapped(image.unmapped)} not mapped in ${ids.userNamespace}`);
    return { live: live.ids, image: image.ids };
  }

  async onEvent(event: PosixImageEvent): Promise<void> {
    if (event.kind === 'posix-section') {
      if (this.options.ignoreLimits) return;
      const live = posixLimitsFromNative(await this.ns.readMqueueLimits());
      for (const [name, field] of LIMIT_FIELDS) {
        if (live[field] !== event.limits[field]) this.differences.push(`${name} is ${live[field]}, the image has ${event.limits[field]}`);
      }
    } else if (event.kind === 'posix-queue') {
      this.finishQueue();
      this.queues++;
      const record = event.queue;
      const stat = this.live.get(record.name);
      this.live.delete(record.name);
      if (!stat) {
        this.differences.push(`${label(record.name)} is in the image but not in ${this.targetLabel}`);
        return;
      }
      const before = this.differences.length;
      const owners = this.ownersInNamespaceView(stat, record);
      const got = { ...stat, ...owners.live };
      const expected = { ...record, ...owners.image };
      let differs = this.differences.length > before;
      for (const field of ['mode', 'uid', 'gid', 'maxmsg', 'msgsize', 'curmsgs', 'qsize'] as const) {
        if (got[field] !== expected[field]) {
          differs = true;
          const show = (v: number) => (field === 'mode' ? `0${v.toString(8)}` : String(v));
          this.differences.push(`${label(record.name)}: ${field} is ${show(got[field])}, the image has ${show(expected[field])}`);
        }
      }
      if (differs || stat.curmsgs === 0) return;
      if (!this.options.quiescent) {
        throw new IpcCkptError('E_NOT_QUIESCENT', `${label(record.name)} in ${this.targetLabel} holds messages; comparing them takes each message out and puts it back: verify with --quiescent once nothing else uses the queue (or with --sysv-only)`);
      }
      const taken = await this.ns.takePosixMessages(record.name);
      this.current = { name: record.name, packed: taken.data, offset: 0, index: 0, failed: false };
    } else if (event.kind === 'posix-messages') {
      this.messages += event.count;
      const current = this.current;
      if (!current || current.name !== event.queueName || current.failed) return;
      let offset = 0;
      for (let i = 0; i < event.count; i++, current.index++) {
        const length = POSIX_PACKED_HEADER_BYTES + event.packed.readUInt32LE(offset + 4);
        const liveLength = current.offset < current.packed.length ? POSIX_PACKED_HEADER_BYTES + current.packed.readUInt32LE(current.offset + 4) : 0;
        if (liveLength !== length || event.packed.compare(current.packed, current.offset, current.offset + liveLength, offset, offset + length) !== 0) {
          const describe = (packed: Buffer, at: number) => (at < packed.length ? `priority ${packed.readUInt32LE(at)}, ${packed.readUInt32LE(at + 4)} bytes` : 'nothing');
          this.differences.push(`${label(current.name)}: message ${current.index}: image has ${describe(event.packed, offset)}, live queue has ${describe(current.packed, current.offset)}`);
          current.failed = true;
          return;
        }
        offset += length;
        current.offset += liveLength;
      }
    }
  }

  finish(): void {
    this.finishQueue();
    for (const extra of this.live.values()) this.differences.push(`${label(extra.name)} is in ${this.targetLabel} but not in the image`);
    this.live.clear();
  }

  private finishQueue(): void {
    this.current = undefined;
  }
}


/** `check`'s finding on POSIX queues: the namespace's mqueue filesystem can be reached, its limits read, every owner mapped. */
export async function posixCheckFinding(ns: NativeNamespace, ids: NamespaceIds | undefined): Promise<{ status: 'ok' | 'note' | 'fail'; subject: string; text: string; blocks?: Array<'save' | 'restore'> }> {
  try {
    const queues = await ns.listPosixQueues();
    const limits = await ns.readMqueueLimits();
    const withMessages = queues.filter((q) => q.curmsgs > 0).length;
    const unmapped = ids ? queues.map((q) => ({ q, missing: ids.namespaceView({ uid: q.uid, gid: q.gid }).unmapped })).filter(({ missing }) => missing.length > 0) : [];
    if (unmapped.length > 0) {
      const list = unmapped.slice(0, 5).map(({ q, missing }) => `'/${q.name}': host ${describeUnmapped(missing)}`).join('; ');
      return { status: 'fail', subject: 'mqueue', text: `${unmapped.length} POSIX queue(s) have owners the namespace does not map (it sees the overflow id), so save refuses them: ${list}${unmapped.length > 5 ? '; ...' : ''}`, blocks: ['save'] };
    }
    return {
      status: 'ok',
      subject: 'mqueue',
      text:
        `the namespace's mqueue filesystem is reachable (detached mount): ${queues.length} POSIX queue(s), ${withMessages} with messages (saved only with --freeze or --quiescent); ` +
        MQUEUE_LIMIT_NAMES.map((name) => `${name} ${limits[name]}`).join(', '),
    };
  } catch (error) {
    // Only POSIX queues are out of reach: SysV queues still work, with --sysv-only.
    return { status: 'note', subject: 'mqueue', text: `cannot reach the namespace's POSIX queues (${(error as Error).message}): save and verify work with --sysv-only` };
  }
}
