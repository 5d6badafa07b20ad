import cliProgress from 'cli-progress';
import type { OnProgress, ProgressEvent } from '../engine/progress.js';

const PLAIN_INTERVAL_MS = 10_000;

/**
 * Renders engine progress on stderr: a bar on a terminal, a line every few seconds otherwise
 * (CI logs), nothing with --json or --quiet.
 */
export function progressRenderer(options: { quiet: boolean }): { onProgress: OnProgress; stop: () => void } {
  if (options.quiet) return { onProgress: () => {}, stop: () => {} };
  const started = Date.now();
  const elapsed = () => `${Math.round((Date.now() - started) / 1000)}s`;
  if (process.stderr.isTTY) {
    let bar: cliProgress.SingleBar | undefined;
    const stop = () => {
      bar?.stop();
      bar = undefined;
    };
    return {
      stop,
      onProgress: (e: ProgressEvent) => {
        if (e.total !== undefined && e.done !== undefined) {
          if (!bar) {
            bar = new cliProgress.SingleBar(
              {
                format: `${e.task} ${e.phase} [{bar}] {percentage}% | {value}/{total} | {duration_formatted} | {detail}`,
                stream: process.stderr,
              },
              cliProgress.Presets.shades_classic,
            );
            bar.start(e.total, 0, { detail: '' });
          }
          bar.update(e.done, { detail: e.detail ?? '' });
          return;
        }
        stop();
        process.stderr.write(`${e.task}: ${e.phase}${e.detail ? ` ${e.detail}` : ''} (${elapsed()})\n`);
      },
    };
  }
  let lastLine = 0;
  return {
    stop: () => {},
    onProgress: (e: ProgressEvent) => {
      const counted = e.total !== undefined && e.done !== undefined;
      if (counted && Date.now() - lastLine < PLAIN_INTERVAL_MS) return;
      lastLine = Date.now();
      const amount = counted ? ` ${Math.round((100 * e.done!) / e.total!)}% (${e.done}/${e.total})` : '';
      process.stderr.write(`${e.task}: ${e.phase}${amount}${e.detail ? ` ${e.detail}` : ''} (${elapsed()})\n`);
    },
  };
}
