import { execFileSync } from 'node:child_process';
import { cpSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { Controller } from '../../src/client/controller.js';
import { ActionRunner, root } from '../helpers/action-runner.js';
import { OrdinaryUser } from '../helpers/ordinary-user.js';

/**
 * The Action as GitHub-hosted runners run it: as the `runner` user, not root, from the copy of
 * the Action a runner downloads. Preparing the runner (the /dev/kvm udev rule, host packages) may
 * use sudo; the recipe's image may only where user namespaces are refused (Ubuntu 24.04's
 * AppArmor rule); the snapshot, the engine and the teardown never.
 */
const RUNNER_PREPARATION = /^\/usr\/bin\/(apt-get |udevadm |sh -c echo '[^']*' > \/etc\/udev\/rules\.d\/)/;
const IMAGE_BUILD =
  /^\/usr\/bin\/true$|^\/usr\/bin\/unshare --mount --propagation private -- \/usr\/bin\/env TMPDIR=\S+ \/usr\/bin\/mmdebstrap |^\/usr\/sbin\/mke2fs |^\/usr\/bin\/rm -rf /;

describe.each([
  { sudo: true, userns: true },
  { sudo: false, userns: true },
  { sudo: true, userns: false }, // GitHub's ubuntu-24.04 runners
])('the Action as an ordinary runner user (passwordless sudo: $sudo, user namespaces: $userns)', ({ sudo, userns }) => {
  test('main builds a recipe image without root and snapshots it; a later step forks it; post leaves nothing', async () => {
    const user = new OrdinaryUser({ passwordlessSudo: sudo });
    if (!userns) user.dropSubids();
    const runner = new ActionRunner(user);
    try {
      const job = runner.job('runner-user');
      job.seedImages(); // the guest kernel: no compile in this test
      cpSync(join(root, 'test/fixtures/recipes/tiny-rootfs'), join(job.dir, 'ci/tiny-rootfs'), { recursive: true });
      user.own(join(job.dir, 'ci'));
      const main = await job.run(
        'main',
        { snapshot: './ci/tiny-rootfs', cache: 'false', 'pool-size': '1' },
        { cwd: job.dir },
      );
      expect(main.code, main.log).toBe(0);
      const images = join(job.home, 'images', 'rootfs-tiny-rootfs');
      const owners = execFileSync('find', [images, '-name', 'rootfs.ext4', '-printf', '%u\n'], { encoding: 'utf8' });
      expect(owners.trim()).toBe(user.name); // the image is the user's however it was built
      const image = join(
        images,
        readdirSync(images).find((d) => !d.startsWith('.'))!,
        'rootfs.ext4',
      );
      const stat = (path: string) =>
        execFileSync('debugfs', ['-R', `stat ${path}`, image], {
          encoding: 'utf8',
          stdio: ['ignore', 'pipe', 'ignore'],
        });
      expect(stat('/etc/forkd/built')).toMatch(/User:\s+100\s+Group:\s+101/); // owners inside survive
      expect(stat('/etc/forkd/marker')).toMatch(/User:\s+0\s+Group:\s+0/);

      // a later step of the job forks the snapshot
      const client = new Controller({ endpoint: job.env.FORKD_ENDPOINT!, token: job.env.FORKD_TOKEN! });
      {
        await using child = await client.createSandbox('tiny-rootfs');
        expect((await child.readFile('/etc/forkd/marker')).toString()).toBe("from the recipe's files\n");
      }
      await client.close();

      const post = await job.run('post');
      expect(post.code, post.log).toBe(0);
      expect(job.leftovers()).toEqual([]);
      expect(user.processes()).toEqual([]);
      const commands = user.sudoCommands();
      for (const command of commands)
        expect(command).toMatch(
          userns ? RUNNER_PREPARATION : new RegExp(`${RUNNER_PREPARATION.source}|${IMAGE_BUILD.source}`),
        );
      // where user namespaces work, the image was built in one, with no sudo; else through sudo
      expect(commands.some((c) => c.includes('/usr/bin/mmdebstrap'))).toBe(!userns);
      expect(user.files(['/dev/shm'])).toEqual([]);
    } finally {
      runner.dispose();
      user.remove();
    }
  }, 900_000);
});
