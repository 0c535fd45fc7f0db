// The public API: Promise-based, streams in and out, typed results, IpcCkptError on failure.
export { save } from './save';
export type { SaveOptions, SaveSummary, SaveProgress } from './save';
export { restore, NOT_RESTORABLE_FIELDS } from './restore';
export type { RestoreOptions, RestoreSummary, RestorePlan, SysctlChange } from './restore';
export { verify } from './verify';
export type { VerifyOptions, VerifyResult } from './verify';
export { check } from './check';
export type { CheckResult, CheckFinding } from './check';
export { inspect } from './inspect';
export type { InspectReport } from './inspect';
export { IpcCkptError } from './errors';
export { keepFreedHeap } from './heap-policy';
export type { IpcCkptCode } from './errors';
export type { Target } from './target';
export type { ImageHeader, ImageIdMapping, IdExtent, NamespaceLimits, QueueRecord, MessageRecord } from './image/model';
