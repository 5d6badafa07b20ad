// Bundles the Action and the CLI it starts into dist/ (committed: the runner never runs npm).
//   node scripts/bundle.mjs          write dist/
//   node scripts/bundle.mjs --check  fail if dist/ differs from a fresh bundle (run by npm test)
import { build } from 'esbuild';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const check = process.argv.includes('--check');
const outdir = check ? mkdtempSync(join(tmpdir(), 'forkd-dist-')) : 'dist';

await build({
  entryPoints: { forkd: 'src/cli/main.ts', action: 'src/action/main.ts' },
  outdir,
  outExtension: { '.js': '.mjs' },
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  // the zstd binding is a native module: copied beside the bundle, loaded by its own loader
  loader: { '.node': 'copy' },
  assetNames: '[name]',
  // CommonJS dependencies (and the zstd loader) expect require, __dirname and __filename; some
  // bundled ES modules declare their own __dirname, so the free ones are renamed, not declared
  banner: {
    js: "import { createRequire as __forkdCreateRequire } from 'node:module'; import { fileURLToPath as __forkdPath } from 'node:url'; const require = __forkdCreateRequire(import.meta.url); const __forkdFilename = __forkdPath(import.meta.url); const __forkdDirname = __forkdPath(new URL('.', import.meta.url));",
  },
  // dist/ is one level below the package root (src/engine/ is two)
  define: { FORKD_PACKAGE_ROOT: '"../"', __dirname: '__forkdDirname', __filename: '__forkdFilename' },
  legalComments: 'none',
  logLevel: 'warning',
});

if (check) {
  const files = (dir) => readdirSync(dir).sort();
  const stale = [...new Set([...files('dist'), ...files(outdir)])].filter((name) => {
    try {
      return !readFileSync(join('dist', name)).equals(readFileSync(join(outdir, name)));
    } catch {
      return true;
    }
  });
  rmSync(outdir, { recursive: true, force: true });
  if (stale.length) {
    console.error(`dist/ is stale (${stale.join(', ')}): run npm run bundle and commit dist/`);
    process.exit(1);
  }
}
