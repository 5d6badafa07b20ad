/**
 * A recipe sent to the daemon as its files (POST /v1/snapshots `recipe_files`). The daemon never
 * reads a directory an API caller names: it checks the files, writes them into a fresh private
 * directory under <state>/tmp, builds from there, and removes it whatever happens.
 */
import { rmSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { checkRecipeFilePaths, checkRecipeUploadSize, refuseTwoRecipes } from '../api/recipe-files.js';
import type { CreateSnapshotRequest, RecipeFiles } from '../api/types.js';
import type { StatePaths } from '../common/state-dir.js';
import { onProcessExit } from '../engine/reaper.js';
import { ForkdError } from '../errors.js';
import { JSON_BODY_LIMIT } from './body.js';

const DEFAULT_MODE = 0o644;

export interface UploadedRecipe {
  name: string;
  files: Array<{ path: string; data: Buffer; mode: number }>;
}

/**
 * Only an upload's files may take POST /v1/snapshots past the limit every JSON body keeps to: the
 * rest (warm-up, ports, the files' paths and modes) is refused over it, as an oversized body is.
 */
function checkBodyBesidesFiles(body: CreateSnapshotRequest): void {
  const upload = body.recipe_files;
  const rest = upload ? { ...body, recipe_files: { ...upload, files: Object.keys(upload.files) } } : body;
  if (Buffer.byteLength(JSON.stringify(rest)) > JSON_BODY_LIMIT) {
    throw new ForkdError(
      'FORKD_ERR_FRAME_TOO_LARGE',
      `request body is over the ${JSON_BODY_LIMIT} byte limit (besides the contents of recipe_files)`,
      { hint: 'only the recipe files may take a snapshot request past 1 MiB; keep the warm-up short' },
    );
  }
}

/**
 * The recipe a snapshot request uploads, decoded (undefined when it sends none); anything wrong
 * with the request or its files is refused here, before a byte is written.
 */
export function uploadedRecipe(body: CreateSnapshotRequest, allowed: boolean): UploadedRecipe | undefined {
  checkBodyBesidesFiles(body);
  refuseTwoRecipes(body.recipe, body.recipe_files !== undefined);
  if (body.recipe_files && !allowed) {
    throw new ForkdError(
      'FORKD_ERR_BAD_INPUT',
      'this daemon takes no recipe uploads: a recipe\u2019s build runs on its host',
      {
        hint: 'start it with `forkd serve --allow-recipe-upload` where only you hold its token (the test runner plugins start theirs so), or build the recipe with the CLI: forkd snapshot --tag T --recipe ./dir',
      },
    );
  }
  return body.recipe_files && decode(body.recipe_files);
}

function decode(upload: RecipeFiles): UploadedRecipe {
  const paths = Object.keys(upload.files);
  checkRecipeUploadSize(
    paths.length,
    Object.values(upload.files).reduce((sum, text) => sum + Buffer.byteLength(text, 'base64'), 0),
  );
  checkRecipeFilePaths(paths);
  const modes = upload.modes ?? {};
  const stray = Object.keys(modes).filter((path) => !(path in upload.files));
  if (stray.length) {
    throw new ForkdError(
      'FORKD_ERR_BAD_INPUT',
      `recipe_files.modes names files it does not send: ${stray.join(', ')}`,
      { hint: 'give a mode only for a path in recipe_files.files' },
    );
  }
  const files = Object.entries(upload.files).map(([path, text]) => {
    const data = Buffer.from(text, 'base64');
    if (data.toString('base64') !== text) {
      throw new ForkdError('FORKD_ERR_BAD_INPUT', `recipe file ${JSON.stringify(path)} is not valid base64`, {
        hint: 'send each file as standard base64 with padding (RFC 4648 section 4)',
      });
    }
    const mode = modes[path];
    return { path, data, mode: mode === undefined ? DEFAULT_MODE : Number.parseInt(mode, 8) };
  });
  return { name: upload.name, files };
}

/**
 * Writes `recipe` into `<state>/tmp/recipe-<random>/<name>/` (directories 0700, which keeps the
 * files to the daemon's user whatever their modes), runs `use` with that directory, and removes
 * it afterwards: on success, on failure, and when the daemon exits first.
 */
export async function withRecipeDir<T>(
  paths: StatePaths,
  recipe: UploadedRecipe,
  use: (dir: string) => Promise<T>,
): Promise<T> {
  const scratch = await mkdtemp(join(paths.tmp(), 'recipe-'));
  const unregister = onProcessExit(() => rmSync(scratch, { recursive: true, force: true }));
  try {
    const dir = join(scratch, recipe.name);
    for (const { path, data, mode } of recipe.files) {
      const file = join(dir, path);
      await mkdir(dirname(file), { recursive: true, mode: 0o700 });
      await writeFile(file, data, { flag: 'wx', mode: 0o600 });
      await chmod(file, mode);
    }
    return await use(dir);
  } finally {
    await rm(scratch, { recursive: true, force: true });
    unregister();
  }
}
