import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** Set by the bundler (scripts/bundle.mjs): the package root relative to dist/. */
declare const FORKD_PACKAGE_ROOT: string | undefined;
const fromHere = typeof FORKD_PACKAGE_ROOT === 'string' ? FORKD_PACKAGE_ROOT : '../../';

/** The package root (holds native/ and recipes/), whether running from src/, the built lib/ or dist/. */
export const packageRoot = fileURLToPath(new URL(fromHere, import.meta.url));

/** This package's version, from package.json. */
export const packageVersion: string = (
  JSON.parse(readFileSync(new URL(`${fromHere}package.json`, import.meta.url), 'utf8')) as { version: string }
).version;
