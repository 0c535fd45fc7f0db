// Translating queue ids between the host's view and a user-namespaced IPC namespace's own view.
import { imageIdsInNamespaceView, imageIdsToHost, NamespaceIds, parseIdMap } from '../../lib/id-mapping';
import type { OwningUserNamespace } from '../../lib/native';

const owner = (uidMap: string, gidMap = uidMap): OwningUserNamespace => ({ device: '4', inode: '4026532176', callerOwn: false, uidMap, gidMap, mapSource: 'process', mapPid: 42 });
const CONTAINER = NamespaceIds.fromOwner(owner('         0     100000      65536\n', '0 100000 1000\n1000 500000 5\n'), 'test');
const OWN = NamespaceIds.fromOwner({ ...owner(''), callerOwn: true, mapSource: 'own', mapPid: 0 }, 'test');

test('parses /proc uid_map text and refuses what is not one', () => {
  expect(parseIdMap('0 100000 65536\n  70000 1 2\n', 'x')).toEqual([{ inside: 0, outside: 100000, count: 65536 }, { inside: 70000, outside: 1, count: 2 }]);
  expect(() => parseIdMap('0 100000\n', 'uid_map of x')).toThrow(/uid_map of x: cannot parse the line '0 100000'/);
});

test('host ids -> the namespace view and back, extent by extent; ids outside every extent are unmapped', () => {
  expect(CONTAINER.toNamespace('uid', 101234)).toBe(1234);
  expect(CONTAINER.toHost('uid', 1234)).toBe(101234);
  expect(CONTAINER.toHost('gid', 1002)).toBe(500002);
  expect(CONTAINER.toNamespace('gid', 500004)).toBe(1004);
  expect(CONTAINER.toNamespace('uid', 99999)).toBeUndefined();
  expect(CONTAINER.toHost('uid', 65536)).toBeUndefined();
  expect(CONTAINER.toHost('gid', 1005)).toBeUndefined();
  expect(CONTAINER.namespaceView({ uid: 101000, gid: 100005, cuid: 5, cgid: 500001 })).toEqual({ ids: { uid: 1000, gid: 5, cuid: 5, cgid: 1001 }, unmapped: [{ field: 'cuid', id: 5 }] });
});

test('the namespace root writes the limits; ipc-ckpt\'s own user namespace needs no switch', () => {
  expect(CONTAINER.limitWriter).toEqual({ uid: 100000, gid: 100000 });
  expect(OWN.limitWriter).toBeUndefined();
  expect(OWN.hostIds({ uid: 1000, gid: 7 })).toEqual({ ids: { uid: 1000, gid: 7 }, unmapped: [] });
  expect(CONTAINER.describe()).toBe('user:[4026532176] (uid_map 0 100000 65536; gid_map 0 100000 1000, 1000 500000 5)');
});

test('a namespace-relative image goes through the target map; a host-id image keeps its ids if the target maps them', () => {
  const mapping = { ownUserNamespace: true, uid: [], gid: [] };
  expect(imageIdsToHost(CONTAINER, { uid: 1000, cgid: 1001 }, mapping)).toEqual({ ids: { uid: 101000, cgid: 500001 }, unmapped: [] });
  expect(imageIdsToHost(CONTAINER, { uid: 101000, cgid: 1001 }, undefined)).toEqual({ ids: { uid: 101000, cgid: 1001 }, unmapped: [{ field: 'cgid', id: 1001 }] });
  expect(imageIdsInNamespaceView(CONTAINER, { uid: 101000 }, undefined)).toEqual({ ids: { uid: 1000 }, unmapped: [] });
  expect(imageIdsInNamespaceView(CONTAINER, { uid: 7 }, mapping)).toEqual({ ids: { uid: 7 }, unmapped: [] });
});
