import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { importGraph, layerViolations, under, type LayerRule } from '../helpers/import-graph.js';

const SRC = join(import.meta.dirname, '../../src');

/**
 * client -> (REST) -> daemon -> engine -> VMM -> guest; the Hub sits beside the daemon and the CLI
 * as a user of the engine's snapshot store. Nothing points back up.
 */
const LAYER_RULES: LayerRule[] = [
  {
    name: 'the engine imports nothing above it',
    from: under('engine'),
    forbidden: under('hub', 'server', 'client', 'cli', 'action'),
  },
  {
    name: 'the client speaks REST only',
    from: under('client'),
    forbidden: under('engine', 'server', 'hub'),
  },
  {
    name: 'the Hub is a user of the engine, not of the daemon or the CLI',
    from: under('hub'),
    forbidden: under('server', 'client', 'cli', 'action'),
  },
  {
    name: 'the daemon reaches VMs through the engine, not the VMM layer',
    from: under('server'),
    forbidden: under('engine/vmm'),
  },
  {
    name: "the engine's rooms do not import the facade",
    from: (file) => file.startsWith('engine/') && file !== 'engine/engine.ts',
    forbidden: (target) => target === 'engine/engine.ts',
  },
];

describe('layers', () => {
  const edges = importGraph(SRC);

  test('the import graph is read whole: every edge lands on a file, and the known ones are there', () => {
    expect(edges.length).toBeGreaterThan(200);
    expect(edges.filter((e) => !existsSync(join(SRC, e.to))).map((e) => `${e.from} -> ${e.to}`)).toEqual([]);
    expect(edges).toContainEqual({ from: 'engine/engine.ts', to: 'engine/snapshot/fork.ts' });
    expect(edges).toContainEqual({ from: 'hub/hub.ts', to: 'engine/engine.ts' });
  });

  test('no import points back up a layer', () => {
    expect(layerViolations(edges, LAYER_RULES)).toEqual([]);
  });
});
