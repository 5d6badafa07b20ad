import type { OnProgress } from '../engine/progress.js';
import type { PackProgress } from './pack.js';

const MiB = 1024 * 1024;

/** Byte counts as engine progress events, with the rate and the time left in the detail. */
export function byteProgress(task: string, phase: string, onProgress: OnProgress): PackProgress {
  const started = performance.now();
  return (done, total) => {
    const seconds = (performance.now() - started) / 1000;
    const rate = seconds > 0 ? done / seconds : 0;
    const eta = rate > 0 && done > 0 ? `${Math.round((total - done) / rate)}s` : '?';
    onProgress({
      task,
      phase,
      done: Math.round(done / MiB),
      total: Math.round(total / MiB),
      detail: `MiB, ${(rate / MiB).toFixed(0)} MiB/s, ETA ${eta}`,
    });
  };
}
