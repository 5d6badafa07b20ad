/**
 * A first run: an empty state dir to `forkd demo` finished, with the official packs pulled from a
 * Hub on loopback, against everything built here (FORKD_BUILD=local: the guest kernel compiled,
 * the agent and initramfs made), side by side in one run:
 *   npm run build && npm run bench:first-run [-- --runs N]
 * The packs are made first by the release script (not timed); the package copy that pulls them
 * ships their pins, as a released forkd-action does.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { findQemu } from '../src/engine/vmm/qemu-binary.js';
import { LoopbackHub, makeOfficialPacks, packageWithPins, run } from '../test/helpers/official-hub.js';
import { median, row } from './stats.js';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '1' } } });
const runs = Number(values.runs);
const work = mkdtempSync(join(tmpdir(), 'bench-first-run-'));
const qemu = await findQemu();
console.log(`machine: ${cpus().length} x ${cpus()[0]?.model}; QEMU ${qemu.version}`);

const pins = makeOfficialPacks(join(work, 'release'), []);
const hub = await LoopbackHub.serve(join(work, 'release'));
const pkg = packageWithPins(pins);

/** Seconds from an empty state dir to `forkd demo` done, and the accelerator it ran with. */
async function firstRun(env: NodeJS.ProcessEnv): Promise<{ s: number; accel: string }> {
  const home = mkdtempSync(join(work, 'home-'));
  try {
    const started = performance.now();
    const r = await run(process.execPath, [pkg.cli, 'demo', '--json'], {
      ...process.env,
      FORKD_HOME: home,
      FORKD_HUB_URL: hub.url,
      ...env,
    });
    if (r.status !== 0) throw new Error(`forkd demo failed: ${r.stderr}`);
    return { s: (performance.now() - started) / 1000, accel: (JSON.parse(r.stdout) as { accel: string }).accel };
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
}

try {
  const pulled: number[] = [];
  const built: number[] = [];
  let accel = '';
  for (let i = 0; i < runs; i++) {
    const asked = hub.requests.length;
    const p = await firstRun({});
    if (!hub.requests.slice(asked).includes(pins.packs.base!.file)) throw new Error('the pulled run did not pull');
    pulled.push(p.s);
    accel = p.accel;
    built.push((await firstRun({ FORKD_BUILD: 'local' })).s);
  }
  console.log(`accelerator: ${accel}; base pack ${(pins.packs.base!.size / 1024 ** 2).toFixed(1)} MiB`);
  console.log(row('first forkd demo, official packs pulled', pulled, 's'));
  console.log(row('first forkd demo, built here', built, 's'));
  console.log(`pulled vs built: ${(median(built) / median(pulled)).toFixed(1)}x faster`);
} finally {
  await hub.close();
  pkg.remove();
  rmSync(work, { recursive: true, force: true });
}
