import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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
/** The Playwright quick start's project is `<playwrightScratch>/project` (its spec files are not Vitest's tests). */
let playwrightScratch: string;
let playwrightProject: string;

function ok(r: RunResult): string {
  expect(r.status, `exit ${r.status}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`).toBe(0);
  return r.stdout;
}

/** The owner of the recipe's root filesystem image in the user's state dir: the user, when it built it. */
function imageOwners(recipe: string): string {
  const images = join(user.home, '.cache', 'forkd', 'images', `rootfs-${recipe}`);
  return execFileSync('find', [images, '-name', 'rootfs.ext4', '-printf', '%u\n'], { encoding: 'utf8' }).trim();
}

/** Writes `files` (path in `dir` -> body), with the directories they need. */
function writeFiles(dir: string, files: Iterable<[string, string]>): void {
  for (const [path, body] of files) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), body);
  }
}

/**
 * The user's project `name` in `dir`: forkd-action from the packed tarball and `devDependencies` at
 * this repository's versions, the README's `<name>/` snippets verbatim, and `extra` files; the user
 * owns it and installs it.
 */
async function makeProject(
  dir: string,
  name: string,
  devDependencies: string[],
  extra: Record<string, string> = {},
): Promise<void> {
  const versions = devDependencies.map((dep) => {
    const version = ours.devDependencies[dep];
    if (!version) throw new Error(`this repository's package.json has no devDependency ${dep}`);
    return [dep, version];
  });
  const manifest = {
    name,
    private: true,
    type: 'module',
    devDependencies: Object.fromEntries([['forkd-action', `file:${pkg.tarball}`], ...versions]),
  };
  writeFiles(dir, [['package.json', JSON.stringify(manifest, null, 2)]]);
  const snippets = [...readmeSnippets()].filter(([snippet]) => snippet.startsWith(`${name}/`));
  writeFiles(
    dir,
    snippets.map(([snippet, body]) => [snippet.slice(name.length + 1), body]),
  );
  writeFiles(dir, Object.entries(extra));
  user.own(dir);
  ok(await user.run('npm', ['install', '--no-audit', '--no-fund'], { cwd: dir }));
}

beforeAll(async () => {
  pkg = packFromCleanCopy();
  user = new OrdinaryUser();
  project = user.makeDir(mkdtempSync(join(tmpdir(), 'forkd-consumer-')));
  playwrightScratch = user.makeDir(mkdtempSync(join(tmpdir(), 'forkd-consumer-playwright-')));
  playwrightProject = user.makeDir(join(playwrightScratch, 'project'));
  // the guest kernel takes minutes to compile and needs no privilege: copied, not built again
  user.seedKernel(join(user.home, '.cache', 'forkd'), new StatePaths().root);
  const tsconfig = {
    compilerOptions: {
      strict: true,
      module: 'NodeNext',
      moduleResolution: 'NodeNext',
      target: 'ES2023',
      noEmit: true,
      skipLibCheck: true,
    },
  };
  await Promise.all([
    makeProject(
      project,
      'consumer',
      // typescript and @types/pg to type-check the snippets as a TypeScript user's editor does
      ['vitest', 'pg', 'typescript', '@types/pg'],
      {
        'tsconfig.json': JSON.stringify(tsconfig),
        // what a test that reads the connection itself writes: inject('forkd') must be typed
        'tests/inject.ts':
          "import { inject } from 'vitest';\nimport type {} from 'forkd-action/vitest';\n\nexport const endpoint: string = inject('forkd').endpoint;\nexport const postgres: string | null = inject('forkd').postgres;\n",
      },
    ),
    makeProject(playwrightProject, 'consumer-playwright', ['@playwright/test']),
  ]);
}, 900_000);

afterAll(() => {
  // what the runners keep in the shared temp dir by design, removed with the user: pytest's base temp
  // dir (its last three runs', and xdist makes one) and Playwright's transform cache
  const runnersOwn = user
    ? [join(tmpdir(), `pytest-of-${user.name}`), join(tmpdir(), `playwright-transform-cache-${user.uid}`)]
    : [];
  try {
    // nothing the user's runs started is left: no daemon, no QEMU, no mmdebstrap, no Chromium
    expect(user?.processes() ?? []).toEqual([]);
    // nor files in the shared scratch dirs, its namespaces' included (mmdebstrap's trees)
    const leftovers = user.files(SCRATCH_DIRS, [project, playwrightScratch, ...runnersOwn]);
    expect(leftovers).toEqual([]);
  } finally {
    user?.remove();
    pkg?.remove();
    for (const dir of [project, playwrightScratch, ...runnersOwn])
      if (dir) rmSync(dir, { recursive: true, force: true });
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
      'lib/runner-plugins/playwright/index.js',
      'lib/runner-plugins/playwright/index.d.ts',
      'lib/runner-plugins/playwright/global-setup.js',
      'lib/runner-plugins/shared/run-setup.js',
      'lib/runner-plugins/shared/children.js',
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
    expect(imageOwners('postgres')).toBe(user.name);
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

  test("the README's Playwright quick start passes: the app's image built without root, Chromium on a fork per test", async () => {
    const r = await user.run('npx', ['playwright', 'test'], { cwd: playwrightProject, timeoutMs: 1_200_000 });
    expect(stripVTControlCharacters(ok(r))).toMatch(/\b2 passed\b/);
    expect(imageOwners('app')).toBe(user.name);
    // the run's own daemon stopped with it, and its VMs and Chromium with it (afterAll checks the scratch dirs)
    expect(user.processes()).toEqual([]);
  }, 1_500_000);

  test('Playwright: a recipe directory outside the project is refused at the global setup, and nothing is made', async () => {
    writeFiles(playwrightScratch, [['elsewhere/recipe.json', JSON.stringify({ packages: ['nodejs'] })]]);
    writeFiles(playwrightProject, [
      [
        'outside.config.ts',
        "import { defineConfig } from '@playwright/test';\nimport { forkd } from 'forkd-action/playwright';\n\nexport default defineConfig({ globalSetup: forkd({ snapshots: { elsewhere: { recipe: '../elsewhere' } } }) });\n",
      ],
    ]);
    user.own(playwrightScratch);
    const state = join(user.home, '.cache', 'forkd');
    const made = () =>
      ['images', 'snapshots'].flatMap((dir) =>
        existsSync(join(state, dir)) ? readdirSync(join(state, dir)).map((entry) => `${dir}/${entry}`) : [],
      );
    const before = made();
    const r = await user.run('npx', ['playwright', 'test', '--config', 'outside.config.ts'], {
      cwd: playwrightProject,
    });
    const output = stripVTControlCharacters(r.stdout + r.stderr);
    expect(r.status, output).toBe(1);
    expect(output).toContain('FORKD_ERR_BAD_INPUT');
    expect(output).toMatch(/recipe directory \S*\/elsewhere\b.* is outside the project \S*\/project\b/);
    expect(made()).toEqual(before);
    expect(existsSync(join(state, 'daemon.json'))).toBe(false);
    expect(user.processes()).toEqual([]);
  }, 300_000);
});
