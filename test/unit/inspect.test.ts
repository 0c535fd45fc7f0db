// inspect: a verified, JSON-able report of an image and its table form.
import { encodeImage } from '../../lib/image/encoder';
import { IpcCkptError } from '../../lib/errors';
import { formatInspectJson, formatInspectTable, inspect } from '../../lib/inspect';
import type { Image } from '../../lib/image/model';
import { GOLDEN_IMAGE, GOLDEN_MODEL } from './image/golden';
import { inChunks } from './image/support';

describe('inspect report', () => {
  test('reports the header, limits and every saved queue field', async () => {
    const report = await inspect(inChunks(GOLDEN_IMAGE, [13]));
    expect(report.format).toEqual({ name: expect.stringContaining('v16'), revision: 1, extensions: ['integrity-sha256', 'wide-m_type'], bytes: GOLDEN_IMAGE.length });
    expect(report.kernel).toEqual({ release: '6.18.0', version: '#1 SMP', machine: 'x86_64', major: 6, minor: 18, patch: 0 });
    expect(report.arch).toEqual({ id: 2, name: 'x86-64' });
    expect(report.time).toEqual({ seconds: '1694498816', iso: '2023-09-12T06:06:56Z' });
    expect(report.limits).toMatchObject({ msgCtlmax: 8192, msgCtlmnb: 16384, msgCtlmni: 32000, shmCtlmax: '4294967296' });
    expect(report.queues).toEqual([
      {
        id: 32769,
        index: 1,
        seq: 1,
        key: 0x1234abcd,
        keyHex: '0x1234abcd',
        mode: 0o640,
        modeOctal: '0640',
        uid: 1000,
        gid: 100,
        cuid: 0,
        cgid: 0,
        stime: { seconds: String(0x66000001), iso: new Date(0x66000001 * 1000).toISOString().replace('.000Z', 'Z') },
        rtime: { seconds: '0', iso: null },
        ctime: { seconds: String(0x66000000), iso: new Date(0x66000000 * 1000).toISOString().replace('.000Z', 'Z') },
        cbytes: '3',
        qnum: '2',
        qbytes: '16384',
        lspid: 42,
        lrpid: 0,
        offset: 339,
      },
    ]);
    expect(report.totals).toEqual({ queues: 1, messages: 2, messageBytes: 3 });
    expect(report.integrity).toEqual({ algorithm: 'SHA-256', recordType: 9100, digest: GOLDEN_IMAGE.subarray(526, 558).toString('hex'), verified: true });
  });

  test('with messages, each message has its type, size and body in base64', async () => {
    const report = await inspect(GOLDEN_IMAGE, { messages: true });
    expect(report.queues[0].messages).toEqual([
      { index: 0, type: '1', size: 3, body: Buffer.from('abc').toString('base64') },
      { index: 1, type: '4294967296', size: 0, body: '' },
    ]);
  });

  test('64-bit values beyond 2^53 survive as decimal strings in JSON', async () => {
    const big = 2n ** 64n - 1n;
    /** The largest time64_t, the most a queue's time can be. */
    const latest = 2n ** 63n - 1n;
    const image: Image = {
      ...GOLDEN_MODEL,
      header: { ...GOLDEN_MODEL.header, uflags: big },
      queues: [{ queue: { ...GOLDEN_MODEL.queues[0].queue, qbytes: big, stime: latest, qnum: 1n, cbytes: 0n }, messages: [{ type: 2n ** 63n - 1n, body: Buffer.alloc(0) }] }],
    };
    const parsed = JSON.parse(formatInspectJson(await inspect(encodeImage(image), { messages: true })));
    expect(parsed.uflags).toBe(big.toString());
    expect(parsed.queues[0].qbytes).toBe(big.toString());
    expect(parsed.queues[0].stime).toEqual({ seconds: latest.toString(), iso: null });
    expect(parsed.queues[0].messages[0].type).toBe('9223372036854775807');
  });

  test('a corrupt image is an error, not a report', async () => {
    const flipped = Buffer.from(GOLDEN_IMAGE);
    flipped[470] ^= 0x40;
    await expect(inspect(flipped)).rejects.toBeInstanceOf(IpcCkptError);
  });
});

describe('inspect table', () => {
  test('shows the header lines and one row per queue with key in hex, mode in octal and dates', async () => {
    const table = formatInspectTable(await inspect(GOLDEN_IMAGE));
    expect(table).toMatch(/^kernel: +6\.18\.0 #1 SMP x86_64$/m);
    expect(table).toMatch(/^arch: +x86-64 \(2\)$/m);
    expect(table).toMatch(/^time: +2023-09-12T06:06:56Z \(1694498816\)$/m);
    expect(table).toMatch(/^limits: +msgmax 8192, msgmnb 16384, msgmni 32000;/m);
    const lines = table.split('\n');
    const headerIndex = lines.findIndex((line) => line.startsWith('ID'));
    expect(lines[headerIndex].split(/\s+/)).toEqual(['ID', 'KEY', 'MODE', 'OWNER', 'CREATOR', 'QNUM', 'CBYTES', 'QBYTES', 'STIME', 'RTIME', 'CTIME', 'LSPID', 'LRPID']);
    const stime = new Date(0x66000001 * 1000).toISOString().replace('.000Z', 'Z');
    const ctime = new Date(0x66000000 * 1000).toISOString().replace('.000Z', 'Z');
    expect(lines[headerIndex + 1].split(/\s+/)).toEqual(['32769', '0x1234abcd', '0640', '1000:100', '0:0', '2', '3', '16384', stime, '-', ctime, '42', '0']);
  });

  test('with messages, lists each message with a hex and ASCII preview', async () => {
    const table = formatInspectTable(await inspect(GOLDEN_IMAGE, { messages: true }), { messages: true });
    expect(table).toMatch(/^ {2}#0 +type 1 +size 3 +61 62 63 {2}\|abc\|$/m);
    expect(table).toMatch(/^ {2}#1 +type 4294967296 +size 0 +\(empty\)$/m);
  });

  test('an image without queues prints only the header lines', async () => {
    const table = formatInspectTable(await inspect(encodeImage({ ...GOLDEN_MODEL, queues: [] })));
    expect(table).toMatch(/^queues: +0, messages 0, 0 bytes$/m);
    expect(table).not.toMatch(/^ID/m);
  });
});
