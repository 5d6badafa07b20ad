import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { Controller } from '../../src/client/controller.js';
import { readRecipeUpload } from '../../src/client/recipe-upload.js';
import { loadRecipe, recipeImageKey } from '../../src/engine/images/recipe.js';
import { Daemon } from '../../src/server/daemon.js';
import { contractController } from '../helpers/api-contract.js';
import { IsolatedHome, NOTHING_LEFT } from '../helpers/isolated-home.js';

const home = new IsolatedHome();
/** The user's project, with its recipe in a directory of its own (not under recipes/). */
const project = mkdtempSync(join(tmpdir(), 'forkd-upload-project-'));
const GREETING = 'greeting=hello from the upload';
let daemon: Daemon;
let client: Controller;

/** A recipe directory in the project holding `recipe` as its recipe.json and `files`. */
function recipeDir(name: string, recipe: unknown, files: Record<string, string> = {}): string {
  const dir = join(project, 'e2e', name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'recipe.json'), JSON.stringify(recipe, null, 2));
  for (const [path, text] of Object.entries(files)) writeFileSync(join(dir, path), text);
  return dir;
}

const appRecipe = recipeDir(
  'app-recipe',
  {
    description: 'an app of the project: one file in the image, a warm-up that reads it',
    packages: [],
    files: { '/etc/app/app.conf': 'app.conf' },
    warmup: `grep -qx '${GREETING}' /etc/app/app.conf && cp /etc/app/app.conf /tmp/warmed`,
    image_mib: 512,
  },
  { 'app.conf': `${GREETING}\n` },
);

/** The daemon's upload directories under <state>/tmp. */
const uploadDirs = () => home.entries('tmp').filter((entry) => entry.startsWith('recipe-'));

/** POSTs `body` over the daemon's socket; with `leaveWhen`, hangs up once it holds, without waiting for the reply (status 0). */
function post(body: unknown, leaveWhen?: () => boolean): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    let answered = false;
    const req = httpRequest(
      {
        socketPath: daemon.endpoint.slice('unix:'.length),
        method: 'POST',
        path: '/v1/snapshots',
        headers: { authorization: `Bearer ${daemon.token}`, 'content-type': 'application/json' },
      },
      (res) => {
        answered = true;
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString() }));
      },
    );
    req.on('error', (err) => (leaveWhen ? undefined : reject(err)));
    req.on('close', () => answered || resolve({ status: 0, text: '' }));
    req.end(JSON.stringify(body));
    if (leaveWhen) {
      const poll = setInterval(() => {
        if (answered) clearInterval(poll);
        else if (leaveWhen()) {
          clearInterval(poll);
          req.destroy();
        }
      }, 20);
    }
  });
}

async function until(what: string, ready: () => boolean | Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await ready())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(100);
  }
}

beforeAll(async () => {
  daemon = await Daemon.start({ paths: home.paths, allowRecipeUpload: true });
  client = contractController({ endpoint: daemon.endpoint, token: daemon.token });
});

afterAll(async () => {
  await client.close();
  await daemon.close();
  expect(home.killLeakedQemu()).toEqual([]);
  expect(home.leftovers()).toEqual(NOTHING_LEFT);
  home.remove();
  rmSync(project, { recursive: true, force: true });
});

describe('a recipe directory of the project, sent to the daemon as its files', () => {
  const image = async () =>
    join(home.root, 'images', 'rootfs-app-recipe', await recipeImageKey(loadRecipe(appRecipe)), 'rootfs.ext4');

  test('makes a snapshot whose warm-up read the uploaded file; a child has it; the upload dir is gone', async () => {
    const made = await client.createSnapshot('app', { recipeDir: appRecipe, root: project });
    expect(made).toMatchObject({ tag: 'app', status: 'ready', warmup: expect.stringContaining(GREETING) });
    expect(uploadDirs()).toEqual([]);
    expect(existsSync(await image())).toBe(true);
    await using child = await client.createSandbox('app');
    expect((await child.exec(['cat', '/etc/app/app.conf'])).stdout.toString()).toBe(`${GREETING}\n`);
    expect((await child.exec(['cat', '/tmp/warmed'])).stdout.toString()).toBe(`${GREETING}\n`); // the warm-up's work
  }, 1_200_000);

  test('a second upload of the same files reuses the image built from the first (its key is their content)', async () => {
    const before = statSync(await image());
    const built = readdirSync(join(home.root, 'images', 'rootfs-app-recipe'));
    await client.createSnapshot('app-again', { recipeDir: appRecipe, root: project });
    const after = statSync(await image());
    expect([after.ino, after.mtimeMs]).toEqual([before.ino, before.mtimeMs]);
    expect(readdirSync(join(home.root, 'images', 'rootfs-app-recipe'))).toEqual(built);
    expect(uploadDirs()).toEqual([]);
  });

  test('failing uploads leave no directory behind and change nothing', async () => {
    const tags = (await client.listSnapshots()).map((s) => s.tag).sort();
    const files = await readRecipeUpload(appRecipe, project);
    // refused before a byte is written: a name and files together, a path that leaves the dir
    expect(await post({ tag: 'x', recipe: 'postgres', recipe_files: files })).toMatchObject({
      status: 400,
      text: expect.stringContaining('not both'),
    });
    const evil = { ...files, files: { ...files.files, '../../../etc/forkd-owned': 'eA==' } };
    expect(await post({ tag: 'x', recipe_files: evil })).toMatchObject({
      status: 400,
      text: expect.stringContaining('\\"..\\" segment'),
    });
    // written, then refused by loadRecipe, then removed
    const typo = recipeDir('typo', { pakages: ['curl'] });
    await expect(client.createSnapshot('x', { recipeDir: typo, root: project })).rejects.toMatchObject({
      status: 400,
      code: 'FORKD_ERR_BAD_INPUT',
      message:
        'recipe typo: unknown field pakages (known: description, base, packages, files, build, warmup, ready, ready_timeout_s, prime, ports, memory_mib, image_mib)',
    });
    // written, then refused by the engine: the tag exists
    await expect(client.createSnapshot('app', { recipeDir: appRecipe, root: project })).rejects.toMatchObject({
      status: 409,
    });
    expect(uploadDirs()).toEqual([]);
    expect((await client.listSnapshots()).map((s) => s.tag).sort()).toEqual(tags);
    expect(existsSync('/etc/forkd-owned')).toBe(false);
  });

  test('a client that hangs up mid-snapshot: the snapshot is still made, and its upload dir removed', async () => {
    const slow = recipeDir('slow', { base: 'none', warmup: 'sleep 4' });
    const left = await post(
      { tag: 'left', recipe_files: await readRecipeUpload(slow, project) },
      () => uploadDirs().length === 1,
    );
    expect(left.status).toBe(0); // hung up before the reply
    await until('the snapshot', async () => (await client.listSnapshots()).some((s) => s.tag === 'left'), 120_000);
    await until('the upload dir to go', () => uploadDirs().length === 0, 10_000);
  });
});
