import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';

/** One import of a module under the source root: paths relative to it, `.ts` (e.g. `engine/engine.ts`). */
export interface ImportEdge {
  from: string;
  to: string;
}

/** Static imports and re-exports (`import … from`, `export … from`, `import '…'`) and dynamic `import('…')`. */
const SPECIFIERS = [
  /^\s*(?:import|export)\b[^;'"]*?\bfrom\s*['"]([^'"]+)['"]/gm,
  /^\s*import\s*['"]([^'"]+)['"]/gm,
  /\bimport\(\s*['"]([^'"]+)['"]\s*\)/g,
];

/** Every relative import between the `.ts` files under `root` (package imports are not edges). */
export function importGraph(root: string): ImportEdge[] {
  const files = readdirSync(root, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts'));
  return files.flatMap((file) => {
    const text = readFileSync(join(root, file), 'utf8');
    const specifiers = SPECIFIERS.flatMap((pattern) => [...text.matchAll(pattern)].map((m) => m[1]!));
    return specifiers
      .filter((s) => s.startsWith('.'))
      .map((s) => ({
        from: file,
        to: relative(root, resolve(root, dirname(file), s)).replace(/\.js$/, '.ts'),
      }));
  });
}

/** A layer rule: files under `from` must not import files matching `forbidden`. */
export interface LayerRule {
  name: string;
  from: (file: string) => boolean;
  forbidden: (target: string) => boolean;
}

export const under =
  (...dirs: string[]) =>
  (file: string) =>
    dirs.some((dir) => file.startsWith(`${dir}/`));

/** The imports that break a rule, as `rule: from -> to`. */
export function layerViolations(edges: ImportEdge[], rules: LayerRule[]): string[] {
  return rules.flatMap((rule) =>
    edges.filter((e) => rule.from(e.from) && rule.forbidden(e.to)).map((e) => `${rule.name}: ${e.from} -> ${e.to}`),
  );
}
