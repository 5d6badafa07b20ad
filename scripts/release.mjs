// Writes the engine release the Action's `version` input downloads:
//   node scripts/release.mjs [--version V] [--out DIR]
// DIR/forkd-V-linux-x64.tar.gz (package.json, dist/, native/, recipes/, scripts/) and its .sha256.
// Upload both to the GitHub release vV. --version overrides package.json's (for prereleases).
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { version: { type: 'string' }, out: { type: 'string', default: 'release' } } });
const pkg = JSON.parse(readFileSync('package.json', 'utf8'));
const version = values.version ?? pkg.version;
if (!/^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$/.test(version)) throw new Error(`${version} is not a release version`);

const out = resolve(values.out);
mkdirSync(out, { recursive: true });
const stage = mkdtempSync(join(tmpdir(), 'forkd-release-'));
try {
  writeFileSync(join(stage, 'package.json'), `${JSON.stringify({ ...pkg, version }, null, 2)}\n`);
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
    '-C',
    process.cwd(),
    'dist',
    'native',
    'recipes',
    'scripts',
  ]);
  const sha256 = createHash('sha256').update(readFileSync(archive)).digest('hex');
  writeFileSync(`${archive}.sha256`, `${sha256}  ${basename(archive)}\n`);
  console.log(`${archive}\n${sha256}`);
} finally {
  rmSync(stage, { recursive: true, force: true });
}
