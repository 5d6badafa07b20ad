/**
 * "A test worker wants a browser" to "its first page is rendered", side by side in one run:
 *   node --import tsx bench/playwright-browser.ts [--runs 5]
 *   (a) fork the playwright-browser recipe's snapshot (unpooled, and from a warm pool of 1),
 *       chromium.connectOverCDP to the child's Chromium, newPage + setContent
 *   (b) chromium.launch of the host's Debian Chromium (/usr/bin/chromium), newPage + setContent
 * Host Chromium: apt-get install chromium.
 */
import { existsSync } from 'node:fs';
import { cpus } from 'node:os';
import { parseArgs } from 'node:util';
import { chromium, type Browser } from 'playwright-core';
import { Engine } from '../src/engine/engine.js';
import { loadRecipe } from '../src/engine/images/recipe.js';
import { findQemu } from '../src/engine/vmm/qemu-binary.js';
import { median, row } from './stats.js';

const HOST_CHROMIUM = '/usr/bin/chromium';
const { values } = parseArgs({ options: { runs: { type: 'string', default: '5' } } });
const runs = Number(values.runs);
const tag = `bench-browser-${process.pid}`;
if (!existsSync(HOST_CHROMIUM))
  throw new Error(`bench/playwright-browser needs ${HOST_CHROMIUM}: apt-get install chromium`);

/** Opens a page, renders a little HTML and reads it back: what a test's first step does. */
async function firstPage(browser: Browser): Promise<void> {
  const page = await browser.newPage();
  await page.setContent('<h1>first page</h1>');
  if ((await page.textContent('h1')) !== 'first page') throw new Error('the page did not render');
}

await using engine = new Engine();
const base = await engine.buildBase();
const verdict = await engine.accel(base);
const qemu = await findQemu();
console.log(`machine: ${cpus().length} x ${cpus()[0]?.model}; QEMU ${qemu.version}; accel ${verdict.accel}`);

const imageStarted = performance.now();
const image = await engine.recipeImage(loadRecipe('playwright-browser'));
const imageMs = performance.now() - imageStarted;
const snap = await engine.snapshot(tag, { recipe: 'playwright-browser' });
const t = snap.timings;
console.log(
  `image ${image.reused ? 'cached' : 'built'} in ${(imageMs / 1000).toFixed(1)} s; snapshot: boot ${(t.bootMs / 1000).toFixed(1)} s, ` +
    `warm-up to ready ${(t.warmupMs / 1000).toFixed(1)} s, save ${t.saveMs.toFixed(0)} ms`,
);

try {
  const forkMs: number[] = [];
  const connectMs: number[] = [];
  const guestPageMs: number[] = [];
  const guestTotalMs: number[] = [];
  const forkOne = async (): Promise<void> => {
    const started = performance.now();
    const [child] = await engine.fork(tag, 1);
    try {
      const forked = performance.now();
      const browser = await chromium.connectOverCDP(`http://127.0.0.1:${child!.ports['9222']}`, { timeout: 300_000 });
      const connected = performance.now();
      await firstPage(browser);
      const done = performance.now();
      await browser.close();
      forkMs.push(forked - started);
      connectMs.push(connected - forked);
      guestPageMs.push(done - connected);
      guestTotalMs.push(done - started);
    } finally {
      await child!.kill();
    }
  };
  for (let i = 0; i < runs; i++) await forkOne();
  const unpooled = { fork: forkMs.splice(0), connect: connectMs.splice(0), page: guestPageMs.splice(0) };
  const unpooledTotal = guestTotalMs.splice(0);

  for (let i = 0; i < runs; i++) {
    await engine.warmPool(tag, 1).then((pool) => pool?.filled());
    await forkOne();
  }
  await engine.warmPool(tag, 0);

  const launchMs: number[] = [];
  const hostPageMs: number[] = [];
  const hostTotalMs: number[] = [];
  for (let i = 0; i < runs; i++) {
    const started = performance.now();
    const browser = await chromium.launch({ executablePath: HOST_CHROMIUM });
    const launched = performance.now();
    try {
      await firstPage(browser);
    } finally {
      const done = performance.now();
      launchMs.push(launched - started);
      hostPageMs.push(done - launched);
      hostTotalMs.push(done - started);
      await browser.close();
    }
  }

  console.log('\n(a) a forked guest Chromium, unpooled:');
  console.log(row('fork', unpooled.fork));
  console.log(row('fork -> connectOverCDP done', unpooled.connect));
  console.log(row('first page (newPage + setContent)', unpooled.page));
  console.log(row('total', unpooledTotal));
  console.log('(a) from a warm pool of 1:');
  console.log(row('fork', forkMs));
  console.log(row('fork -> connectOverCDP done', connectMs));
  console.log(row('first page (newPage + setContent)', guestPageMs));
  console.log(row('total', guestTotalMs));
  console.log('(b) host chromium.launch (/usr/bin/chromium):');
  console.log(row('launch', launchMs));
  console.log(row('first page (newPage + setContent)', hostPageMs));
  console.log(row('total', hostTotalMs));
  const ratio = (a: number[], b: number[]) => (median(a) / median(b)).toFixed(1);
  console.log(
    `\nguest / host, to the first page: ${ratio(unpooledTotal, hostTotalMs)}x unpooled, ` +
      `${ratio(guestTotalMs, hostTotalMs)}x from the pool (accel ${verdict.accel})`,
  );
} finally {
  await engine.close();
  await engine.snapshots.remove(tag);
}
