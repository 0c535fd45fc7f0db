// The image's integrity checksum: SHA-256 of every byte before the integrity record.
import { createHash, type Hash } from 'node:crypto';

/** A running SHA-256 over the bytes written so far; copy() marks a point the writer can roll back to. */
export class ImageDigest {
  private readonly hash: Hash;

  constructor(hash?: Hash) {
    this.hash = hash ?? createHash('sha256');
  }

  update(bytes: Uint8Array): this {
    this.hash.update(bytes);
    return this;
  }

  /** An independent digest of the same bytes so far. */
  copy(): ImageDigest {
    return new ImageDigest(this.hash.copy());
  }

  /** The 32-byte SHA-256; the digest cannot be updated afterwards. */
  digest(): Buffer {
    return this.hash.digest();
  }
}
