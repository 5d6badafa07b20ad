import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { Engine } from '../../src/engine/engine.js';
import { StatePaths } from '../../src/common/state-dir.js';
import type { SnapshotMeta } from '../../src/engine/snapshot/meta.js';
import { findQemu } from '../../src/engine/vmm/qemu-binary.js';
import { buildToolTraps } from '../helpers/official-hub.js';
import { IsolatedHome, NOTHING_LEFT } from '../helpers/isolated-home.js';
import { repoRoot } from '../helpers/readme-snippets.js';

/**
 * A pack whose snapshot does not fit this host (here: taken with another QEMU version) installs
 * its images and takes the snapshot again from what it records, instead of being refused.
 */
const cli = join(repoRoot, 'bin', 'forkd.js');
const work = mkdtempSync(join(tmpdir(), 'forkd-portable-'));
const maker = new IsolatedHome();
const traps = buildToolTraps();
/** Its warm-up finishes in the background: a retake that skipped its ready check would miss it. */
const recipe = join(repoRoot, 'test', 'fixtures', 'recipes', 'slow-ready');

afterAll(() => {
  try {
    expect(maker.leftovers()).toEqual(NOTHING_LEFT);
  } finally {
    maker.remove();
    traps.remove();
    rmSync(work, { recursive: true, force: true });
  }
});

function forkd(args: string[], env: NodeJS.ProcessEnv) {
  return spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', env: { ...process.env, ...env } });
}

describe('a pack taken with another QEMU', () => {
  test('installs its images, takes its snapshot again here, and its children fork and answer', async () => {
    // the same QEMU, calling itself 9.9.9 in its QMP greeting (where forkd reads the version):
    // what a pack from a host with another QEMU records
    const qemu = await findQemu();
    const other = join(work, 'qemu-9.9.9');
    writeFileSync(
      other,
      [
        '#!/bin/sh',
        `if [ "$1 $2" = "-machine none" ]; then '${qemu.path}' "$@" | sed 's/"qemu": {[^}]*}/"qemu": {"micro": 9, "minor": 9, "major": 9}/'; exit 0; fi`,
        `exec '${qemu.path}' "$@"`,
        '',
      ].join('\n'),
      { mode: 0o755 },
    );
    const taken = forkd(['snapshot', '--tag', 'elsewhere', '--recipe', recipe], {
      ...maker.env(),
      FORKD_QEMU: other,
    });
    expect(taken.status, taken.stderr).toBe(0);
    const pack = join(work, 'elsewhere.forkd.tar.zst');
    const packed = forkd(['pack', '--tag', 'elsewhere', '--out', pack], maker.env());
    expect(packed.status, packed.stderr).toBe(0);

    // an empty state dir, with no compiler: the pack brings everything
    const home = join(work, 'home');
    const unpacked = forkd(['unpack', pack], { FORKD_HOME: home, PATH: `${traps.dir}:${process.env.PATH}` });
    expect(unpacked.status, unpacked.stderr).toBe(0);
    expect(unpacked.stdout.trim()).toMatch(
      new RegExp(
        `^unpacked elsewhere from ${pack} \\(snapshot taken again here in \\d+\\.\\d s: the pack's snapshot was taken with QEMU 9\\.9\\.9 \\(this host has ${qemu.version.replaceAll('.', '\\.')}\\)\\)$`,
      ),
    );
    expect(traps.ran()).toEqual([]);
    const paths = new StatePaths(home);
    const meta = JSON.parse(readFileSync(join(paths.snapshots(), 'elsewhere', 'meta.json'), 'utf8')) as SnapshotMeta;
    expect(meta).toMatchObject({
      qemuVersion: qemu.version,
      ready: { command: 'test -s /tmp/warm' },
      ports: [8080],
      memoryMiB: 192,
    });
    expect(meta.vm.kernel.startsWith(paths.images('hub'))).toBe(true);

    await using engine = new Engine(paths);
    const children = await engine.fork('elsewhere', 2);
    try {
      const outputs = await Promise.all(children.map((c) => c.exec(['cat', '/tmp/warm'])));
      expect(outputs.map((o) => o.stdout.toString())).toEqual(['warmed-elsewhere\n', 'warmed-elsewhere\n']);
      expect(children.every((c) => c.ports['8080'] !== undefined)).toBe(true);
    } finally {
      await Promise.all(children.map((c) => c.kill()));
    }
    await engine.snapshots.remove('elsewhere');
    await maker.engine.snapshots.remove('elsewhere');
    const qemuLeft = execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' })
      .split('\n')
      .filter((line) => line.includes('qemu-system') && line.includes(home));
    expect(qemuLeft).toEqual([]);
  }, 600_000);
});
