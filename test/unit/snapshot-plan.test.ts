import { describe, expect, test } from 'vitest';
import { actionSnapshot, planSnapshots, withAbsoluteRecipes } from '../../runner-plugins/shared/snapshot-plan.js';

const afterAction = { tag: 'postgres', source: 'postgres' };

describe("a test run's snapshots (the Vitest and Playwright plugins)", () => {
  test('the Action exports its tag and what it made it from', () => {
    expect(actionSnapshot({ FORKD_SNAPSHOT: 'postgres', FORKD_SNAPSHOT_SOURCE: 'postgres' })).toEqual(afterAction);
    expect(actionSnapshot({})).toBeUndefined();
  });

  test("locally (no Action) the config's snapshots are made under their names", () => {
    expect(planSnapshots({ snapshots: { pg: { recipe: 'postgres' } } }, undefined)).toEqual({
      tags: { pg: 'pg' },
      make: { pg: { recipe: 'postgres' } },
      action: undefined,
      sandbox: 'pg',
      postgres: 'pg',
      app: null,
    });
  });

  test("after the Action, a spec of the same recipe forks the Action's snapshot: nothing is made", () => {
    expect(planSnapshots({ snapshots: { pg: { recipe: 'postgres' } } }, afterAction)).toEqual({
      tags: { pg: 'postgres' },
      make: {},
      action: 'postgres',
      sandbox: 'postgres',
      postgres: 'postgres',
      app: null,
    });
  });

  test("forkd() with no snapshots forks the Action's; without an Action it says how to name one", () => {
    expect(planSnapshots({}, afterAction)).toMatchObject({
      tags: { postgres: 'postgres' },
      make: {},
      action: 'postgres',
      sandbox: 'postgres',
      postgres: 'postgres',
    });
    expect(planSnapshots({ snapshots: {} }, { tag: 'numpy', source: 'python-numpy' })).toMatchObject({
      sandbox: 'numpy',
      postgres: null, // not made from the postgres recipe
    });
    expect(() => planSnapshots({}, undefined)).toThrow(
      expect.objectContaining({
        code: 'FORKD_ERR_BAD_INPUT',
        message: 'forkd() names no snapshot, and no forkd Action ran before',
        hint: expect.stringContaining('FORKD_SNAPSHOT'),
      }),
    );
  });

  test('a pack the Action pulled stands in for the same pull: spec; a spec that differs is made as configured', () => {
    const pulled = { tag: 'postgres', source: 'acme/postgres@v1' };
    expect(
      planSnapshots({ snapshots: { db: { pull: 'acme/postgres@v1' }, other: { pull: 'acme/other@v1' } } }, pulled),
    ).toMatchObject({ tags: { db: 'postgres', other: 'other' }, make: { other: { pull: 'acme/other@v1' } } });
    const tuned = { pg: { recipe: 'postgres', memoryMiB: 1024 } };
    expect(planSnapshots({ snapshots: tuned }, afterAction)).toMatchObject({ tags: { pg: 'pg' }, make: tuned });
  });

  test('fixture options name a configured snapshot (its tag) or any tag on the engine', () => {
    const options = { snapshots: { db: { pull: 'acme/postgres@v1' } }, postgres: 'db', sandbox: 'elsewhere' };
    expect(planSnapshots(options, { tag: 'postgres', source: 'acme/postgres@v1' })).toMatchObject({
      sandbox: 'elsewhere',
      postgres: 'postgres',
    });
  });

  test('the app fixture forks the first snapshot made from a recipe directory, or the one it names', () => {
    const snapshots = { pg: { recipe: 'postgres' }, web: { recipe: './e2e/app' }, other: { recipe: '../apps/other' } };
    expect(planSnapshots({ snapshots }, undefined)).toMatchObject({ app: 'web', postgres: 'pg', sandbox: 'pg' });
    expect(planSnapshots({ snapshots, app: 'other' }, undefined).app).toBe('other');
    expect(planSnapshots({ snapshots: { pg: { recipe: 'postgres' } } }, undefined).app).toBeNull();
  });

  test("a recipe directory: the config's (relative to its directory) stands for the Action's (relative to the workspace)", () => {
    const action = actionSnapshot({
      FORKD_SNAPSHOT: 'todo-app',
      FORKD_SNAPSHOT_SOURCE: './examples/playwright-app/todo-app',
      GITHUB_WORKSPACE: '/work/repo',
    });
    expect(action).toEqual({ tag: 'todo-app', source: '/work/repo/examples/playwright-app/todo-app' });
    const options = withAbsoluteRecipes(
      { snapshots: { app: { recipe: './todo-app' } } },
      '/work/repo/examples/playwright-app',
    );
    expect(planSnapshots(options, action)).toMatchObject({ tags: { app: 'todo-app' }, make: {}, app: 'todo-app' });
    const elsewhere = withAbsoluteRecipes({ snapshots: { app: { recipe: './todo-app' } } }, '/work/repo/other');
    expect(planSnapshots(elsewhere, action)).toMatchObject({ make: { app: { recipe: '/work/repo/other/todo-app' } } });
  });
});
