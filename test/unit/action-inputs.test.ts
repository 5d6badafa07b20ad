import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { parseInputs } from '../../src/action/inputs.js';

const raw = (values: Record<string, string>) => (name: string) => values[name] ?? '';

describe('the Action inputs', () => {
  // prettier-ignore
  test.each([
    [{}, { snapshot: { kind: 'recipe', recipe: 'base' }, tag: 'base', recipes: [], poolSize: 2, accel: 'auto', cache: true }],
    [{ snapshot: 'postgres', 'pool-size': '4', accel: 'tcg', cache: 'false' }, { snapshot: { kind: 'recipe', recipe: 'postgres' }, tag: 'postgres', poolSize: 4, accel: 'tcg', cache: false }],
    [{ snapshot: 'acme/postgres@v1' }, { snapshot: { kind: 'hub', ref: 'acme/postgres@v1' }, tag: 'postgres' }],
    [{ snapshot: 'https://x.example/packs/pg.forkd.tar.zst' }, { snapshot: { kind: 'hub', ref: 'https://x.example/packs/pg.forkd.tar.zst' }, tag: 'pg' }],
    [{ recipes: 'postgres\npython-numpy, nodejs' }, { recipes: ['postgres', 'python-numpy', 'nodejs'] }],
    [{ snapshot: './ci/my-db', recipes: './ci/other/' }, { snapshot: { kind: 'recipe', recipe: './ci/my-db' }, tag: 'my-db', recipes: ['./ci/other/'] }],
    [{ version: 'v0.2.1' }, { version: '0.2.1', cache: true }],
    [{ version: '1.0.0-rc.1' }, { version: '1.0.0-rc.1' }],
  ])('%o gives %o', (values, expected) => {
    expect(parseInputs(raw(values))).toMatchObject(expected);
  });

  // prettier-ignore
  test.each([
    [{ snapshot: '../etc' }, 'input snapshot'],
    [{ recipes: 'postgres ../x' }, 'input recipes'],
    [{ 'pool-size': '-1' }, 'input pool-size'],
    [{ 'pool-size': 'many' }, 'input pool-size'],
    [{ accel: 'hvf' }, 'input accel'],
    [{ cache: 'yes' }, 'input cache'],
    [{ version: 'latest' }, 'input version'],
    [{ version: '1.0' }, 'input version'],
    [{ snapshot: './My Recipe' }, 'input snapshot'],
  ])('%o is refused naming the input', (values, message) => {
    expect(() => parseInputs(raw(values))).toThrow(expect.objectContaining({ code: 'FORKD_ERR_BAD_INPUT', message: expect.stringContaining(message) }));
  });

  test('action.yml is valid YAML and declares exactly the inputs the Action reads, with defaults it accepts', () => {
    const action = parseYaml(readFileSync(join(import.meta.dirname, '../../action.yml'), 'utf8')) as {
      inputs: Record<string, { description: string; default: string }>;
      outputs: Record<string, { description: string }>;
      runs: Record<string, string>;
    };
    const asked = new Set<string>();
    const parsed = parseInputs((name) => {
      asked.add(name);
      return action.inputs[name]?.default ?? '';
    });
    expect([...asked].sort()).toEqual(Object.keys(action.inputs).sort());
    expect(parsed).toEqual({
      snapshot: { kind: 'recipe', recipe: 'base' },
      tag: 'base',
      recipes: [],
      poolSize: 2,
      accel: 'auto',
      cache: true,
      version: '',
    });
    expect(Object.keys(action.outputs).sort()).toEqual(['accel', 'endpoint', 'snapshot-tag']);
    expect(action.runs).toEqual({ using: 'node24', main: 'dist/action.mjs', post: 'dist/action.mjs' });
  });

  test("the example workflow for a user's project: npm ci, the Action with inputs it accepts, npx vitest run", () => {
    const workflow = parseYaml(
      readFileSync(join(import.meta.dirname, '../../examples/workflows/user-project.yml'), 'utf8'),
    ) as { jobs: Record<string, { steps: Array<{ uses?: string; with?: Record<string, string>; run?: string }> }> };
    const steps = Object.values(workflow.jobs)[0]!.steps;
    const what = steps.map((step) => step.uses?.replace(/@.*/, '') ?? step.run?.replace(/\s*#.*/, ''));
    // no build of forkd-action: the project installs it built
    expect(what).toEqual([
      'actions/checkout',
      'actions/setup-node',
      'npm ci',
      'deeplethe/forkd-action',
      'npx vitest run',
    ]);
    const inputs = steps[3]!.with ?? {};
    expect(parseInputs((name) => inputs[name] ?? '')).toMatchObject({
      snapshot: { kind: 'recipe', recipe: 'postgres' },
    });
  });
});
