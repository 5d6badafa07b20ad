import { renameSync, writeFileSync } from 'node:fs';

/**
 * Writes `value` as JSON to `file` so readers see the old file or the new one, never half of
 * one: a temporary beside it (named by this process, so concurrent writers do not collide), then
 * a rename.
 */
export function writeJsonAtomic(file: string, value: unknown, options: { mode?: number; pretty?: boolean } = {}): void {
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(value, null, options.pretty ? 2 : undefined), { mode: options.mode ?? 0o644 });
  renameSync(tmp, file);
}
