import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** The package root (holds native/ and recipes/), whether running from src/ or the built lib/. */
export const packageRoot = fileURLToPath(new URL('../../', import.meta.url));

/** This package's version, from package.json. */
export const packageVersion: string = (
  JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
).version;
