/** Which snapshots a test run forks, which it makes, and which the forkd GitHub Action made for it. */
import { resolve } from 'node:path';
import { ForkdError } from 'forkd-action';
import type { ForkdRunOptions, ForkdSnapshotSpec } from './options.js';

/** The snapshot the Action made for this job: FORKD_SNAPSHOT (its tag) and FORKD_SNAPSHOT_SOURCE (recipe or pack). */
export interface ActionSnapshot {
  tag: string;
  source: string;
}

export function actionSnapshot(env: NodeJS.ProcessEnv = process.env): ActionSnapshot | undefined {
  if (!env.FORKD_SNAPSHOT) return undefined;
  const source = env.FORKD_SNAPSHOT_SOURCE ?? '';
  // a recipe directory the Action was given relative to the workspace
  const workspace = env.GITHUB_WORKSPACE ?? process.cwd();
  return { tag: env.FORKD_SNAPSHOT, source: isRecipeDir(source) ? resolve(workspace, source) : source };
}

/** The options with their recipe directories made absolute (relative to the config's directory), to compare and to send. */
export function withAbsoluteRecipes<T extends ForkdRunOptions>(options: T, configDir: string): T {
  const snapshots = Object.fromEntries(
    Object.entries(options.snapshots ?? {}).map(([name, spec]) => [
      name,
      isRecipeDir(spec.recipe) ? { ...spec, recipe: resolve(configDir, spec.recipe) } : spec,
    ]),
  );
  return options.snapshots ? { ...options, snapshots } : options;
}

export interface SnapshotPlan {
  /** Each configured name -> its tag on the engine. */
  tags: Record<string, string>;
  /** Tags to make when they are missing, and how. */
  make: Record<string, ForkdSnapshotSpec>;
  /** The Action's tag, when the run forks it (never made here: it must be on the engine). */
  action: string | undefined;
  /** The tags the fixtures fork. */
  sandbox: string;
  postgres: string | null;
  /** The app fixture's (Playwright): a named snapshot, else the first made from a recipe directory. */
  app: string | null;
}

/** A recipe given as a directory of the user's project (a path), not a name from this package. */
export const isRecipeDir = (recipe: string | undefined): recipe is string => !!recipe && recipe.includes('/');

/** A spec that says no more than "the recipe (or pack) the Action made its snapshot from". */
function standsForAction(spec: ForkdSnapshotSpec, action: ActionSnapshot): boolean {
  const fields = Object.entries(spec).filter(([, value]) => value !== undefined);
  return (
    fields.length === 1 && (fields[0]![0] === 'recipe' || fields[0]![0] === 'pull') && fields[0]![1] === action.source
  );
}

export function planSnapshots(options: ForkdRunOptions, action = actionSnapshot()): SnapshotPlan {
  const specs = Object.entries(options.snapshots ?? {});
  const tags: Record<string, string> = {};
  const make: Record<string, ForkdSnapshotSpec> = {};
  let postgres: string | null = null;
  let app: string | null = null;
  let forksAction = false;
  if (!specs.length) {
    if (!action) {
      throw new ForkdError('FORKD_ERR_BAD_INPUT', 'forkd() names no snapshot, and no forkd Action ran before', {
        hint: "name one: forkd({ snapshots: { postgres: { recipe: 'postgres' } } }), or run after the forkd Action (it exports FORKD_SNAPSHOT)",
      });
    }
    tags[action.tag] = action.tag;
    if (action.source === 'postgres') postgres = action.tag;
    forksAction = true;
  }
  for (const [name, spec] of specs) {
    const fromAction = action !== undefined && standsForAction(spec, action);
    const tag = fromAction ? action.tag : name;
    tags[name] = tag;
    if (fromAction) forksAction = true;
    else make[name] = spec;
    if (spec.recipe === 'postgres') postgres ??= tag;
    if (isRecipeDir(spec.recipe)) app ??= tag;
  }
  // a fixture may name a configured snapshot, or any tag on the engine (checked once connected)
  const tagOf = (name: string) => tags[name] ?? name;
  return {
    tags,
    make,
    action: forksAction ? action!.tag : undefined,
    sandbox: tagOf(options.sandbox ?? Object.keys(tags)[0]!),
    postgres: options.postgres ? tagOf(options.postgres) : postgres,
    app: options.app ? tagOf(options.app) : app,
  };
}
