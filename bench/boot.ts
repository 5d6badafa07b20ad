/**
 * Cold boot and exec round trip of the base microVM, with the host's own process spawn side by side.
 *   npm run bench:boot [-- --runs 10 --execs 50]
 */
import { spawn } from 'node:child_process';
import { cpus } from 'node:os';
import { parseArgs } from 'node:util';
import { Engine } from '../src/engine/engine.js';
import { findQemu } from '../src/engine/vmm/qemu-binary.js';
import { median, row } from './stats.js';

const { values } = parseArgs({
  options: { runs: { type: 'string', default: '10' }, execs: { type: 'string', default: '50' } },
});
const runs = Number(values.runs);
const execs = Number(values.execs);

const engine = new Engine();
const base = await engine.buildBase();
const verdict = await engine.accel(base);
const qemu = await findQemu();
console.log(
  `machine: ${cpus().length} x ${cpus()[0]?.model}; QEMU ${qemu.version}; accel ${verdict.accel} (${verdict.reason})`,
);

const bootMs: number[] = [];
const guestUptimeMs: number[] = [];
const execMs: number[] = [];
for (let i = 0; i < runs; i++) {
  const vm = await engine.boot();
  bootMs.push(vm.readyMs);
  guestUptimeMs.push((await vm.guest.ping()).uptimeMs);
  if (i === 0) {
    for (let j = 0; j < execs; j++) {
      const started = performance.now();
      await vm.exec(['true']);
      execMs.push(performance.now() - started);
    }
  }
  await vm.kill();
}

const hostSpawnMs: number[] = [];
for (let j = 0; j < execs; j++) {
  const started = performance.now();
  await new Promise((resolve) => spawn('true').on('exit', resolve));
  hostSpawnMs.push(performance.now() - started);
}

console.log(row('cold boot: spawn QEMU -> agent ready', bootMs));
console.log(row('  guest uptime when first answered', guestUptimeMs));
console.log(row('exec `true` round trip (guest)', execMs));
console.log(row('spawn `true` on the host (baseline)', hostSpawnMs));
console.log(`exec round trip vs host spawn: ${(median(execMs) / median(hostSpawnMs)).toFixed(1)}x`);
