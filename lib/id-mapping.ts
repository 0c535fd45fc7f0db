// Owner and creator ids as an IPC namespace sees them. The kernel reports and takes ids in ipc-ckpt's
// own user namespace (the host's); inside an IPC namespace owned by another user namespace the same
// queue shows the ids that user namespace's uid_map/gid_map give them. Images hold the namespace's own
// view (docs/FORMAT.md, the id-mapping record): save translates host -> namespace, restore namespace -> host.
import { IpcCkptError } from './errors';
import type { IdExtent, ImageIdMapping } from './image/model';
import type { NativeNamespace, OwningUserNamespace, SysctlWriter } from './native';

export type IdKind = 'uid' | 'gid';

/** The id fields of a SysV queue (and of any owner with uid/gid): which map each goes through. */
export const ID_FIELDS = { uid: 'uid', gid: 'gid', cuid: 'uid', cgid: 'gid' } as const satisfies Record<string, IdKind>;
export type IdField = keyof typeof ID_FIELDS;
/** The id fields in ID_FIELDS' order, as a list. */
export const ID_FIELD_LIST = Object.keys(ID_FIELDS) as IdField[];
export type IdFields = Partial<Record<IdField, number>>;

/** The identity map of a user namespace's own view: every u32 id but (uid_t)-1. */
const IDENTITY: IdExtent[] = [{ inside: 0, outside: 0, count: 0xffffffff }];

/** Parses /proc/PID/uid_map or gid_map text: one "INSIDE OUTSIDE COUNT" line per extent. */
export function parseIdMap(text: string, what: string): IdExtent[] {
  const extents: IdExtent[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    const fields = line.trim().split(/\s+/).map(Number);
    if (fields.length !== 3 || !fields.every((n) => Number.isSafeInteger(n) && n >= 0)) {
      throw new IpcCkptError('E_INTERNAL', `${what}: cannot parse the line '${line.trim()}' (expected INSIDE OUTSIDE COUNT)`);
    }
    extents.push({ inside: fields[0], outside: fields[1], count: fields[2] });
  }
  return extents;
}

/** "0 100000 65536" lines, as /proc shows a map (for messages and docs). */
export function formatIdMap(extents: IdExtent[]): string {
  return extents.length === 0 ? '(no ids mapped)' : extents.map((e) => `${e.inside} ${e.outside} ${e.count}`).join(', ');
}

function translate(extents: IdExtent[], id: number, from: 'inside' | 'outside'): number | undefined {
  const to = from === 'inside' ? 'outside' : 'inside';
  for (const extent of extents) {
    if (id >= extent[from] && id < extent[from] + extent.count) return extent[to] + (id - extent[from]);
  }
  return undefined;
}

/** One id field that the map in question does not cover. */
export interface UnmappedId {
  field: IdField;
  id: number;
}

/** The same fields, translated; `unmapped` lists the ones the map lacks (left as they were in `ids`). */
export interface IdTranslation<T extends IdFields> {
  ids: T;
  unmapped: UnmappedId[];
}

/** The user namespace that owns one IPC namespace, and how its ids map to ipc-ckpt's own. */
export class NamespaceIds {
  private constructor(
    /** The IPC namespace belongs to ipc-ckpt's own user namespace: ids are the same on both sides. */
    readonly ownUserNamespace: boolean,
    readonly uidMap: IdExtent[],
    readonly gidMap: IdExtent[],
    /** 'user:[INODE]', for messages. */
    readonly userNamespace: string,
  ) {}

  static fromOwner(owner: OwningUserNamespace, label: string): NamespaceIds {
    const name = `user:[${owner.inode}]`;
    if (owner.callerOwn) return new NamespaceIds(true, IDENTITY, IDENTITY, name);
    return new NamespaceIds(false, parseIdMap(owner.uidMap, `uid_map of ${name} (owner of ${label})`), parseIdMap(owner.gidMap, `gid_map of ${name} (owner of ${label})`), name);
  }

  /** What the image's id-mapping record holds for a namespace saved through this one. */
  get imageMapping(): ImageIdMapping {
    return { ownUserNamespace: this.ownUserNamespace, uid: this.uidMap, gid: this.gidMap };
  }

  /** A host id (ipc-ckpt's view) as the namespace sees it; undefined when the namespace does not map it. */
  toNamespace(kind: IdKind, hostId: number): number | undefined {
    return translate(kind === 'uid' ? this.uidMap : this.gidMap, hostId, 'outside');
  }

