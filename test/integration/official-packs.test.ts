import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { Engine } from '../../src/engine/engine.js';
import { StatePaths } from '../../src/common/state-dir.js';
import { officialFile, PINS_FILE, type OfficialPins } from '../../src/hub/official.js';
import { packageVersion } from '../../src/common/package-root.js';
import { buildToolTraps, LoopbackHub, makeOfficialPacks, packageWithPins, run } from '../helpers/official-hub.js';
import { OrdinaryUser } from '../helpers/ordinary-user.js';
import { packFromCleanCopy } from '../helpers/packed-package.js';

/**
 * Official packs end to end: a release's packs (scripts/release.mjs --packs) on a Hub on loopback,
 * and a copy of the package that ships their pins. On an empty state dir forkd pulls instead of
 * compiling; a pack that lies is refused with nothing installed; a missing one builds locally.
 */
const work = mkdtempSync(join(tmpdir(), 'forkd-official-'));
const release = join(work, 'release');
let pins: OfficialPins;
let hub: LoopbackHub;
let pkg: ReturnType<typeof packageWithPins>;
const traps = buildToolTraps();
const homes: string[] = [];

function emptyHome(): string {
  const home = mkdtempSync(join(work, 'home-'));
  homes.push(home);
  return home;
}

function forkd(home: string, args: string[], env: Record<string, string> = {}, cli = pkg.cli) {
  return run(process.execPath, [cli, ...args], {
    ...process.env,
    FORKD_HOME: home,
    FORKD_HUB_URL: hub.url,
    PATH: `${traps.dir}:${process.env.PATH}`,
    ...env,
  });
}

const listed = (dir: string) => (existsSync(dir) ? readdirSync(dir) : []);

const qemuOf = (home: string) =>
  execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' })
    .split('\n')
    .filter((line) => line.includes('qemu-system') && line.includes(home));

beforeAll(async () => {
  pins = makeOfficialPacks(release, ['postgres']);
  hub = await LoopbackHub.serve(release);
  pkg = packageWithPins(pins);
}, 900_000);

afterAll(async () => {
  await hub?.close();
  try {
    for (const home of homes) expect(qemuOf(home)).toEqual([]);
  } finally {
    pkg?.remove();
    traps.remove();
    rmSync(work, { recursive: true, force: true });
  }
});

