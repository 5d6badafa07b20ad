import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { stripVTControlCharacters } from 'node:util';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { StatePaths } from '../../src/common/state-dir.js';
import { OrdinaryUser, SCRATCH_DIRS, type RunResult } from '../helpers/ordinary-user.js';
import { packFromCleanCopy, type PackedPackage } from '../helpers/packed-package.js';
import { readmeSnippets, repoRoot } from '../helpers/readme-snippets.js';

/**
 * Where a user stands: a project of its own outside this repository installs the packed package,
 * and an ordinary user (made here; CI runs as root) runs the README's snippets in it, verbatim.
 */
const ours = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as {
  version: string;
  devDependencies: Record<string, string>;
};
let pkg: PackedPackage;
let user: OrdinaryUser;
let project: string;

function ok(r: RunResult): string {
  expect(r.status, `exit ${r.status}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`).toBe(0);
  return r.stdout;
}

beforeAll(async () => {
  pkg = packFromCleanCopy();
  user = new OrdinaryUser();
  project = user.makeDir(mkdtempSync(join(tmpdir(), 'forkd-consumer-')));
  // the guest kernel takes minutes to compile and needs no privilege: copied, not built again
  user.seedKernel(join(user.home, '.cache', 'forkd'), new StatePaths().root);
  writeFileSync(
    join(project, 'package.json'),
    JSON.stringify(
      {
        name: 'consumer',
        private: true,
        type: 'module',
        devDependencies: {
          'forkd-action': `file:${pkg.tarball}`,
          vitest: ours.devDependencies.vitest,
          pg: ours.devDependencies.pg,
          // to type-check the snippets as a TypeScript user's editor does
          typescript: ours.devDependencies.typescript,
          '@types/pg': ours.devDependencies['@types/pg'],
        },
      },
      null,
      2,
    ),
  );
  for (const [name, body] of readmeSnippets()) {
    if (!name.startsWith('consumer/')) continue;
    const file = join(project, name.slice('consumer/'.length));
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, body);
  }
  writeFileSync(
    join(project, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: {
        strict: true,
        module: 'NodeNext',
        moduleResolution: 'NodeNext',
        target: 'ES2023',
        noEmit: true,
        skipLibCheck: true,
      },
    }),
  );
  // what a test that reads the connection itself writes: inject('forkd') must be typed
  writeFileSync(
    join(project, 'tests', 'inject.ts'),
    "import { inject } from 'vitest';\nimport type {} from 'forkd-action/vitest';\n\nexport const endpoint: string = inject('forkd').endpoint;\nexport const postgres: string | null = inject('forkd').postgres;\n",
  );
  execFileSync('chown', ['-R', `${user.uid}:${user.gid}`, project]);
  ok(await user.run('npm', ['install', '--no-audit', '--no-fund'], { cwd: project }));
}, 600_000);

afterAll(() => {
  try {
    // nothing the user's runs started is left: no daemon, no QEMU, no mmdebstrap
    expect(user?.processes() ?? []).toEqual([]);
    // nor files in the shared scratch dirs, its namespaces' included (mmdebstrap's trees)
    // (pytest's own base temp dir aside: pytest keeps its last three runs' by design, and xdist makes one)
    const pytestBasetemp = join(tmpdir(), `pytest-of-${user.name}`);
    const leftovers = user.files(SCRATCH_DIRS, [project, pytestBasetemp]);
    expect(leftovers).toEqual([]);
  } finally {
    user?.remove();
    pkg?.remove();
    if (project) rmSync(project, { recursive: true, force: true });
  }
});

