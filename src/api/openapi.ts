/**
 * The OpenAPI 3.1 document of the REST API. OpenAPI 3.1 schemas are JSON Schema 2020-12, which is
 * what TypeBox builds: the route table's schemas go in as they are, no converter. A schema listed
 * in COMPONENTS appears once under components.schemas and is a $ref everywhere else.
 */
import type { TSchema } from 'typebox';
import { API, errorStatuses, isRawBody, type RawBody, type RouteSpec } from './routes.js';
import { COMPONENTS, ErrorReply } from './schemas.js';

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

const componentNames = new Map<unknown, string>(Object.entries(COMPONENTS).map(([name, schema]) => [schema, name]));

/** A schema as plain JSON, with every named component below the top replaced by its $ref. */
function toJson(schema: unknown, top = true): Json {
  const name = componentNames.get(schema);
  if (name && !top) return { $ref: `#/components/schemas/${name}` };
  if (Array.isArray(schema)) return schema.map((item) => toJson(item, false));
  if (typeof schema !== 'object' || schema === null) return schema as Json;
  return Object.fromEntries(Object.entries(schema).map(([key, value]) => [key, toJson(value, false)]));
}

const ref = (schema: TSchema): Json => toJson(schema, false);

function content(body: TSchema | RawBody): Json {
  if (isRawBody(body)) {
    return {
      [body.raw]: {
        schema: body.raw === 'text/plain' ? { type: 'string' } : { type: 'string', contentMediaType: body.raw },
      },
    };
  }
  return { 'application/json': { schema: ref(body) } };
}

const STATUS_TEXT: Record<number, string> = {
  200: 'OK',
  201: 'Created',
  202: 'Accepted',
  204: 'No Content',
  400: 'Bad input: malformed JSON, an unknown field or query parameter (a route that declares none takes none), a wrong type or range, an unsafe tag or id',
  401: 'A missing, malformed or wrong bearer token',
  404: 'An unknown snapshot, sandbox or owner',
  409: 'An existing tag, an operation already running on it, or a corrupt or incompatible snapshot',
  410: "The sandbox's VM died; the daemon removed it",
  413: 'The body (or the file read) is over its limit',
  422: 'The guest refused (e.g. E_NOENT) or has no eval bridge',
  500: 'An unexpected error',
  503: 'The heavy-operation cap (--max-heavy) is full',
  504: 'An eval did not answer within its timeout',
};

/** `:id` -> `{id}` */
const openApiPath = (path: string) => path.replace(/:(\w+)/g, '{$1}');

function parameters(spec: RouteSpec): Json[] {
  const from = (schema: TSchema | undefined, where: 'path' | 'query'): Json[] => {
    const node = schema as { properties?: Record<string, TSchema>; required?: string[] } | undefined;
    return Object.entries(node?.properties ?? {}).map(([name, property]) => ({
      name,
      in: where,
      required: where === 'path' || (node?.required ?? []).includes(name),
      schema: ref(property),
    }));
  };
  return [...from(spec.params, 'path'), ...from(spec.query, 'query')];
}

function operation(spec: RouteSpec): Json {
  const responses: Record<string, Json> = {};
  for (const [status, reply] of Object.entries(spec.replies)) {
    responses[status] = {
      description: STATUS_TEXT[Number(status)] ?? 'OK',
      ...(reply ? { content: content(reply) } : {}),
    };
  }
  for (const status of errorStatuses(spec)) {
    responses[status] = { description: STATUS_TEXT[status] ?? 'Error', content: content(ErrorReply) };
  }
  const params = parameters(spec);
  return {
    operationId: spec.operationId,
    summary: spec.summary,
    ...(spec.open ? { security: [] } : {}),
    ...(params.length ? { parameters: params } : {}),
    ...(spec.body
      ? {
          requestBody: {
            required: !isRawBody(spec.body) && spec.body !== COMPONENTS.EmptyRequest,
            content: content(spec.body),
          },
        }
      : {}),
    responses,
  };
}

/** The whole document (the same for every package version of API v1: docs/openapi.json is a copy). */
export function openApiDocument(): Json {
  const paths: Record<string, Record<string, Json>> = {};
  for (const spec of Object.values(API) as RouteSpec[]) {
    (paths[openApiPath(spec.path)] ??= {})[spec.method.toLowerCase()] = operation(spec);
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'forkd engine daemon',
      version: 'v1',
      description:
        'The REST API of `forkd serve`: snapshots, sandboxes forked from them, owners and leases. ' +
        'Generated from the TypeBox schemas in src/api/ (npm run openapi).',
    },
    servers: [
      { url: 'http://127.0.0.1:8889', description: 'forkd serve --listen 127.0.0.1:8889 (or its Unix socket)' },
    ],
    security: [{ bearer: [] }],
    paths,
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'the token in <state>/token' } },
      schemas: Object.fromEntries(Object.entries(COMPONENTS).map(([name, schema]) => [name, toJson(schema)])),
    },
  };
}
