import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { describe, expect, test } from 'vitest';
import { markdownBlocks, readmeBlocks, readmeSnippets, readmeText, repoRoot } from '../helpers/readme-snippets.js';

const MAX_LINES = 300;

/** FORKD_* names in the source that are no setting of the user's, and why they stay out of the README. */
const INTERNAL_NAMES: Record<string, string> = {
  FORKD_PACKAGE_ROOT: 'a constant esbuild defines when it bundles dist/, not read from the environment',
  FORKD_VITEST_OPTIONS: 'the Vitest plugin hands its options to its own global setup through it',
  FORKD_PLAYWRIGHT_OPTIONS: 'the Playwright plugin hands its options to its own global setup through it',
  FORKD_PLAYWRIGHT_CONNECTION: 'the Playwright global setup hands its workers the connection through it',
};

/** The snippets the consumer test runs in its scratch project. */
const CONSUMER_SNIPPETS = ['consumer/vitest.config.ts', 'consumer/tests/users.test.ts', 'consumer/cli.sh'];

function tsFiles(dir: string): string[] {
  return readdirSync(join(repoRoot, dir), { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.ts'))
    .map((f) => join(repoRoot, dir, f));
}

function sourceText(dirs: string[]): string {
  return dirs
    .flatMap(tsFiles)
    .map((f) => readFileSync(f, 'utf8'))
    .join('\n');
}

const mentions = (text: string, word: string) => new RegExp(`\\b${word}\\b`).test(text);

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens. */
function slug(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, '')
    .replace(/\s/g, '-');
}

function anchors(markdown: string): Set<string> {
  const withoutCode = markdown.replace(/^```[\s\S]*?^```/gm, '');
  return new Set([...withoutCode.matchAll(/^#{1,6}\s+(.+)$/gm)].map((m) => slug(m[1]!)));
}

/** Relative links of a Markdown file that lead nowhere: a missing file, or a missing heading. */
function brokenLinks(file: string): string[] {
  const text = readFileSync(file, 'utf8').replace(/^```[\s\S]*?^```/gm, '');
  const broken: string[] = [];
  for (const [, target] of text.matchAll(/\]\(([^)\s]+)\)/g)) {
    if (/^[a-z]+:/i.test(target!)) continue;
    const [path, fragment] = target!.split('#') as [string, string | undefined];
    const resolved = path ? join(dirname(file), path) : file;
    if (!existsSync(resolved)) broken.push(`${target} (no such file)`);
    else if (fragment && resolved.endsWith('.md') && !anchors(readFileSync(resolved, 'utf8')).has(fragment))
      broken.push(`${target} (no such heading)`);
  }
  return broken.map((b) => `${relative(repoRoot, file)}: ${b}`);
}

describe('README.md', () => {
  const readme = readmeText();

  test(`has at most ${MAX_LINES} lines`, () => {
    const lines = readme.split('\n').length - (readme.endsWith('\n') ? 1 : 0);
    expect(lines).toBeLessThanOrEqual(MAX_LINES);
  });

  test('every code block is a tested snippet or marked illustrative, on the line right before it', () => {
    const blocks = readmeBlocks();
    expect(blocks.length).toBeGreaterThan(0);
    const unmarked = blocks.filter((b) => b.marker === null).map((b) => `line ${b.line}`);
    expect(unmarked, 'add <!-- snippet: NAME --> or <!-- illustrative --> right before these fences').toEqual([]);
  });

  test('snippet names are unique relative paths, and the consumer test finds its snippets', () => {
    const names = readmeBlocks().flatMap((b) => (b.marker?.kind === 'snippet' ? [b.marker.name] : []));
    expect(names.filter((n, i) => names.indexOf(n) !== i)).toEqual([]);
    for (const name of names) expect(name.split('/'), name).not.toContain('..');
    expect([...readmeSnippets().keys()]).toEqual(expect.arrayContaining(CONSUMER_SNIPPETS));
  });

  test('every examples/ snippet is that file, verbatim', () => {
    const examples = [...readmeSnippets()].filter(([name]) => name.startsWith('examples/'));
    expect(examples.length).toBeGreaterThan(0);
    for (const [name, body] of examples) {
      const file = join(repoRoot, name);
      expect(existsSync(file), `${name} does not exist`).toBe(true);
      expect(body, `the README's ${name} block differs from the file`).toBe(readFileSync(file, 'utf8'));
    }
  });

  test('names every FORKD_* environment variable the code reads', () => {
    const names = new Set(sourceText(['src', 'runner-plugins']).match(/\bFORKD_[A-Z][A-Z0-9_]*\b/g));
    const settings = [...names].filter((n) => !n.startsWith('FORKD_ERR_') && !(n in INTERNAL_NAMES));
    expect(settings.length).toBeGreaterThan(10);
    expect(settings.filter((n) => !mentions(readme, n))).toEqual([]);
    // an exclusion whose name is gone from the code would hide nothing: drop it
    expect(Object.keys(INTERNAL_NAMES).filter((n) => !names.has(n))).toEqual([]);
  });

  test('names every error code', () => {
    const codes = [...readFileSync(join(repoRoot, 'src/errors.ts'), 'utf8').matchAll(/'(FORKD_ERR_[A-Z_]+)'/g)].map(
      (m) => m[1]!,
    );
    expect(codes.length).toBeGreaterThan(20);
    expect(codes.filter((c) => !readme.includes(`\`${c}\``))).toEqual([]);
  });

  test('names every CLI verb as `forkd VERB`', () => {
    const verbs = [...sourceText(['src/cli']).matchAll(/\.command\('([a-z][a-z-]*)'\)/g)].map((m) => m[1]!);
    expect(verbs.length).toBeGreaterThan(20);
    expect(verbs.filter((v) => !new RegExp(`\`forkd ${v}[ \`]`).test(readme))).toEqual([]);
  });

  test('relative links, in it and in docs/, lead to files and headings that exist', () => {
    const docs = readdirSync(join(repoRoot, 'docs'))
      .filter((f) => f.endsWith('.md'))
      .map((f) => join(repoRoot, 'docs', f));
    expect([join(repoRoot, 'README.md'), ...docs].flatMap(brokenLinks)).toEqual([]);
  });
});

describe('markdownBlocks', () => {
  test('reads fences, their info string, the marker before them, and bodies as files', () => {
    const text = [
      '<!-- snippet: consumer/a.sh -->',
      '```sh',
      'echo a',
      '```',
      '',
      '<!-- illustrative -->',
      '````md',
      '```',
      '````',
      '```',
      'none',
      '```',
    ].join('\n');
    expect(markdownBlocks(text)).toEqual([
      { line: 2, lang: 'sh', body: 'echo a\n', marker: { kind: 'snippet', name: 'consumer/a.sh' } },
      { line: 7, lang: 'md', body: '```\n', marker: { kind: 'illustrative' } },
      { line: 10, lang: '', body: 'none\n', marker: null },
    ]);
  });

  test('an unclosed fence is an error, not a block that runs to the end', () => {
    expect(() => markdownBlocks('```sh\necho a\n')).toThrow(/line 1 is never closed/);
  });
});
