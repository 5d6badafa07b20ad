import { Engine } from '../src/engine/engine.js';

/**
 * The integration tests need the real guest: build it (or reuse the cache) once for the run. A
 * missing prerequisite fails the run here with the engine's error and hint, never a silent skip.
 */
export default async function setup(): Promise<void> {
  const engine = new Engine();
  const base = await engine.buildBase({
    onProgress: (e) => {
      if (e.phase !== 'compile' || (e.done ?? 0) % 100 === 0)
        process.stderr.write(`[global-setup] ${e.task}: ${e.phase} ${e.done ?? ''}\n`);
    },
  });
  const verdict = await engine.accel(base);
  process.stderr.write(`[global-setup] base image ready; accelerator ${verdict.accel} (${verdict.reason})\n`);
}
