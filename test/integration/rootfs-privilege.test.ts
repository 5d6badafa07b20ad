import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, rmdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { OrdinaryUser, SCRATCH_DIRS } from '../helpers/ordinary-user.js';
import { repoRoot } from '../helpers/readme-snippets.js';

/**
 * How an ordinary user builds a recipe's root filesystem when user namespaces are not available
 * to it: through passwordless sudo, or not at all, with one error that names both fixes. (The
 * user-namespace path is the consumer test's: its postgres image is built that way.) And how
 * builds keep out of each other's way: a root build's mounts are its own, and a mount under
 * /dev/shm, which stops a user-namespace build, is named before anything is downloaded.
 */
const cli = join(repoRoot, 'bin', 'forkd.js');
const recipe = join(repoRoot, 'test', 'fixtures', 'recipes', 'tiny-rootfs');
let user: OrdinaryUser | undefined;
let work: string | undefined;

/** An ordinary user with no /etc/subuid or /etc/subgid range: user namespaces cannot map a Debian tree. */
function userWithoutSubids(options: { passwordlessSudo?: boolean } = {}): OrdinaryUser {
  const made = new OrdinaryUser(options);
  made.dropSubids();
  return made;
}

function build(as: OrdinaryUser, home: string, env: Record<string, string> = {}) {
  return as.run(process.execPath, [cli, 'build', recipe, '--json'], {
    cwd: work!,
    env: { FORKD_HOME: home, ...env },
    timeoutMs: 900_000,
  });
}

afterEach(() => {
  try {
    expect(user?.processes() ?? []).toEqual([]);
  } finally {
    user?.remove();
    user = undefined;
    if (work) rmSync(work, { recursive: true, force: true });
  }
});

