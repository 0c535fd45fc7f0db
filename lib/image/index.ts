// The image codec's public surface.
export * from './model';
export * from './layout';
export { ImageEncoder, encodeImage, type EncoderOptions } from './encoder';
export { ImageDigest } from './digest';
export {
  decodeImage,
  decodeImageToMemory,
  verifyImage,
  collectImage,
  DEFAULT_MESSAGE_BATCH_BYTES,
  type DecoderOptions,
  type ImageEvent,
  type ImageInput,
  type ImageSummary,
} from './decoder';
export { packMessages, unpackMessages, packedMessageSizes, PACKED_MESSAGE_HEADER_BYTES } from './packed';
export { PosixSectionEncoder, packPosixMessages, unpackPosixMessages, type PosixImageEvent } from './posix-queues';
