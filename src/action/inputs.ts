/** The Action's inputs, read once and checked; everything after works on `Inputs`. */
import { getInput } from '@actions/core';
import { basename } from 'node:path';
import { ForkdError } from '../errors.js';

/** A recipe is a name under recipes/ or the path of a recipe directory in the workspace (./ci/my-recipe). */
export type SnapshotSource = { kind: 'recipe'; recipe: string } | { kind: 'hub'; ref: string };

export interface Inputs {
  /** The warmed parent the job forks from: a recipe to build, or a pack to pull. */
  snapshot: SnapshotSource;
  /** The tag it gets on the engine. */
  tag: string;
  /** More recipes to build and snapshot (each under its own name). */
  recipes: string[];
  poolSize: number;
  accel: 'auto' | 'kvm' | 'tcg';
  cache: boolean;
  /** The engine release to run; empty: the one bundled with this Action. */
  version: string;
}

const RECIPE = /^[a-z0-9][a-z0-9-]{0,63}$/;
/** ./dir/recipe in the workspace: no segment starts with a dot, so it cannot climb out. */
const RECIPE_PATH = /^\.\/(?:[\w-][\w.-]*\/)*[a-z0-9][a-z0-9-]{0,40}\/?$/;
const VERSION = /^\d{1,4}\.\d{1,4}\.\d{1,4}(-[0-9A-Za-z.-]{1,40})?$/;
const HUB_REF = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\/[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(@[A-Za-z0-9][A-Za-z0-9_.-]{0,63})?$/;

function bad(input: string, value: string, expected: string): ForkdError {
  return new ForkdError('FORKD_ERR_BAD_INPUT', `input ${input}: ${JSON.stringify(value)} is not ${expected}`, {
    hint: `fix "${input}:" under "with:" in the workflow`,
  });
}

const isRecipe = (value: string) => RECIPE.test(value) || RECIPE_PATH.test(value);

function snapshotSource(value: string): SnapshotSource {
  if (/^https?:\/\//.test(value) || HUB_REF.test(value)) return { kind: 'hub', ref: value };
  if (isRecipe(value)) return { kind: 'recipe', recipe: value };
  throw bad('snapshot', value, 'a recipe name (e.g. postgres) or ./path, owner/name[@version], or a pack URL');
}

/** The tag a snapshot source gets: the recipe's name, or the pack's name. */
function tagOf(source: SnapshotSource): string {
  if (source.kind === 'recipe') return basename(source.recipe);
  const name = source.ref
    .split('/')
    .at(-1)!
    .replace(/\.forkd\.tar\.zst$/, '')
    .replace(/@.*$/, '');
  return name.replace(/[^A-Za-z0-9_-]/g, '-').slice(0, 64) || 'pulled';
}

/** Checks raw input values (as the runner passes them); pure, so it is unit-tested. */
export function parseInputs(raw: (name: string) => string): Inputs {
  const snapshot = snapshotSource(raw('snapshot') || 'base');
  const recipes = raw('recipes')
    .split(/[\s,]+/)
    .filter(Boolean);
  for (const recipe of recipes) if (!isRecipe(recipe)) throw bad('recipes', recipe, 'a recipe name or ./path');
  const pool = raw('pool-size') || '2';
  if (!/^\d{1,2}$/.test(pool)) throw bad('pool-size', pool, 'a whole number from 0 to 99');
  const accel = raw('accel') || 'auto';
  if (accel !== 'auto' && accel !== 'kvm' && accel !== 'tcg') throw bad('accel', accel, 'auto, kvm or tcg');
  const cache = (raw('cache') || 'true').toLowerCase();
  if (!['true', 'false'].includes(cache)) throw bad('cache', cache, 'true or false');
  const version = raw('version').replace(/^v/, '');
  if (version && !VERSION.test(version)) throw bad('version', version, 'a release version such as 0.1.0');
  return { snapshot, tag: tagOf(snapshot), recipes, poolSize: Number(pool), accel, cache: cache === 'true', version };
}

export function getInputs(): Inputs {
  return parseInputs((name) => getInput(name));
}
