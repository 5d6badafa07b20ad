/**
 * The rules of a recipe sent as its files (POST /v1/snapshots `recipe_files`): which paths may be
 * sent, and how many files and bytes. The client checks them before it reads and sends; the
 * daemon checks them again before it writes anything.
 */
import { ForkdError } from '../errors.js';
import { MAX_RECIPE_FILES, MAX_RECIPE_UPLOAD_BYTES } from './schemas.js';

export const RECIPE_FILE_PATH_MAX = 512;
const SEGMENT_MAX = 128;
const SEGMENT = /^[A-Za-z0-9._+@-]+$/;
const PATH_RULE =
  'a recipe file is a relative path with forward slashes, each segment of A-Z a-z 0-9 . _ - + @ ' +
  `(at most ${SEGMENT_MAX} characters, not . or ..), at most ${RECIPE_FILE_PATH_MAX} characters in all`;

/** What is wrong with `path` as the name of a recipe file, or undefined when nothing is. */
export function recipeFilePathProblem(path: string): string | undefined {
  if (path.includes('\0')) return 'holds a NUL byte';
  if (path.includes('\\')) return 'holds a backslash (use forward slashes)';
  if (path.startsWith('/')) return 'is absolute';
  if (path.length > RECIPE_FILE_PATH_MAX) return `is longer than ${RECIPE_FILE_PATH_MAX} characters`;
  for (const segment of path.split('/')) {
    if (segment === '') return 'has an empty segment';
    if (segment === '.' || segment === '..') return `has a "${segment}" segment`;
    if (segment.length > SEGMENT_MAX) return `has a segment longer than ${SEGMENT_MAX} characters`;
    if (!SEGMENT.test(segment)) return `has a character outside A-Z a-z 0-9 . _ - + @ in "${segment}"`;
  }
  return undefined;
}

/** Refuses (FORKD_ERR_BAD_INPUT) a path that recipeFilePathProblem finds fault with. */
export function checkRecipeFilePath(path: string): void {
  const problem = recipeFilePathProblem(path);
  if (problem) {
    throw new ForkdError('FORKD_ERR_BAD_INPUT', `recipe file ${JSON.stringify(path)} ${problem}`, {
      hint: PATH_RULE,
    });
  }
}

/**
 * Refuses a set of recipe files that is not a recipe directory: a bad path, no recipe.json, or a
 * path that is also another's directory (`app` and `app/main.js`).
 */
export function checkRecipeFilePaths(paths: string[]): void {
  for (const path of paths) checkRecipeFilePath(path);
  if (!paths.includes('recipe.json')) {
    throw new ForkdError('FORKD_ERR_BAD_INPUT', 'the recipe files hold no recipe.json', {
      hint: 'send the recipe directory: recipe.json and the files its "files" field names',
    });
  }
  const files = new Set(paths);
  for (const path of paths) {
    const parts = path.split('/');
    const clash = parts.slice(1).findIndex((_, i) => files.has(parts.slice(0, i + 1).join('/')));
    if (clash >= 0) {
      throw new ForkdError(
        'FORKD_ERR_BAD_INPUT',
        `recipe file ${JSON.stringify(path)} is under ${JSON.stringify(parts.slice(0, clash + 1).join('/'))}, which is a file`,
        { hint: 'a path is either a file or a directory' },
      );
    }
  }
}

/** Refuses (413 FORKD_ERR_LIMIT) more files or bytes (decoded) than one upload may hold. */
export function checkRecipeUploadSize(files: number, bytes: number): void {
  const hint =
    `a recipe upload holds at most ${MAX_RECIPE_FILES} files and ${MAX_RECIPE_UPLOAD_BYTES / 1024 / 1024} MiB; ` +
    "let the recipe's packages or build command bring larger things into the image";
  if (files > MAX_RECIPE_FILES) {
    throw new ForkdError('FORKD_ERR_LIMIT', `the recipe has ${files} files, over the limit of ${MAX_RECIPE_FILES}`, {
      hint,
      status: 413,
    });
  }
  if (bytes > MAX_RECIPE_UPLOAD_BYTES) {
    throw new ForkdError(
      'FORKD_ERR_LIMIT',
      `the recipe's files hold ${bytes} bytes, over the limit of ${MAX_RECIPE_UPLOAD_BYTES} bytes (${MAX_RECIPE_UPLOAD_BYTES / 1024 / 1024} MiB)`,
      { hint, status: 413 },
    );
  }
}

/** A snapshot is made from one recipe: a name, or a directory's files, never both. */
export function refuseTwoRecipes(recipe: string | undefined, uploaded: boolean): void {
  if (recipe !== undefined && uploaded) {
    throw new ForkdError(
      'FORKD_ERR_BAD_INPUT',
      'a snapshot takes one recipe: recipe (a name) or recipe_files, not both',
      {
        hint: 'name a packaged recipe in recipe, or send your own recipe directory in recipe_files (the client: recipeDir)',
      },
    );
  }
}
