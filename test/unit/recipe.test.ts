import { describe, expect, test } from 'vitest';
import { loadRecipe } from '../../src/engine/images/recipe.js';

describe('loadRecipe', () => {
  test('reads the postgres recipe', () => {
    const r = loadRecipe('postgres');
    expect(r).toMatchObject({ name: 'postgres', packages: ['postgresql-15'], ports: [5432], memoryMiB: 512 });
    expect(r.build).toContain('initdb');
    expect(r.warmup).toContain('pg_ctl');
    expect(r.ready).toContain('select 1');
  });

  test.each(['../etc', 'Postgres', '', 'a/b', '.hidden'])('refuses the name %j', (name) => {
    expect(() => loadRecipe(name)).toThrow(expect.objectContaining({ code: 'FORKD_ERR_BAD_INPUT' }));
  });

  test('an unknown recipe names where recipes live', () => {
    expect(() => loadRecipe('no-such-recipe')).toThrow(
      expect.objectContaining({ code: 'FORKD_ERR_NOT_FOUND', hint: expect.stringContaining('recipe.json') }),
    );
  });
});