describe('a project that installs the packed package, run by an ordinary user', () => {
  test('the package ships what its exports and bin need, built, and nothing else', () => {
    for (const file of [
      'LICENSE',
      'bin/forkd.js',
      'lib/index.js',
      'lib/index.d.ts',
      'lib/cli/main.js',
      'lib/runner-plugins/vitest/index.js',
      'lib/runner-plugins/vitest/index.d.ts',
      'lib/runner-plugins/vitest/plugin.js',
      'lib/runner-plugins/vitest/plugin.d.ts',
      'lib/runner-plugins/vitest/global-setup.js',
      'native/agent/agent.c',
      'native/agent/Makefile',
      'native/kernel/forkd-x86_64.config',
      'recipes/postgres/recipe.json',
      'scripts/host-packages.sh',
      'runner-plugins/pytest/pyproject.toml',
      'runner-plugins/pytest/src/pytest_forkd/plugin.py',
      'runner-plugins/pytest/src/pytest_forkd/py.typed',
    ])
      expect(pkg.files).toContain(file);
    const unwanted = pkg.files.filter(
      (f) =>
        f.endsWith('.map') ||
        f.startsWith('lib/action/') ||
        (f.endsWith('.ts') && !f.endsWith('.d.ts')) ||
        /^(src|test|dist|bench|examples|docs)\//.test(f) ||
        // the pytest plugin's sources, to install from: its tests stay here
        (f.startsWith('runner-plugins/') &&
          !/^runner-plugins\/pytest\/(pyproject\.toml|README\.md|src\/pytest_forkd\/\w+\.(py|typed))$/.test(f)),
    );
    expect(unwanted).toEqual([]);
  });

  test('npx forkd (--version, install-deps) and import("forkd-action") work from the installed package', async () => {
    expect(ok(await user.run('npx', ['forkd', '--version'], { cwd: project })).trim()).toBe(ours.version);
    // the README's install step: the host already has the packages, so no sudo is asked for
    expect(ok(await user.run('npx', ['forkd', 'install-deps'], { cwd: project }))).toContain(
      'forkd: host packages already installed',
    );
    const imported = ok(
      await user.run(
        'node',
        ['--input-type=module', '-e', "const m = await import('forkd-action'); console.log(typeof m.Controller)"],
        { cwd: project },
      ),
    );
    expect(imported.trim()).toBe('function');
  });

  test("the README's snippets type-check in the user's project, inject('forkd') included", async () => {
    ok(await user.run('npx', ['tsc', '-p', '.'], { cwd: project }));
  });

  test("the README's CLI quick start runs as written", async () => {
    const out = ok(await user.run('bash', ['-euo', 'pipefail', 'cli.sh'], { cwd: project, timeoutMs: 600_000 }));
    expect(out).toContain('warm'); // the forked child read the parent's state
  }, 900_000);

  test("the README's lease snippet: its process killed with SIGKILL, the daemon reaps its 4 sandboxes", async () => {
    // the README's daemon lines, then lease.mjs as written, killed with SIGKILL once it holds its sandboxes
    const script = [
      'npx forkd snapshot --tag hello >/dev/null',
      'node_modules/.bin/forkd serve & daemon=$!',
      "trap 'kill $daemon; wait $daemon || true' EXIT",
      "timeout 60 sh -c 'until npx forkd ls >/dev/null 2>&1; do sleep 1; done'",
      'node lease.mjs > held & holder=$!',
      "timeout 120 sh -c 'until [ -s held ]; do sleep 0.2; done'",
      'kill -9 $holder',
      'echo "holder $holder held $(cat held)"',
      "timeout 10 sh -c 'while npx forkd ls --json | grep -q sb-; do sleep 0.2; done'",
      'echo "left $(npx forkd ls --json | tr -d \' \\n\')"',
      'npx forkd rmi hello',
    ].join('\n');
    const out = ok(await user.run('bash', ['-euo', 'pipefail', '-c', script], { cwd: project, timeoutMs: 600_000 }));
    const [, holder, ids] = /^holder (\d+) held (.+)$/m.exec(out)!;
    const held = ids!.trim().split(' ');
    expect(held).toHaveLength(4);
    expect(out).toMatch(/^left \[\]$/m); // forkd ls --json: no sandbox left
    const state = join(user.home, '.cache', 'forkd');
    const reaps = readFileSync(join(state, 'audit.log'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line) as { event?: string; id?: string; reason?: string; owner?: string })
      .filter((e) => e.event === 'reap' && held.includes(e.id!));
    expect(reaps).toHaveLength(4);
    for (const reap of reaps) expect(reap).toMatchObject({ reason: `owner pid ${holder} exited`, owner: 'my-suite' });
    expect(readdirSync(join(state, 'ledger'))).toEqual([]);
  }, 900_000);

  test("the README's Vitest quick start passes: the postgres image built without root, a server per test", async () => {
    const r = await user.run('npx', ['vitest', 'run'], { cwd: project, timeoutMs: 1_200_000 });
    expect(stripVTControlCharacters(ok(r))).toMatch(/Tests\s+2 passed/);
    // the recipe image was built by the user, inside its own user namespace
    const images = join(user.home, '.cache', 'forkd', 'images', 'rootfs-postgres');
    const owners = execFileSync('find', [images, '-name', 'rootfs.ext4', '-printf', '%u\n'], { encoding: 'utf8' });
    expect(owners.trim()).toBe(user.name);
    expect(user.sudoCommands()).toEqual([]);
  }, 1_500_000);

  test("the README's pytest quick start passes: the plugin installed from the package, a server per test", async () => {
    // pytest.sh as written: a virtual environment on the distribution's packages, the plugin from
    // node_modules/forkd-action, then pytest -n 2, which starts the project's forkd for the run
    const r = await user.run('bash', ['-euo', 'pipefail', 'pytest.sh'], { cwd: project, timeoutMs: 1_200_000 });
    expect(ok(r)).toMatch(/\b2 passed\b/);
    // the run's own daemon stopped with it, and its workers' VMs with it (afterAll checks the scratch dirs)
    expect(user.processes()).toEqual([]);
  }, 1_500_000);
});
