// The id-mapping record (9110): byte layout, strict v16, validation, and the integrity record covering it.
import { decodeImageToMemory, verifyImage } from '../../../lib/image/decoder';
import { encodeImage, ImageEncoder } from '../../../lib/image/encoder';
import { IdMappingLayout, RecordType } from '../../../lib/image/layout';
import type { Image, ImageIdMapping } from '../../../lib/image/model';
import { GOLDEN_MODEL } from './golden';
import { decodeError, resealed } from './support';

const MAPPING: ImageIdMapping = {
  ownUserNamespace: false,
  uid: [{ inside: 0, outside: 100000, count: 65536 }],
  gid: [{ inside: 0, outside: 100000, count: 1000 }, { inside: 1000, outside: 300000, count: 10 }],
};
const WITH_MAPPING: Image = { ...GOLDEN_MODEL, idMapping: MAPPING };
/** HEADER 48 + three utsname BUFFERs of 73 + IPC_NS 56: the record follows IPC_NS. */
const RECORD_AT = 48 + 3 * 73 + 56;

test('writes the id-mapping record right after IPC_NS, byte by byte as docs/FORMAT.md says, and reads it back', async () => {
  const image = encodeImage(WITH_MAPPING);
  const record = image.subarray(RECORD_AT, RECORD_AT + 16 + 3 * 12);
  expect([record.readUInt32LE(0), record.readUInt32LE(4)]).toEqual([9110, 52]);
  expect([record.readUInt16LE(8), record.readUInt16LE(10), record.readUInt32LE(12)]).toEqual([1, 2, 0]);
  const extents = [0, 1, 2].map((i) => [0, 4, 8].map((at) => record.readUInt32LE(16 + 12 * i + at)));
  expect(extents).toEqual([[0, 100000, 65536], [0, 100000, 1000], [1000, 300000, 10]]);
  expect(image.readUInt32LE(RECORD_AT + 52)).toBe(RecordType.IPC);
  expect((await decodeImageToMemory(image)).idMapping).toEqual(MAPPING);
  expect((await verifyImage(image)).idMapping).toEqual(MAPPING);
  const own = encodeImage({ ...GOLDEN_MODEL, idMapping: { ownUserNamespace: true, uid: [{ inside: 0, outside: 0, count: 0xffffffff }], gid: [{ inside: 0, outside: 0, count: 0xffffffff }] } });
  expect(own.readUInt32LE(RECORD_AT + IdMappingLayout.FLAGS)).toBe(1);
});

test('an image without the record (every image before it, strict v16) reads as before, with no mapping', async () => {
  const decoded = await decodeImageToMemory(encodeImage(GOLDEN_MODEL));
  expect(decoded.idMapping).toBeUndefined();
  expect(decoded.queues).toEqual(GOLDEN_MODEL.queues);
});

test('strict v16 refuses the record on both sides: v16 holds host ids and no such record', async () => {
  expect(() => new ImageEncoder({ strictV16: true }).idMapping(MAPPING)).toThrow(expect.objectContaining({ code: 'E_IMAGE_UNSUPPORTED' }));
  const error = await decodeError(encodeImage(WITH_MAPPING), { strictV16: true });
  expect(error).toMatchObject({ code: 'E_IMAGE_UNSUPPORTED', offset: RECORD_AT });
  expect(error.message).toMatch(/id-mapping record ID_MAPPING \(9110\) is not v16/);
});

test('the integrity record covers it: one changed id is caught', async () => {
  const image = encodeImage(WITH_MAPPING);
  image.writeUInt32LE(200000, RECORD_AT + 16 + IdMappingLayout.EXTENT_OUTSIDE);
  expect((await decodeError(image)).message).toMatch(/integrity check failed/);
});

test.each([
  ['unknown flag bits', (b: Buffer) => b.writeUInt32LE(6, RECORD_AT + IdMappingLayout.FLAGS), /ID_MAPPING flags 0x6 has unknown bits/],
  ['a length that does not match its extent counts', (b: Buffer) => b.writeUInt16LE(3, RECORD_AT + IdMappingLayout.GID_EXTENTS), /ID_MAPPING len 52, its 1 uid and 3 gid extents need 64/],
  ['overlapping inside ranges', (b: Buffer) => b.writeUInt32LE(999, RECORD_AT + 16 + 24), /gid_map extents overlap inside at 999/],
  ['a zero count', (b: Buffer) => b.writeUInt32LE(0, RECORD_AT + 16 + IdMappingLayout.EXTENT_COUNT), /uid_map extent 0 \(0 100000 0\) has a count outside 1\.\.4294967295/],
  ['a range past 2^32', (b: Buffer) => b.writeUInt32LE(0xffffffff, RECORD_AT + 16 + IdMappingLayout.EXTENT_OUTSIDE), /uid_map extent 0 .* runs past 4294967295/],
])('refuses a record with %s as corrupt, at its offset', async (_name, edit, message) => {
  const error = await decodeError(resealed(encodeImage(WITH_MAPPING), edit));
  expect(error).toMatchObject({ code: 'E_IMAGE_CORRUPT', offset: RECORD_AT });
  expect(error.message).toMatch(message);
});