  /** The host id behind an id of the namespace's own view; undefined when the namespace does not map it. */
  toHost(kind: IdKind, namespaceId: number): number | undefined {
    return translate(kind === 'uid' ? this.uidMap : this.gidMap, namespaceId, 'inside');
  }

  /** The namespace's own root, who alone may write its msgmax/msgmnb/msgmni; undefined when ipc-ckpt's own ids do. */
  get limitWriter(): SysctlWriter | undefined {
    if (this.ownUserNamespace) return undefined;
    const uid = this.toHost('uid', 0);
    // With 0 unmapped the kernel gives the sysctls to the initial namespace's root.
    if (uid === undefined) return undefined;
    return { uid, gid: this.toHost('gid', 0) ?? process.getegid?.() ?? 0 };
  }

  /** "user:[4026532176] (uid_map 0 100000 65536; gid_map 0 100000 65536)", or that it is ipc-ckpt's own. */
  describe(): string {
    if (this.ownUserNamespace) return `${this.userNamespace} (ipc-ckpt's own user namespace: ids are not translated)`;
    return `${this.userNamespace} (uid_map ${formatIdMap(this.uidMap)}; gid_map ${formatIdMap(this.gidMap)})`;
  }

  /** Host ids -> the namespace's own view, field by field (save; live ids shown by verify and check). */
  namespaceView<T extends IdFields>(ids: T): IdTranslation<T> {
    return this.each(ids, (kind, id) => this.toNamespace(kind, id));
  }

  /** The namespace's own view -> host ids, field by field (restore of a namespace-relative image). */
  hostIds<T extends IdFields>(ids: T): IdTranslation<T> {
    return this.each(ids, (kind, id) => this.toHost(kind, id));
  }

  private each<T extends IdFields>(ids: T, map: (kind: IdKind, id: number) => number | undefined): IdTranslation<T> {
    const out: T = { ...ids };
    const unmapped: UnmappedId[] = [];
    // A plain loop over a fixed list: restore plans tens of thousands of queues through here.
    for (let f = 0; f < ID_FIELD_LIST.length; f++) {
      const field = ID_FIELD_LIST[f];
      const id = ids[field];
      if (id === undefined) continue;
      const mapped = map(ID_FIELDS[field], id);
      if (mapped === undefined) unmapped.push({ field, id });
      else out[field] = mapped as T[IdField];
    }
    return { ids: out, unmapped };
  }
}

/**
 * How an image's ids read: namespace-relative (it has the id-mapping record) or host ids as the saving
 * host saw them (no record: strict v16 images and every image written before the record existed).
 */
export function imageIdsAreNamespaceRelative(idMapping: ImageIdMapping | undefined): boolean {
  return idMapping !== undefined;
}

/** Image ids -> host ids of a target (restore). Host-id images keep their ids, which the target must still map. */
export function imageIdsToHost<T extends IdFields>(target: NamespaceIds, ids: T, idMapping: ImageIdMapping | undefined): IdTranslation<T> {
  if (imageIdsAreNamespaceRelative(idMapping)) return target.hostIds(ids);
  const { unmapped } = target.namespaceView(ids);
  return { ids: { ...ids }, unmapped };
}

/** Image ids as the target namespace sees them (verify). Host-id images go through the target's map. */
export function imageIdsInNamespaceView<T extends IdFields>(target: NamespaceIds, ids: T, idMapping: ImageIdMapping | undefined): IdTranslation<T> {
  return imageIdsAreNamespaceRelative(idMapping) ? { ids: { ...ids }, unmapped: [] } : target.namespaceView(ids);
}

/** "uid 5, cgid 7" */
export function describeUnmapped(unmapped: UnmappedId[]): string {
  return unmapped.map((u) => `${u.field} ${u.id}`).join(', ');
}

const cache = new WeakMap<NativeNamespace, Promise<NamespaceIds>>();

/** The owning user namespace of a session's IPC namespace, read once per session (save, restore, verify, check and the limits share it). */
export function namespaceIdsOf(ns: NativeNamespace, label: string): Promise<NamespaceIds> {
  let ids = cache.get(ns);
  if (ids === undefined) {
    ids = ns.userNamespace().then((owner) => NamespaceIds.fromOwner(owner, label));
    cache.set(ns, ids);
  }
  return ids;
}
