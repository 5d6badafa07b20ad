/**
 * A recipe directory of the user's project, read for the daemon as its files (`recipe_files`):
 * recipe.json and exactly the files its "files" field names. The daemon never gets a path, so an
 * API caller cannot make it read a directory; this side makes sure that what is sent comes from
 * the recipe directory inside the project, and from nowhere a link points to.
 */
import { constants } from 'node:fs';
import { lstat, open, realpath } from 'node:fs/promises';
import { basename, join, posix, resolve, sep } from 'node:path';
import { checkRecipeFilePath, checkRecipeFilePaths, checkRecipeUploadSize } from '../api/recipe-files.js';
import { RECIPE_NAME_PATTERN_SOURCE } from '../api/schemas.js';
import type { RecipeFiles } from '../api/types.js';
import { ForkdError } from '../errors.js';

const RECIPE_NAME = new RegExp(RECIPE_NAME_PATTERN_SOURCE);
const FORMAT_HINT = 'the recipe format is in recipes/README.md';

const inside = (dir: string, path: string) => path === dir || path.startsWith(`${dir}${sep}`);

async function realDir(path: string, what: string): Promise<string> {
  try {
    const real = await realpath(path);
    if ((await lstat(real)).isDirectory()) return real;
  } catch {
    // reported below, as for a file that is not a directory
  }
  throw new ForkdError('FORKD_ERR_NOT_FOUND', `${what} ${path} is not a directory`, {
    hint: 'give the directory that holds recipe.json',
  });
}

/** The files recipe.json's "files" field names, as paths relative to the recipe directory. */
function referencedFiles(recipeJson: Buffer, dir: string): string[] {
  let raw: unknown;
  try {
    raw = JSON.parse(recipeJson.toString('utf8'));
  } catch (err) {
    throw new ForkdError(
      'FORKD_ERR_BAD_INPUT',
      `${join(dir, 'recipe.json')} is not valid JSON: ${(err as Error).message}`,
      { hint: FORMAT_HINT },
    );
  }
  const files = (raw as { files?: unknown } | null)?.files ?? {};
  if (typeof files !== 'object' || files === null || Array.isArray(files))
    throw new ForkdError('FORKD_ERR_BAD_INPUT', `${join(dir, 'recipe.json')}: "files" must be an object`, {
      hint: FORMAT_HINT,
    });
  return Object.values(files).map((source) => {
    if (typeof source !== 'string')
      throw new ForkdError(
        'FORKD_ERR_BAD_INPUT',
        `${join(dir, 'recipe.json')}: "files" maps image paths to file names`,
        { hint: FORMAT_HINT },
      );
    // `..` is refused as written, before normalising could hide it; `./app.js` and `app.js` are one file
    const path = source.split('/').includes('..') ? source : posix.normalize(source);
    checkRecipeFilePath(path);
    return path;
  });
}

/** The size of `path` in `dir`, a regular file that neither is a link nor lies outside `dir` through one. */
async function inspect(dir: string, path: string): Promise<number> {
  const file = join(dir, path);
  let stats;
  try {
    stats = await lstat(file);
  } catch {
    throw new ForkdError('FORKD_ERR_NOT_FOUND', `recipe file ${file} does not exist`, {
      hint: 'recipe.json and the files its "files" field names must be in the recipe directory',
    });
  }
  if (stats.isSymbolicLink()) throw notRegular(file, 'is a link (links are refused)');
  if (!inside(dir, await realpath(file)))
    throw notRegular(file, 'leaves the recipe directory through a linked directory');
  if (!stats.isFile()) throw notRegular(file, 'is not a regular file');
  return stats.size;
}

/** The content and permission bits of a file inspect() passed, opened without following a link. */
async function read(dir: string, path: string): Promise<{ data: Buffer; mode: number }> {
  const file = join(dir, path);
  const handle = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    const stats = await handle.stat();
    if (!stats.isFile()) throw notRegular(file, 'is not a regular file');
    return { data: await handle.readFile(), mode: stats.mode & 0o777 };
  } finally {
    await handle.close();
  }
}

function notRegular(file: string, why: string): ForkdError {
  return new ForkdError('FORKD_ERR_BAD_INPUT', `recipe file ${file} ${why}`, {
    hint: 'a recipe sends only regular files inside its directory: copy the file in instead of linking it',
  });
}

/**
 * `recipeDir` as `recipe_files`. It must resolve (links followed) inside `root`, the user's project
 * (default: the working directory); recipe.json and each file it names must be regular files in
 * it, not links; the upload's limits are checked before a file is read.
 */
export async function readRecipeUpload(recipeDir: string, root: string = process.cwd()): Promise<RecipeFiles> {
  const name = basename(resolve(recipeDir));
  if (!RECIPE_NAME.test(name)) {
    throw new ForkdError('FORKD_ERR_BAD_INPUT', `invalid recipe name ${JSON.stringify(name)} (the directory's name)`, {
      hint: 'recipe names are lowercase letters, digits and dashes: rename the directory',
    });
  }
  const realRoot = await realDir(root, 'project root');
  const dir = await realDir(recipeDir, 'recipe directory');
  if (!inside(realRoot, dir)) {
    throw new ForkdError(
      'FORKD_ERR_BAD_INPUT',
      `recipe directory ${recipeDir}${dir === recipeDir ? '' : ` (${dir})`} is outside the project ${realRoot}`,
      { hint: 'keep the recipe inside the project (the repository: the nearest directory up with .git)' },
    );
  }
  checkRecipeUploadSize(1, await inspect(dir, 'recipe.json'));
  const recipe = await read(dir, 'recipe.json');
  const paths = [...new Set(['recipe.json', ...referencedFiles(recipe.data, dir)])];
  checkRecipeFilePaths(paths);
  const sizes = await Promise.all(paths.map((path) => inspect(dir, path)));
  checkRecipeUploadSize(
    paths.length,
    sizes.reduce((sum, size) => sum + size, 0),
  );
  const files: Record<string, string> = {};
  const modes: Record<string, string> = {};
  for (const path of paths) {
    const { data, mode } = path === 'recipe.json' ? recipe : await read(dir, path);
    files[path] = data.toString('base64');
    modes[path] = mode.toString(8).padStart(3, '0');
  }
  return { name, files, modes };
}
