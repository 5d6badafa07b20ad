import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { parseInputs } from '../../src/action/inputs.js';
import { markdownBlocks, readmeText, repoRoot } from '../helpers/readme-snippets.js';

interface Step {
  name?: string;
  uses?: string;
  with?: Record<string, unknown>;
  run?: string;
}

interface Workflow {
  on?: unknown;
  jobs?: Record<string, { 'timeout-minutes'?: unknown; steps: Step[] }>;
}

interface ActionInput {
  required?: boolean;
  default?: string;
}

const CI = '.github/workflows/ci.yml';
const RELEASE = '.github/workflows/release.yml';

const readRepoFile = (path: string) => readFileSync(join(repoRoot, path), 'utf8');
const workflow = (path: string) => parseYaml(readRepoFile(path)) as Workflow;
const stepsOf = (path: string) => Object.values(workflow(path).jobs ?? {}).flatMap((job) => job.steps);
const runsOf = (path: string) => stepsOf(path).flatMap((step) => step.run ?? []);
const captures = (texts: string[], pattern: RegExp) =>
  texts.flatMap((text) => [...text.matchAll(pattern)].map((match) => match[1]!));

const packageJson = JSON.parse(readRepoFile('package.json')) as { scripts: Record<string, string>; files: string[] };
const actionInputs = (parseYaml(readRepoFile('action.yml')) as { inputs: Record<string, ActionInput> }).inputs;

/** The commands of the README's Contributing block, comments dropped. */
function readmeContributingCommands(): string[] {
  const readme = readmeText();
  const headingLine = readme.split('\n').indexOf('## Contributing') + 1;
  const block = markdownBlocks(readme).find((b) => headingLine > 0 && b.line > headingLine && b.lang === 'sh');
  return (block?.body ?? '')
    .split('\n')
    .map((line) => line.replace(/#.*/, '').trim())
    .filter(Boolean);
}

/** The options release.mjs's parseArgs declares (`name: { type: ... }`), read from its text. */
function releaseScriptFlags(): string[] {
  const text = readRepoFile('scripts/release.mjs');
  const fromParseArgs = text.slice(Math.max(text.indexOf('parseArgs('), 0));
  return captures([fromParseArgs], /['"]?([\w-]+)['"]?\s*:\s*\{\s*type\s*:/g);
}

describe.each([CI, RELEASE])('%s', (path) => {
  test('is valid YAML with triggers and jobs, each job with a timeout', () => {
    const parsed = workflow(path);
    expect(parsed.on).toBeTruthy();
    expect(Object.keys(parsed.jobs ?? {})).not.toEqual([]);
    for (const job of Object.values(parsed.jobs!)) expect(job['timeout-minutes']).toEqual(expect.any(Number));
  });

  test('every `npm run X` is a script of package.json', () => {
    const scripts = captures(runsOf(path), /\bnpm run ([\w:-]+)/g);
    expect(scripts.filter((name) => !(name in packageJson.scripts))).toEqual([]);
  });

  test('every script, config file and cache key input it names exists', () => {
    const runs = runsOf(path);
    const hashed = captures(
      stepsOf(path).flatMap((step) => Object.values(step.with ?? {}).map(String)),
      /hashFiles\(([^)]*)\)/g,
    );
    const paths = [
      ...captures(runs, /\b(?:node|bash) ((?:scripts|bin)\/[\w./-]+)/g),
      ...captures(runs, /--config ([\w./-]+)/g),
      ...captures(hashed, /'([^']+)'/g).map((glob) => glob.replace(/\/\*\*$/, '')),
    ];
    expect(paths.filter((p) => !existsSync(join(repoRoot, p)))).toEqual([]);
  });

  test('every third-party action is pinned to a version tag or a commit', () => {
    const remote = stepsOf(path).flatMap((step) => (step.uses && !step.uses.startsWith('./') ? [step.uses] : []));
    expect(remote.filter((uses) => !/^[\w.-]+\/[\w./-]+@(v\d+(\.\d+){0,2}|[0-9a-f]{40})$/.test(uses))).toEqual([]);
  });

  test('the Action from this checkout gets only inputs action.yml declares, every required one, values it accepts', () => {
    for (const step of stepsOf(path).filter((s) => s.uses === './')) {
      const given = Object.fromEntries(Object.entries(step.with ?? {}).map(([name, value]) => [name, String(value)]));
      expect(Object.keys(given).filter((name) => !(name in actionInputs))).toEqual([]);
      const required = Object.keys(actionInputs).filter((name) => actionInputs[name]!.required);
      expect(required.filter((name) => !(name in given))).toEqual([]);
      expect(() => parseInputs((name) => given[name] ?? actionInputs[name]?.default ?? '')).not.toThrow();
    }
  });
});

describe('ci.yml', () => {
  test("runs the README's setup and test commands, each as a step", () => {
    const commands = readmeContributingCommands();
    expect(commands).not.toEqual([]);
    expect(runsOf(CI).map((run) => run.trim())).toEqual(expect.arrayContaining(commands));
  });

  test('checks dist/ in a step of its own, and runs the Action from this checkout with the postgres snapshot', () => {
    expect(runsOf(CI)).toContain('node scripts/bundle.mjs --check');
    expect(
      stepsOf(CI)
        .filter((step) => step.uses === './')
        .map((step) => step.with?.snapshot),
    ).toEqual(['postgres']);
  });
});

describe('release.yml', () => {
  test('passes release.mjs only flags it parses, --packs among them', () => {
    const used = captures(
      runsOf(RELEASE).filter((run) => run.includes('node scripts/release.mjs')),
      /(?:^|\s)--([\w-]+)/g,
    );
    expect(used).toContain('packs');
    expect(used.filter((flag) => !releaseScriptFlags().includes(flag))).toEqual([]);
  });

  test('npm publish ships the official packs pins it copies from release/', () => {
    const publish = runsOf(RELEASE).find((run) => run.includes('npm publish')) ?? '';
    const copied = captures([publish], /\bcp release\/\S+ (\S+)/g);
    expect(copied).toEqual(['official-packs.json']);
    expect(packageJson.files).toEqual(expect.arrayContaining(copied));
  });
});