describe('building a recipe image as an ordinary user without user namespaces', () => {
  test('with neither them nor passwordless sudo: one error naming both fixes, nothing built or left', async () => {
    user = userWithoutSubids();
    work = user.makeDir(mkdtempSync(join(tmpdir(), 'forkd-rootless-')));
    const home = join(work, 'home');
    const started = performance.now();
    const r = await build(user, home);
    expect(performance.now() - started).toBeLessThan(10_000); // refused before any download
    expect(r.status).toBe(1);
    const err = JSON.parse(r.stdout) as { code: string; error: string; hint: string };
    expect(err.code).toBe('FORKD_ERR_BUILD');
    expect(err.error).toContain(`cannot build a root filesystem as ${user.name}`);
    expect(err.error).toContain('/etc/subuid gives');
    expect(err.error).toContain('no passwordless sudo (sudo asks for a password)');
    expect(err.hint).toContain(`usermod --add-subuids 100000-165535 --add-subgids 100000-165535 ${user.name}`);
    expect(err.hint).toContain('passwordless sudo');
    const images = join(home, 'images', 'rootfs-tiny-rootfs');
    expect(existsSync(images) ? readdirSync(images) : []).toEqual([]); // no staging dir, no lock
    expect(user.files(SCRATCH_DIRS, [work])).toEqual([]);
  });

  test("with passwordless sudo: built through sudo, the image is the user's, owners inside are right", async () => {
    user = userWithoutSubids({ passwordlessSudo: true });
    work = user.makeDir(mkdtempSync(join(tmpdir(), 'forkd-rootless-')));
    const home = join(work, 'home');
    const r = await build(user, home);
    expect(r.status, r.stderr).toBe(0);
    const { image } = JSON.parse(r.stdout) as { image: string };
    expect(execFileSync('stat', ['-c', '%U %a', image], { encoding: 'utf8' }).trim()).toBe(`${user.name} 644`);
    const stat = (path: string) =>
      execFileSync('debugfs', ['-R', `stat ${path}`, image], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    expect(stat('/etc/forkd/built')).toMatch(/User:\s+100\s+Group:\s+101/);
    expect(stat('/etc/forkd/marker')).toMatch(/User:\s+0\s+Group:\s+0/);
    expect(stat('/etc')).toMatch(/User:\s+0\s+Group:\s+0/); // the recipe's files changed no directory's owner
    // sudo ran forkd's probe (`sudo -n true`), the bootstrap, the image and the tree's removal: nothing else
    const commands = user.sudoCommands();
    expect(commands).toHaveLength(4);
    expect(commands[0]).toBe('/usr/bin/true');
    expect(commands[1]).toMatch(
      /^\/usr\/bin\/unshare --mount --propagation private -- \/usr\/bin\/env TMPDIR=\S+ \/usr\/bin\/mmdebstrap --mode=root /,
    );
    expect(commands[2]).toMatch(/^\/usr\/sbin\/mke2fs -q -F -t ext4 -L forkd -d \S+\/tree \S+\/rootfs\.ext4 512M$/);
    expect(commands[3]).toMatch(/^\/usr\/bin\/rm -rf \S+\/tree$/);
    expect(user.files(SCRATCH_DIRS, [work])).toEqual([]);
  }, 900_000);

  test('FORKD_ROOTFS_MODE that is not a mode is refused, naming the modes', async () => {
    user = new OrdinaryUser();
    work = user.makeDir(mkdtempSync(join(tmpdir(), 'forkd-rootless-')));
    const r = await build(user, join(work, 'home'), { FORKD_ROOTFS_MODE: 'fakeroot' });
    expect(r.status).toBe(1);
    const err = JSON.parse(r.stdout) as { code: string; error: string };
    expect(err.code).toBe('FORKD_ERR_BAD_INPUT');
    expect(err.error).toBe('FORKD_ROOTFS_MODE=fakeroot is not one of auto, root, unshare, sudo');
  });
});

describe('builds side by side', () => {
  test("a root build's proc, sys and dev mounts are never seen outside it", async () => {
    const home = mkdtempSync(join(tmpdir(), 'forkd-rootbuild-'));
    work = home;
    const seen = new Set<string>();
    const watch = setInterval(() => {
      for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n'))
        if (line.includes('forkd-recipe-tiny-rootfs')) seen.add(line.split(' ')[4]!);
    }, 50);
    try {
      const r = execFileSync(process.execPath, [cli, 'build', recipe, '--json'], {
        env: { ...process.env, FORKD_HOME: home, FORKD_ROOTFS_MODE: 'root' },
        encoding: 'utf8',
        timeout: 900_000,
      });
      expect(JSON.parse(r)).toMatchObject({ image: expect.stringContaining('rootfs.ext4') });
    } finally {
      clearInterval(watch);
    }
    expect([...seen]).toEqual([]);
  }, 900_000);

  test('in a user namespace while something is mounted under /dev/shm: an error naming it, nothing built', async () => {
    user = new OrdinaryUser();
    work = user.makeDir(mkdtempSync(join(tmpdir(), 'forkd-rootless-')));
    const home = join(work, 'home');
    const mounted = mkdtempSync('/dev/shm/forkd-test-mount-');
    try {
      // mounted in a mount namespace of the build's own: the other test files' builds never see it
      const env = Object.entries(user.env({ FORKD_HOME: home })).map(([k, v]) => `${k}=${v}`);
      const started = performance.now();
      const r = spawnSync(
        'unshare',
        [
          ...['--mount', '--propagation', 'private', 'sh', '-c', 'mount -t tmpfs -o size=1m tmpfs "$0" && exec "$@"'],
          ...[mounted, ...user.command(), 'env', '-i', ...env, process.execPath, cli, 'build', recipe, '--json'],
        ],
        { cwd: work, encoding: 'utf8', timeout: 60_000 },
      );
      expect(performance.now() - started).toBeLessThan(10_000);
      expect(r.status, r.stderr).toBe(1);
      const err = JSON.parse(r.stdout) as { code: string; error: string; hint: string };
      expect(err.code).toBe('FORKD_ERR_BUILD');
      expect(err.error).toBe(`a build without root cannot bind /dev/shm while ${mounted} is mounted under it`);
      expect(err.hint).toContain(`unmount ${mounted}`);
      const images = join(home, 'images', 'rootfs-tiny-rootfs');
      expect(existsSync(images) ? readdirSync(images) : []).toEqual([]);
      expect(user.files(SCRATCH_DIRS, [work])).toEqual([]);
    } finally {
      rmdirSync(mounted);
    }
  });
});
