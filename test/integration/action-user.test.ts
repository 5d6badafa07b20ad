import { execFileSync } from 'node:child_process';
import { cpSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { Controller } from '../../src/client/controller.js';
import { ActionRunner, root } from '../helpers/action-runner.js';
import { OrdinaryUser } from '../helpers/ordinary-user.js';

/**
 * The Action as GitHub-hosted runners run it: as the `runner` user, not root, from the copy of
 * the Action a runner downloads. Only preparing the runner (the /dev/kvm udev rule, host
 * packages) may use sudo; the recipe's image, the snapshot, the engine and the teardown may not.
 */
const SUDO_ALLOWED =
  /^(\/usr\/bin\/apt-get |\/usr\/bin\/udevadm |\/usr\/bin\/sh -c echo '.*' > \/etc\/udev\/rules\.d\/)/;

describe.each([{ sudo: true }, { sudo: false }])(
  'the Action as an ordinary runner user (passwordless sudo: $sudo)',
  ({ sudo }) => {
    test('main builds a recipe image without root and snapshots it; a later step forks it; post leaves nothing', async () => {
      const user = new OrdinaryUser({ passwordlessSudo: sudo });
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
        expect(owners.trim()).toBe(user.name); // built by the user, in its own user namespace

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
        for (const command of user.sudoCommands()) expect(command).toMatch(SUDO_ALLOWED);
      } finally {
        runner.dispose();
        user.remove();
      }
    }, 900_000);
  },
);
