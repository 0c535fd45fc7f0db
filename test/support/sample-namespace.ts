// A namespace holding every case save and restore must carry: modes 0600/0640/0000, IPC_PRIVATE,
// an id with seq > 0 listed before a smaller id, creators and owners other than root, 0/1/msgmax/100000-byte messages,
// types 1 to 2^63-1, qbytes above msgmnb, an empty queue, and non-default msgmax/msgmnb/msgmni.
import { execFileSync } from 'node:child_process';
import { buildMsgqTool, msgqTool } from './msgq-tool';

export const SAMPLE_LIMITS = { msgmax: 50000, msgmnb: 20000, msgmni: 100 };
/** Larger than SAMPLE_LIMITS.msgmax: saving it needs msgmax raised for the copy. */
export const BIG_MESSAGE_BYTES = 100000;

/** Runs msgq-tool in the namespace under other real and effective ids (the queue's creator). */
function msgqToolAs(nsPath: string, uid: number, gid: number, ...args: Array<string | number>): string {
  return execFileSync('nsenter', [`--ipc=${nsPath}`, '--', 'setpriv', `--reuid=${uid}`, `--regid=${gid}`, '--clear-groups', buildMsgqTool(), ...args.map(String)], { encoding: 'utf8' });
}

export function populateSample(nsPath: string): void {
  const tool = (...args: Array<string | number | bigint>) => msgqTool(nsPath, ...args).trim();
  tool('sysctl', 'msgmax', 200000);
  tool('sysctl', 'msgmnb', 2000000);
  // 0600 at an id whose seq is 3, with messages of 0 and 1 bytes and msgmax bytes, types 1 and 2^62.
  const a = Number(tool('create', '0x1001', '600', '--id', 3 * 32768 + 5));
  tool('send', a, 1, 0);
  tool('send', a, 2, 1, 7);
  tool('send', a, 2n ** 62n, SAMPLE_LIMITS.msgmax, 8);
  tool('send', a, 1, 8192, 9);
  // 0640, created by uid 1000 / gid 1001, owned by 2000:2001.
  const b = Number(msgqToolAs(nsPath, 1000, 1001, 'create', '0x1002', '640').trim());
  tool('send', b, 2n ** 63n - 1n, 300, 10);
  tool('send', b, 2n ** 31n, 17, 11);
  tool('set', b, 2000, 2001, '640', 16384);
  // IPC_PRIVATE, mode 0000, holding a message larger than the final msgmax.
  const c = Number(tool('create', 0, '000'));
  tool('send', c, 3, BIG_MESSAGE_BYTES, 12);
  tool('set', c, 0, 0, '000', 1000000);
  // An empty queue whose qbytes is far above msgmnb.
  const d = Number(tool('create', '0x1004', '666'));
  tool('set', d, 0, 0, '644', 1500000);
  // Slot 6 with seq 0 lists after slot 5 with seq 3: the kernel's (and the image's) order is by slot, not id.
  const e = Number(tool('create', '0x1006', '600', '--id', 6));
  tool('send', e, 6, 6, 13);
  tool('sysctl', 'msgmax', SAMPLE_LIMITS.msgmax);
  tool('sysctl', 'msgmnb', SAMPLE_LIMITS.msgmnb);
  tool('sysctl', 'msgmni', SAMPLE_LIMITS.msgmni);
}
