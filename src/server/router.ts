import type { IncomingMessage } from 'node:http';
import type { Static, TSchema } from 'typebox';
import type { RawBody, RouteSpec } from '../api/routes.js';
import { EmptyRequest, NoQuery } from '../api/schemas.js';
import { parseWith } from '../api/validate.js';
import { readJsonBody } from './body.js';

export type Reply = { status: number; json?: unknown } | { status: number; body: Buffer | string; contentType: string };

type Parsed<S> = S extends TSchema ? Static<S> : undefined;

export interface RouteContext<R extends RouteSpec = RouteSpec> {
  req: IncomingMessage;
  spec: R;
  params: Parsed<R['params']>;
  query: Parsed<R['query']>;
  /** The validated JSON body; a raw body is left in `req` for the handler. */
  body: R['body'] extends RawBody ? undefined : Parsed<R['body']>;
}

export type Handler<R extends RouteSpec = RouteSpec> = (ctx: RouteContext<R>) => Promise<Reply>;

interface Route {
  spec: RouteSpec;
  pattern: RegExp;
  names: string[];
  handler: Handler;
}

/**
 * The query string as an object; a parameter the schema declares numeric becomes a number only when
 * it is written as one (`2.5` stays a number for the schema to refuse as an integer, `x` a string).
 */
function queryObject(schema: TSchema, query: URLSearchParams): Record<string, unknown> {
  const properties = (schema as { properties?: Record<string, { type?: string }> }).properties ?? {};
  return Object.fromEntries(
    [...query].map(([name, value]) => {
      const numeric = ['integer', 'number'].includes(properties[name]?.type ?? '') && /^-?\d+(\.\d+)?$/.test(value);
      return [name, numeric ? Number(value) : value];
    }),
  );
}

/**
 * The routes of the API table (src/api/routes.ts) with their handlers. A request reaches its
 * handler only once its path parameters, query and JSON body match the route's schemas.
 */
export class Router {
  private readonly table: Route[] = [];

  on<R extends RouteSpec>(spec: R, handler: Handler<R>): this {
    const names: string[] = [];
    const pattern = new RegExp(
      `^${spec.path.replace(/:(\w+)/g, (_m, name: string) => {
        names.push(name);
        return '([^/]+)';
      })}$`,
    );
    this.table.push({ spec, pattern, names, handler: handler as unknown as Handler });
    return this;
  }

  /** The specs of every registered route. */
  get routes(): RouteSpec[] {
    return this.table.map((route) => route.spec);
  }

  /** The route of a request and its raw path parameters, 'method' when the path exists under another method, or undefined. */
  match(method: string, path: string): { route: Route; params: Record<string, string> } | 'method' | undefined {
    let pathKnown = false;
    for (const route of this.table) {
      const m = route.pattern.exec(path);
      if (!m) continue;
      pathKnown = true;
      if (route.spec.method !== method) continue;
      const params = Object.fromEntries(route.names.map((name, i) => [name, decodeURIComponent(m[i + 1]!)]));
      return { route, params };
    }
    return pathKnown ? 'method' : undefined;
  }

  /** Validates a matched request against its route's schemas and runs the handler. */
  async dispatch(
    { route, params }: { route: Route; params: Record<string, string> },
    req: IncomingMessage,
    query: URLSearchParams,
  ): Promise<Reply> {
    const { spec } = route;
    // a route that declares no query or body refuses one it is sent rather than ignoring it
    const querySchema = spec.query ?? NoQuery;
    const parsedQuery = parseWith(querySchema, queryObject(querySchema, query), 'the query');
    const ctx: RouteContext = {
      req,
      spec,
      params: spec.params ? parseWith(spec.params, params, 'the path') : undefined,
      query: spec.query ? parsedQuery : undefined,
      body: undefined,
    };
    if (!spec.body) await readJsonBody(req, EmptyRequest);
    else if (!('raw' in spec.body)) ctx.body = await readJsonBody(req, spec.body, spec.bodyLimit);
    return route.handler(ctx);
  }
}
