import { execFileSync } from 'node:child_process';
import { chmodSync, cpSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { repoRoot } from './readme-snippets.js';

export interface PackedPackage {
  tarball: string;
  /** Paths inside the tarball (without the leading `package/`). */
  files: string[];
  /** The tarball's size in bytes. */
  size: number;
  remove(): void;
}

/**
 * `npm pack` of a clean copy of this repository: the files git tracks, as the work tree has them,
 * and nothing built (no lib/, no dist/ leftovers), so the package's prepare script must build what it
 * ships. Dependencies come from this checkout's node_modules (linked, read only). `extra` files are
 * written into the copy first, as a release adds its official-packs.json.
 */
export function packFromCleanCopy(extra: Record<string, string> = {}): PackedPackage {
  const dir = mkdtempSync(join(tmpdir(), 'forkd-pack-'));
  chmodSync(dir, 0o755); // the tarball is installed by another user
  const copy = join(dir, 'forkd-action');
  const tracked = execFileSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], {
    cwd: repoRoot,
    encoding: 'utf8',
  })
    .split('\0')
    .filter(Boolean);
  for (const file of tracked) {
    try {
      mkdirSync(dirname(join(copy, file)), { recursive: true });
      cpSync(join(repoRoot, file), join(copy, file));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err; // deleted in the work tree
    }
  }
  for (const [file, body] of Object.entries(extra)) writeFileSync(join(copy, file), body);
  symlinkSync(join(repoRoot, 'node_modules'), join(copy, 'node_modules'));
  const out = join(dir, 'out');
  mkdirSync(out);
  const [report] = JSON.parse(
    execFileSync('npm', ['pack', '--json', '--pack-destination', out], {
      cwd: copy,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    }),
  ) as Array<{ filename: string; size: number; files: Array<{ path: string }> }>;
  rmSync(copy, { recursive: true, force: true });
  const [tarball] = readdirSync(out);
  return {
    tarball: join(out, tarball!),
    files: report!.files.map((f) => f.path),
    size: report!.size,
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}
