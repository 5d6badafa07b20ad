import type { IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';
import {
  chmodSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { checkRecipeFilePaths, recipeFilePathProblem } from '../../src/api/recipe-files.js';
import { MAX_RECIPE_FILES, MAX_RECIPE_UPLOAD_BYTES, RECIPE_UPLOAD_BODY_LIMIT } from '../../src/api/schemas.js';
import type { RecipeFiles } from '../../src/api/types.js';
import { Controller } from '../../src/client/controller.js';
import { readRecipeUpload } from '../../src/client/recipe-upload.js';
import { StatePaths } from '../../src/common/state-dir.js';
import { loadRecipe } from '../../src/engine/images/recipe.js';
import { JSON_BODY_LIMIT } from '../../src/server/body.js';
import type { DaemonContext } from '../../src/server/context.js';
import { uploadedRecipe, withRecipeDir } from '../../src/server/recipe-upload.js';
import { apiRouter } from '../../src/server/routes/index.js';

const scratch = mkdtempSync(join(tmpdir(), 'forkd-recipe-upload-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

const b64 = (text: string) => Buffer.from(text).toString('base64');
const RECIPE_JSON = JSON.stringify({ files: { '/etc/app.conf': 'conf/app.conf' }, warmup: 'true' });
/** An upload as the route gets it, decoded. */
const decode = (recipeFiles: RecipeFiles) => uploadedRecipe({ tag: 't', recipe_files: recipeFiles }, true)!;
const upload = (files: Record<string, string>, extra: Partial<RecipeFiles> = {}): RecipeFiles => ({
  name: 'my-app',
  files: Object.fromEntries(Object.entries(files).map(([path, text]) => [path, b64(text)])),
  ...extra,
});

describe('the paths a recipe upload may hold', () => {
  test.each(['recipe.json', 'app/server.js', 'seed.sql', '.env', 'a/b/c-1_2+3@4.txt', `${'x'.repeat(128)}`])(
    '%j is fine',
    (path) => expect(recipeFilePathProblem(path)).toBeUndefined(),
  );

  test.each([
    ['', 'has an empty segment'],
    ['/etc/passwd', 'is absolute'],
    ['a//b', 'has an empty segment'],
    ['a/', 'has an empty segment'],
    ['./a', 'has a "." segment'],
    ['a/./b', 'has a "." segment'],
    ['..', 'has a ".." segment'],
    ['../secret', 'has a ".." segment'],
    ['a/../../b', 'has a ".." segment'],
    ['a\\b', 'holds a backslash (use forward slashes)'],
    ['..\\secret', 'holds a backslash (use forward slashes)'],
    ['a\0b', 'holds a NUL byte'],
    ['my app.js', 'has a character outside A-Z a-z 0-9 . _ - + @ in "my app.js"'],
    ['a/$(id)', 'has a character outside A-Z a-z 0-9 . _ - + @ in "$(id)"'],
    ['x'.repeat(129), 'has a segment longer than 128 characters'],
    [`${'a/'.repeat(256)}b`, 'is longer than 512 characters'],
  ])('%j %s', (path, problem) => {
    expect(recipeFilePathProblem(path)).toBe(problem);
  });

  test('a set of files needs recipe.json, and no path may be another one\u2019s directory', () => {
    expect(() => checkRecipeFilePaths(['app.js'])).toThrow(
      expect.objectContaining({ code: 'FORKD_ERR_BAD_INPUT', message: 'the recipe files hold no recipe.json' }),
    );
    expect(() => checkRecipeFilePaths(['recipe.json', 'app', 'app/main.js'])).toThrow(
      expect.objectContaining({ message: 'recipe file "app/main.js" is under "app", which is a file' }),
    );
    expect(() => checkRecipeFilePaths(['recipe.json', 'app/main.js', 'app/lib/x.js'])).not.toThrow();
  });
});

describe('the daemon side: checked, written privately, removed', () => {
  const paths = new StatePaths(join(scratch, 'state'));
  const leftInTmp = () => readdirSync(paths.tmp());

  test.each([
    ['a path that leaves the dir', { 'recipe.json': '{}', '../evil': 'x' }, /"\.\.\/evil" has a "\.\." segment/],
    ['an absolute path', { 'recipe.json': '{}', '/etc/cron.d/x': 'x' }, /is absolute/],
    ['a backslash', { 'recipe.json': '{}', 'a\\b': 'x' }, /backslash/],
    ['a NUL byte', { 'recipe.json': '{}', 'a\0b': 'x' }, /NUL byte/],
    ['an empty segment', { 'recipe.json': '{}', 'a//b': 'x' }, /empty segment/],
    ['no recipe.json', { 'app.js': 'x' }, /no recipe\.json/],
  ])('refuses %s before writing anything', (_label, files, message) => {
    expect(() => decode(upload(files))).toThrow(
      expect.objectContaining({ code: 'FORKD_ERR_BAD_INPUT', message: expect.stringMatching(message) }),
    );
  });

  test('refuses content that is not base64, and a mode for a file it does not send', () => {
    const files = { 'recipe.json': b64('{}'), 'a.txt': 'not base64!' };
    expect(() => decode({ name: 'my-app', files })).toThrow(
      expect.objectContaining({ code: 'FORKD_ERR_BAD_INPUT', message: 'recipe file "a.txt" is not valid base64' }),
    );
    expect(() => decode(upload({ 'recipe.json': '{}' }, { modes: { 'run.sh': '755' } }))).toThrow(
      expect.objectContaining({ message: 'recipe_files.modes names files it does not send: run.sh' }),
    );
  });

  test(`refuses more than ${MAX_RECIPE_FILES} files, or more than 16 MiB, with 413 FORKD_ERR_LIMIT naming the limit`, () => {
    const many = Object.fromEntries(Array.from({ length: MAX_RECIPE_FILES }, (_, i) => [`f${i}`, '']));
    expect(() => decode(upload({ 'recipe.json': '{}', ...many }))).toThrow(
      expect.objectContaining({
        code: 'FORKD_ERR_LIMIT',
        status: 413,
        message: `the recipe has ${MAX_RECIPE_FILES + 1} files, over the limit of ${MAX_RECIPE_FILES}`,
      }),
    );
    const big = {
      name: 'my-app',
      files: { 'recipe.json': b64('{}'), 'seed.sql': Buffer.alloc(MAX_RECIPE_UPLOAD_BYTES).toString('base64') },
    };
    expect(() => decode(big)).toThrow(
      expect.objectContaining({
        code: 'FORKD_ERR_LIMIT',
        status: 413,
        message: `the recipe's files hold ${MAX_RECIPE_UPLOAD_BYTES + 2} bytes, over the limit of ${MAX_RECIPE_UPLOAD_BYTES} bytes (16 MiB)`,
        hint: expect.stringContaining('256 files and 16 MiB'),
      }),
    );
    expect(() => decode({ ...big, files: { ...big.files, 'recipe.json': '' } })).not.toThrow();
  });

  test('writes the files into a private dir that loadRecipe reads, and removes it after success and failure', async () => {
    const recipe = decode(
      upload(
        { 'recipe.json': RECIPE_JSON, 'conf/app.conf': 'port=8080\n', 'run.sh': '#!/bin/sh\n' },
        { modes: { 'run.sh': '755' } },
      ),
    );
    const seen = await withRecipeDir(paths, recipe, async (dir) => {
      expect(dir).toMatch(new RegExp(`^${paths.tmp()}/recipe-[^/]+/my-app$`));
      expect(statSync(join(dir, '..')).mode & 0o777).toBe(0o700);
      expect(statSync(join(dir, 'conf')).mode & 0o777).toBe(0o700);
      expect(statSync(join(dir, 'conf/app.conf')).mode & 0o777).toBe(0o644);
      expect(statSync(join(dir, 'run.sh')).mode & 0o777).toBe(0o755);
      expect(readFileSync(join(dir, 'conf/app.conf'), 'utf8')).toBe('port=8080\n');
      return loadRecipe(dir);
    });
    expect(seen).toMatchObject({ name: 'my-app', files: { '/etc/app.conf': 'conf/app.conf' }, warmup: 'true' });
    expect(leftInTmp()).toEqual([]);
    await expect(withRecipeDir(paths, recipe, () => Promise.reject(new Error('the snapshot failed')))).rejects.toThrow(
      'the snapshot failed',
    );
    expect(leftInTmp()).toEqual([]);
  });

  test('a recipe.json that names a file the upload lacks fails in loadRecipe, and leaves nothing', async () => {
    const recipe = decode(upload({ 'recipe.json': RECIPE_JSON }));
    await expect(withRecipeDir(paths, recipe, async (dir) => loadRecipe(dir))).rejects.toMatchObject({
      code: 'FORKD_ERR_BAD_INPUT',
      message: expect.stringContaining('conf/app.conf does not exist'),
    });
    expect(leftInTmp()).toEqual([]);
  });
});

describe('POST /v1/snapshots refuses a bad upload before anything runs', () => {
  // a context with nothing but the upload switch: a handler that got past its checks would fail on it
  const routerOf = (allowRecipeUpload: boolean) => apiRouter({ allowRecipeUpload } as DaemonContext);
  const postTo = (router: ReturnType<typeof routerOf>, body: string) =>
    router.dispatch(
      router.match('POST', '/v1/snapshots') as never,
      Object.assign(Readable.from([Buffer.from(body)]), { headers: {} }) as unknown as IncomingMessage,
      new URLSearchParams(),
    );
  const router = routerOf(true);
  const post = (body: string) => postTo(router, body);

  test('a daemon not started with --allow-recipe-upload refuses an upload (its build would run on the host)', async () => {
    const body = { tag: 't', recipe_files: upload({ 'recipe.json': '{}' }) };
    await expect(postTo(routerOf(false), JSON.stringify(body))).rejects.toMatchObject({
      code: 'FORKD_ERR_BAD_INPUT',
      message: expect.stringContaining('this daemon takes no recipe uploads'),
      hint: expect.stringContaining('forkd serve --allow-recipe-upload'),
    });
  });

  test('recipe and recipe_files together', async () => {
    const body = { tag: 't', recipe: 'postgres', recipe_files: upload({ 'recipe.json': '{}' }) };
    await expect(post(JSON.stringify(body))).rejects.toMatchObject({
      code: 'FORKD_ERR_BAD_INPUT',
      message: 'a snapshot takes one recipe: recipe (a name) or recipe_files, not both',
    });
  });

  test('a bad path, and a bad recipe name (the schema)', async () => {
    const evil = { tag: 't', recipe_files: upload({ 'recipe.json': '{}', '../../etc/x': 'x' }) };
    await expect(post(JSON.stringify(evil))).rejects.toMatchObject({ message: expect.stringMatching(/".." segment/) });
    const unreadable = { tag: 't', recipe_files: upload({ 'recipe.json': '{}' }, { modes: { 'recipe.json': '000' } }) };
    await expect(post(JSON.stringify(unreadable))).rejects.toMatchObject({ code: 'FORKD_ERR_BAD_INPUT' });
    const named = { tag: 't', recipe_files: { ...upload({ 'recipe.json': '{}' }), name: '../x' } };
    await expect(post(JSON.stringify(named))).rejects.toMatchObject({
      message: expect.stringContaining('"recipe_files.name" must be a string matching'),
    });
  });

  test('the body may hold the largest upload; over it, 413 with a hint that names the upload limits', async () => {
    const over = JSON.stringify({ tag: 't', warmup: 'x'.repeat(RECIPE_UPLOAD_BODY_LIMIT) });
    await expect(post(over)).rejects.toMatchObject({
      code: 'FORKD_ERR_FRAME_TOO_LARGE',
      message: `request body is over the ${RECIPE_UPLOAD_BODY_LIMIT} byte limit`,
      hint: 'recipe_files holds at most 256 files and 16 MiB',
    });
    const largest = {
      tag: 't',
      recipe: 'postgres',
      recipe_files: { name: 'x', files: { 'recipe.json': Buffer.alloc(MAX_RECIPE_UPLOAD_BYTES).toString('base64') } },
    };
    // read and parsed whole, then refused by a check of the handler: the limit let it through
    await expect(post(JSON.stringify(largest))).rejects.toMatchObject({ message: expect.stringContaining('not both') });
    // only the files have that room: the rest of the body keeps the 1 MiB of every other route
    await expect(post(JSON.stringify({ tag: 't', warmup: 'x'.repeat(JSON_BODY_LIMIT) }))).rejects.toMatchObject({
      code: 'FORKD_ERR_FRAME_TOO_LARGE',
      message: `request body is over the ${JSON_BODY_LIMIT} byte limit (besides the contents of recipe_files)`,
    });
  });
});

describe('the client side: a recipe directory of the project, read for upload', () => {
  const project = join(scratch, 'project');
  const outside = join(scratch, 'outside');
  mkdirSync(outside, { recursive: true });
  writeFileSync(join(outside, 'secret'), 'token=hunter2\n');

  /** A recipe dir in the project holding `recipe` as its recipe.json and `files`. */
  function recipeDir(name: string, recipe: unknown, files: Record<string, string> = {}): string {
    const dir = join(project, name);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'recipe.json'), JSON.stringify(recipe));
    for (const [path, text] of Object.entries(files)) {
      mkdirSync(join(dir, path, '..'), { recursive: true });
      writeFileSync(join(dir, path), text);
    }
    return dir;
  }

  test('sends recipe.json and exactly the files it names, with their modes', async () => {
    const dir = recipeDir(
      'app-recipe',
      { files: { '/etc/app.conf': './conf/app.conf', '/etc/app2.conf': 'conf/app.conf', '/bin/run': 'run.sh' } },
      { 'conf/app.conf': 'port=8080\n', 'run.sh': '#!/bin/sh\n', 'notes.md': 'not named, not sent' },
    );
    chmodSync(join(dir, 'run.sh'), 0o755);
    const sent = await readRecipeUpload(dir, project);
    expect(sent.name).toBe('app-recipe');
    expect(Object.keys(sent.files).sort()).toEqual(['conf/app.conf', 'recipe.json', 'run.sh']);
    expect(Buffer.from(sent.files['conf/app.conf']!, 'base64').toString()).toBe('port=8080\n');
    expect(sent.modes).toMatchObject({ 'run.sh': '755', 'conf/app.conf': '644' });
    // what the daemon makes of it is the directory again
    await withRecipeDir(new StatePaths(join(scratch, 'state')), decode(sent), async (copy) => {
      expect(loadRecipe(copy).files).toEqual(loadRecipe(dir).files);
    });
  });

  test('a recipe dir that resolves outside the project is refused, through a link or a relative path', async () => {
    const real = join(outside, 'escape');
    mkdirSync(real, { recursive: true });
    writeFileSync(join(real, 'recipe.json'), '{}');
    symlinkSync(real, join(project, 'escape'));
    for (const dir of [join(project, 'escape'), join(project, '..', 'outside', 'escape')]) {
      await expect(readRecipeUpload(dir, project)).rejects.toMatchObject({
        code: 'FORKD_ERR_BAD_INPUT',
        message: expect.stringContaining(`outside the project ${project}`),
        hint: expect.stringContaining('keep the recipe inside the project'),
      });
    }
    // the default root is the working directory
    await expect(readRecipeUpload(real)).rejects.toMatchObject({ code: 'FORKD_ERR_BAD_INPUT' });
    expect((await readRecipeUpload(real, scratch)).name).toBe('escape');
  });

  test('a named file that is a link, or lies under a linked directory, is refused', async () => {
    const linked = recipeDir('linked-file', { files: { '/etc/x': 'secret' } });
    symlinkSync(join(outside, 'secret'), join(linked, 'secret'));
    await expect(readRecipeUpload(linked, project)).rejects.toMatchObject({
      code: 'FORKD_ERR_BAD_INPUT',
      message: `recipe file ${join(linked, 'secret')} is a link (links are refused)`,
    });
    const inner = recipeDir('linked-inner', { files: { '/etc/x': 'copy' } }, { real: 'x' });
    symlinkSync(join(inner, 'real'), join(inner, 'copy'));
    await expect(readRecipeUpload(inner, project)).rejects.toMatchObject({
      message: expect.stringMatching(/is a link/),
    });
    const viaDir = recipeDir('linked-dir', { files: { '/etc/x': 'out/secret' } });
    symlinkSync(outside, join(viaDir, 'out'));
    await expect(readRecipeUpload(viaDir, project)).rejects.toMatchObject({
      message: expect.stringMatching(/leaves the recipe directory through a linked directory/),
    });
    const linkedRecipe = recipeDir('linked-recipe', {});
    rmSync(join(linkedRecipe, 'recipe.json'));
    symlinkSync(join(outside, 'secret'), join(linkedRecipe, 'recipe.json'));
    await expect(readRecipeUpload(linkedRecipe, project)).rejects.toMatchObject({
      message: expect.stringMatching(/is a link/),
    });
  });

  test.each([
    ['..', 'bad-dots', '../outside/secret', /has a "\.\." segment/],
    ['an absolute path', 'bad-absolute', '/etc/hostname', /is absolute/],
    ['a backslash', 'bad-backslash', 'conf\\app.conf', /backslash/],
  ])('a named file with %s is refused', async (_label, name, source, message) => {
    const dir = recipeDir(name, { files: { '/etc/x': source } });
    await expect(readRecipeUpload(dir, project)).rejects.toMatchObject({
      code: 'FORKD_ERR_BAD_INPUT',
      message: expect.stringMatching(message),
    });
  });

  test('no recipe.json, a missing named file, a bad directory name', async () => {
    const empty = join(project, 'empty');
    mkdirSync(empty, { recursive: true });
    await expect(readRecipeUpload(empty, project)).rejects.toMatchObject({
      code: 'FORKD_ERR_NOT_FOUND',
      message: `recipe file ${join(empty, 'recipe.json')} does not exist`,
    });
    const missing = recipeDir('missing', { files: { '/etc/x': 'gone.txt' } });
    await expect(readRecipeUpload(missing, project)).rejects.toMatchObject({
      code: 'FORKD_ERR_NOT_FOUND',
      message: expect.stringContaining('gone.txt does not exist'),
    });
    await expect(readRecipeUpload(recipeDir('My_Recipe', {}), project)).rejects.toMatchObject({
      code: 'FORKD_ERR_BAD_INPUT',
      message: 'invalid recipe name "My_Recipe" (the directory\'s name)',
    });
  });

  test('too many files, or too many bytes, are refused before a file is read', async () => {
    const names = Array.from({ length: MAX_RECIPE_FILES }, (_, i) => `f${i}`);
    const many = recipeDir(
      'many',
      { files: Object.fromEntries(names.map((name) => [`/x/${name}`, name])) },
      Object.fromEntries(names.map((name) => [name, ''])),
    );
    await expect(readRecipeUpload(many, project)).rejects.toMatchObject({ code: 'FORKD_ERR_LIMIT', status: 413 });
    const big = recipeDir('big', { files: { '/seed.sql': 'seed.sql' } }, { 'seed.sql': '' });
    truncateSync(join(big, 'seed.sql'), MAX_RECIPE_UPLOAD_BYTES); // sparse: nothing to read if it were read
    await expect(readRecipeUpload(big, project)).rejects.toMatchObject({
      code: 'FORKD_ERR_LIMIT',
      message: expect.stringContaining(`over the limit of ${MAX_RECIPE_UPLOAD_BYTES} bytes`),
    });
  });

  test('createSnapshot takes recipe or recipeDir, not both: refused before any request', async () => {
    const controller = new Controller({ endpoint: 'unix:/nonexistent/forkd.sock', token: 'x'.repeat(32) });
    try {
      const dir = recipeDir('both', {});
      await expect(
        controller.createSnapshot('t', { recipe: 'postgres', recipeDir: dir, root: project }),
      ).rejects.toMatchObject({
        code: 'FORKD_ERR_BAD_INPUT',
        message: expect.stringContaining('not both'),
      });
      // a good one reaches the (missing) daemon: the refusal above came before the request
      await expect(controller.createSnapshot('t', { recipeDir: dir, root: project })).rejects.toMatchObject({
        code: 'FORKD_ERR_UNREACHABLE',
      });
    } finally {
      await controller.close();
    }
  });
});
