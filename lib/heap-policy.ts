// The heap policy of a process given over to saving and restoring: the command line sets it; a
// program using the API opts in (it is process-wide and cannot be undone).
import { loadNative } from './native';

/**
 * Allocations below this come from the heap instead of a fresh mmap. A save or restore allocates and
 * frees buffers of megabytes at a high rate (the addon's copies and Node's Buffers alike), and with
 * glibc's defaults each one is unmapped and faulted in anew: a 1 GiB save to stdout took 480,000 page
 * faults and 1.86 s, with this policy 27,000 and 0.89 s (peak RSS 100 -> 122 MB).
 */
export const HEAP_MMAP_THRESHOLD_BYTES = 32 << 20;
/** Up to this much free heap is kept for reuse instead of being returned to the kernel. */
export const HEAP_TRIM_THRESHOLD_BYTES = 64 << 20;

/** mallopt for the whole process: keep freed heap for reuse (see HEAP_MMAP_THRESHOLD_BYTES). */
export function keepFreedHeap(): void {
  loadNative().keepFreedHeap(HEAP_MMAP_THRESHOLD_BYTES, HEAP_TRIM_THRESHOLD_BYTES);
}
