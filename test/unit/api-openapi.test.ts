import { readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import { openApiDocument } from '../../src/api/openapi.js';
import { API } from '../../src/api/routes.js';
import { validatorOf } from '../../src/api/validate.js';
import type { DaemonContext } from '../../src/server/context.js';
import { apiRouter } from '../../src/server/routes/index.js';

type Node = Record<string, unknown>;
const doc = openApiDocument() as Node & { paths: Record<string, Record<string, Node>>; components: Node };

/** Every value under `node` whose key is `key`. */
function collect(node: unknown, key: string, found: unknown[] = []): unknown[] {
  if (Array.isArray(node)) for (const item of node) collect(item, key, found);
  else if (typeof node === 'object' && node !== null) {
    for (const [k, v] of Object.entries(node)) {
      if (k === key) found.push(v);
      collect(v, key, found);
    }
  }
  return found;
}

function resolve(pointer: string): unknown {
  expect(pointer.startsWith('#/'), pointer).toBe(true);
  return pointer
    .slice(2)
    .split('/')
    .reduce<unknown>((node, part) => (node as Node | undefined)?.[part.replace(/~1/g, '/').replace(/~0/g, '~')], doc);
}

describe('the OpenAPI document', () => {
  test('docs/openapi.json is what the schema produces (run `npm run openapi` after changing src/api/)', () => {
    const committed = JSON.parse(readFileSync('docs/openapi.json', 'utf8')) as unknown;
    expect(committed, 'docs/openapi.json is stale: run npm run openapi').toEqual(doc);
  });

  test('is OpenAPI 3.1.0 with info, paths, bearer security and component schemas', () => {
    expect(doc.openapi).toBe('3.1.0');
    expect(doc.info).toMatchObject({ title: expect.any(String), version: 'v1' });
    expect(doc.security).toEqual([{ bearer: [] }]);
    expect(doc.components).toMatchObject({ securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } });
    expect(Object.keys(doc.components.schemas as Node)).toContain('SandboxInfo');
  });

  test('every route the daemon registers is in it with its method, and nothing else is', () => {
    const registered = apiRouter({} as DaemonContext).routes.map((r) => `${r.method} ${r.path}`);
    expect(new Set(registered).size).toBe(registered.length);
    const documented = Object.entries(doc.paths).flatMap(([path, ops]) =>
      Object.keys(ops).map((method) => `${method.toUpperCase()} ${path.replace(/\{(\w+)\}/g, ':$1')}`),
    );
    expect(documented.sort()).toEqual(registered.sort());
    expect(registered.sort()).toEqual(
      Object.values(API)
        .map((r) => `${r.method} ${r.path}`)
        .sort(),
    );
  });

  test('every $ref resolves, and every operation declares its parameters, replies and errors', () => {
    const refs = collect(doc, '$ref') as string[];
    expect(refs.length).toBeGreaterThan(20);
    for (const ref of refs) expect(resolve(ref), ref).toBeDefined();
    for (const [path, ops] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(ops)) {
        const where = `${method} ${path}`;
        const names = [...path.matchAll(/\{(\w+)\}/g)].map((m) => m[1]);
        const inPath = ((op.parameters ?? []) as Node[]).filter((p) => p.in === 'path').map((p) => p.name);
        expect(inPath, where).toEqual(names);
        const responses = op.responses as Record<string, Node>;
        expect(
          Object.keys(responses).some((s) => s.startsWith('2')),
          where,
        ).toBe(true);
        expect(responses['500'], where).toBeDefined();
        for (const [status, response] of Object.entries(responses)) {
          expect(response.description, `${where} ${status}`).toEqual(expect.any(String));
          if (Number(status) >= 400)
            expect(response.content, `${where} ${status}`).toEqual({
              'application/json': { schema: { $ref: '#/components/schemas/ErrorReply' } },
            });
        }
        expect(responses['401'], where).toBeDefined();
      }
    }
  });

  test('the component schemas, refs and all, validate as the schema does (a sandbox from the wire)', () => {
    const defs = JSON.parse(JSON.stringify(doc.components.schemas).replace(/#\/components\/schemas\//g, '#/$defs/'));
    const standalone = (name: string) => ({ ...(defs[name] as Node), $defs: defs }) as never;
    const sandbox = {
      id: 'sb-0123456789ab',
      snapshot: 'base',
      pid: 42,
      accel: 'tcg',
      created: new Date().toISOString(),
      ready_ms: 12.5,
      ports: { '8080': 41234 },
      owner: { label: 'vitest:1', pid: 7 },
      lease: { ttl_s: 60, expires: new Date().toISOString() },
    };
    expect(validatorOf(standalone('SandboxInfo')).Check(sandbox)).toBe(true);
    expect(validatorOf(standalone('SandboxInfo')).Check({ ...sandbox, owner: { label: '-bad' } })).toBe(false);
    for (const name of Object.keys(defs)) expect(() => validatorOf(standalone(name)), name).not.toThrow();
  });
});
