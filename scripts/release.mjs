// Writes a release: the engine the Action's `version` input downloads and, with --packs, the
// official packs that forkd pulls instead of building:
//   node scripts/release.mjs [--version V] [--out DIR] [--packs [--recipes a,b]]
// DIR/forkd-V-linux-x64.tar.gz (package.json, dist/, native/, recipes/, scripts/, the pins) and its
// .sha256; with --packs also DIR/forkd-NAME-V.forkd.tar.zst for base and every recipe (or those
// named), DIR/registry.json (forkd/NAME -> V -> url, sha256, size) and DIR/official-packs.json (the
// pins the npm package ships). Upload DIR to the GitHub release vV. --version overrides
// package.json's (for prereleases). The packs are built here, from source (FORKD_BUILD=local).
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { stateDir } from '../lib/common/state-dir.js';
import { officialFile, officialName, PINS_FILE } from '../lib/hub/official.js';

const { values } = parseArgs({
  options: {
    version: { type: 'string' },
    out: { type: 'string', default: 'release' },
    packs: { type: 'boolean', default: false },
    recipes: { type: 'string' },
  },
});
const pkg = JSON.parse(readFileSync('package.json', 'utf8'));
const version = values.version ?? pkg.version;
if (!/^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$/.test(version)) throw new Error(`${version} is not a release version`);

const sha256Of = (file) => createHash('sha256').update(readFileSync(file)).digest('hex');
const out = resolve(values.out);
mkdirSync(out, { recursive: true });

/**
 * The official packs: each snapshot taken in a state dir of its own (sharing the built images of
 * this machine's), packed, and listed with its sha256 and size.
 */
function officialPacks() {
  const allRecipes = readdirSync('recipes', { withFileTypes: true })
    .filter((e) => e.isDirectory())
    .map((e) => e.name);
  // --recipes '' makes the base pack alone
  const recipes = values.recipes === undefined ? allRecipes : values.recipes.split(',').filter(Boolean);
  const unknown = recipes.filter((r) => !allRecipes.includes(r));
  if (unknown.length) throw new Error(`no recipe ${unknown.join(', ')} in recipes/`);
  const home = mkdtempSync(join(tmpdir(), 'forkd-release-home-'));
  const images = join(stateDir(), 'images');
  mkdirSync(images, { recursive: true });
  symlinkSync(images, join(home, 'images'));
  const env = { ...process.env, FORKD_HOME: home, FORKD_BUILD: 'local' };
  const forkd = (...args) =>
    execFileSync(process.execPath, ['bin/forkd.js', ...args], { env, stdio: ['ignore', 'inherit', 'inherit'] });
  const pins = {};
  try {
    for (const name of ['base', ...recipes]) {
      console.error(`release: official pack ${name}`);
      forkd('snapshot', '--tag', name, ...(name === 'base' ? [] : ['--recipe', name]), '--quiet');
      const file = officialFile(name, version);
      forkd('pack', '--tag', name, '--out', join(out, file));
      pins[name] = { file, sha256: sha256Of(join(out, file)), size: statSync(join(out, file)).size };
    }
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
  const registry = { schema_version: 1, packages: {} };
  for (const [name, pin] of Object.entries(pins)) {
    registry.packages[officialName(name)] = {
      description:
        name === 'base' ? 'the base image (kernel, initramfs with the agent), idle' : `recipes/${name}, warmed`,
      versions: { [version]: { url: pin.file, sha256: pin.sha256, size_bytes: pin.size } },
    };
  }
  writeFileSync(join(out, 'registry.json'), `${JSON.stringify(registry, null, 2)}\n`);
  writeFileSync(join(out, PINS_FILE), `${JSON.stringify({ version, packs: pins }, null, 2)}\n`);
}

if (values.packs) officialPacks();

const stage = mkdtempSync(join(tmpdir(), 'forkd-release-'));
try {
  writeFileSync(join(stage, 'package.json'), `${JSON.stringify({ ...pkg, version }, null, 2)}\n`);
  // the engine pulls the official packs of its own version: the pins of this release, if made
  const pins = values.packs ? join(out, PINS_FILE) : undefined;
  if (pins) copyFileSync(pins, join(stage, PINS_FILE));
  const archive = join(out, `forkd-${version}-linux-x64.tar.gz`);
  // fixed owner and mtime: the same tree gives the same tarball
  const tarFlags = ['--sort=name', '--owner=0', '--group=0', '--numeric-owner', '--mtime=@0'];
  execFileSync('tar', [
    ...tarFlags,
    '-czf',
    archive,
    '-C',
    stage,
    'package.json',
    ...(pins ? [PINS_FILE] : []),
    '-C',
    process.cwd(),
    'dist',
    'native',
    'recipes',
    'scripts',
  ]);
  const sha256 = sha256Of(archive);
  writeFileSync(`${archive}.sha256`, `${sha256}  ${basename(archive)}\n`);
  console.log(`${archive}\n${sha256}`);
} finally {
  rmSync(stage, { recursive: true, force: true });
}