describe('official packs from a Hub on loopback', () => {
  test('an empty state dir: forkd demo and a postgres snapshot come from the pinned packs; nothing compiled or bootstrapped', async () => {
    const home = emptyHome();
    const demo = await forkd(home, ['demo', '--json']);
    expect(demo.status, demo.stderr).toBe(0);
    expect(JSON.parse(demo.stdout)).toMatchObject({ children_ok: expect.any(Number) });
    const report = JSON.parse(demo.stdout) as { children_ok: number; fork: { n: number; pooled_n: number } };
    expect(report.children_ok).toBe(report.fork.n + report.fork.pooled_n);

    const snap = await forkd(home, ['snapshot', '--tag', 'pg', '--recipe', 'postgres', '--json']);
    expect(snap.status, snap.stderr).toBe(0);
    expect(JSON.parse(snap.stdout)).toMatchObject({ tag: 'pg', official: `forkd/postgres@${packageVersion}` });
    expect(traps.ran()).toEqual([]);
    expect(hub.requests).toEqual([pins.packs.base!.file, pins.packs.postgres!.file]);
    const doctor = await forkd(home, ['doctor', '--json']);
    const checks = (JSON.parse(doctor.stdout) as { checks: Array<{ name: string; status: string; detail: string }> })
      .checks;
    expect(checks.find((c) => c.name === 'official packs')).toMatchObject({
      status: 'pass',
      detail: `pinned for forkd-action ${packageVersion}: base, postgres`,
    });
    expect(checks.find((c) => c.name === 'base image')).toMatchObject({
      status: 'pass',
      detail: expect.stringContaining(`(from the official pack forkd/base@${packageVersion})`),
    });

    // children of the official snapshot are ready servers
    await using engine = new Engine(new StatePaths(home));
    const children = await engine.fork('pg', 2);
    try {
      for (const child of children) {
        const client = new pg.Client({
          host: '127.0.0.1',
          port: child.ports['5432'],
          user: 'forkd',
          password: 'forkd',
          database: 'forkd',
        });
        await client.connect();
        const r = await client.query('select 41 + 1 as answer');
        await client.end();
        expect(r.rows[0]).toEqual({ answer: 42 });
      }
    } finally {
      await Promise.all(children.map((c) => c.kill()));
    }

    // a second snapshot of the recipe needs no download: the pack is installed once
    const again = await forkd(home, ['snapshot', '--tag', 'pg2', '--recipe', 'postgres', '--json']);
    expect(again.status, again.stderr).toBe(0);
    expect(hub.requests).toHaveLength(2);
  }, 900_000);

  test.each([
    ['tampered', `does not match its sha256 in the pin of forkd-action ${packageVersion}`],
    ['grown', `bytes; the pin of forkd-action ${packageVersion} (official-packs.json) says`],
  ] as const)('a pack that lies (%s) is refused, naming its pin, and nothing is installed', async (answer, says) => {
    const home = emptyHome();
    hub.answer(pins.packs.base!.file, answer);
    try {
      const r = await forkd(home, ['build', 'base', '--json']);
      expect(r.status).toBe(1);
      const err = JSON.parse(r.stdout) as { code: string; error: string };
      expect(err.code).toBe('FORKD_ERR_CORRUPT');
      expect(err.error).toContain(says);
      expect(listed(join(home, 'hub', 'downloads'))).toEqual([]);
      expect(listed(join(home, 'snapshots'))).toEqual([]);
      expect(listed(join(home, 'images', 'hub'))).toEqual([]);
      expect(listed(join(home, 'images', 'official'))).toEqual([]);
      expect(traps.ran()).toEqual([]);
    } finally {
      hub.answer(pins.packs.base!.file, 'as-is');
    }
  });

  test('a pack that is not the one pinned under its name is refused before anything is installed', async () => {
    const home = emptyHome();
    // a Hub whose postgres pack is the base pack, and pins that vouch for those bytes
    const served = mkdtempSync(join(work, 'swapped-'));
    const file = officialFile('postgres', packageVersion);
    copyFileSync(join(release, pins.packs.base!.file), join(served, file));
    const other = await LoopbackHub.serve(served);
    const swapped = packageWithPins({ ...pins, packs: { ...pins.packs, postgres: { ...pins.packs.base!, file } } });
    try {
      const r = await forkd(home, ['build', 'postgres', '--json'], { FORKD_HUB_URL: other.url }, swapped.cli);
      expect(r.status).toBe(1);
      const err = JSON.parse(r.stdout) as { code: string; error: string };
      expect(err).toMatchObject({
        code: 'FORKD_ERR_CORRUPT',
        error: 'the pack pinned as postgres holds base (made from base)',
      });
      expect(listed(join(home, 'snapshots'))).toEqual([]);
      expect(listed(join(home, 'images', 'hub'))).toEqual([]);
    } finally {
      await other.close();
      swapped.remove();
    }
  });

  test('a pack the Hub does not have (404): one notice, then the local build', async () => {
    const home = emptyHome();
    // the local build path, with this machine's built images (a fresh kernel build takes minutes)
    const shared = join(new StatePaths().root, 'images');
    execFileSync('ln', ['-s', shared, join(home, 'images')]);
    hub.answer(pins.packs.base!.file, 'missing');
    try {
      const r = await forkd(home, ['build', 'base'], { PATH: process.env.PATH! });
      expect(r.status, r.stderr).toBe(0);
      const notices = r.stderr.split('\n').filter((line) => line.includes('building locally'));
      expect(notices).toHaveLength(1);
      expect(notices[0]).toMatch(
        new RegExp(`forkd/base@${packageVersion} could not be fetched \\(GET \\S+ answered 404\\): building locally`),
      );
      expect(r.stdout).toMatch(/reused from cache|built in/);
    } finally {
      hub.answer(pins.packs.base!.file, 'as-is');
    }
  });

  test('FORKD_BUILD=local builds here without asking the Hub', async () => {
    const home = emptyHome();
    execFileSync('ln', ['-s', join(new StatePaths().root, 'images'), join(home, 'images')]);
    const before = hub.requests.length;
    const r = await forkd(home, ['build', 'base'], { PATH: process.env.PATH!, FORKD_BUILD: 'local' });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).not.toContain('official pack');
    expect(hub.requests).toHaveLength(before);
    expect(listed(join(home, 'images', 'official'))).toEqual([]);
  });
});

describe('where a user stands', () => {
  test("an ordinary user's project installs the released package: npx forkd demo pulls, compiles nothing, leaves nothing", async () => {
    const released = packFromCleanCopy({ [PINS_FILE]: `${JSON.stringify(pins, null, 2)}\n` });
    const user = new OrdinaryUser();
    try {
      expect(released.files).toContain(PINS_FILE);
      const project = user.makeDir(mkdtempSync(join(tmpdir(), 'forkd-official-user-')));
      writeFileSync(
        join(project, 'package.json'),
        JSON.stringify({
          name: 'first-run',
          private: true,
          devDependencies: { 'forkd-action': `file:${released.tarball}` },
        }),
      );
      user.own(project);
      const installed = await user.run('npm', ['install', '--no-audit', '--no-fund'], { cwd: project });
      expect(installed.status, installed.stderr).toBe(0);
      const before = hub.requests.length;
      const demo = await user.run('npx', ['forkd', 'demo'], {
        cwd: project,
        env: { FORKD_HUB_URL: hub.url, PATH: `${traps.dir}:${user.env().PATH}` },
      });
      expect(demo.status, demo.stderr).toBe(0);
      expect(demo.stdout).toMatch(/children that saw the parent state\s+12 of 12/);
      expect(hub.requests.slice(before)).toEqual([pins.packs.base!.file]);
      expect(traps.ran()).toEqual([]);
      expect(user.processes()).toEqual([]);
    } finally {
      user.remove();
      released.remove();
    }
  }, 900_000);
});
