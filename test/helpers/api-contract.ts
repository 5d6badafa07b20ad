/**
 * Holds the daemon to its schema in tests: every reply a test receives is checked against the
 * route table (src/api/routes.ts) for its method, route and status, and a reply that does not
 * match fails the request, naming the route and the field.
 */
import type { Dispatcher } from 'undici';
import { API, errorStatuses, isRawBody, type RouteSpec } from '../../src/api/routes.js';
import { ErrorReply } from '../../src/api/schemas.js';
import { validatorOf } from '../../src/api/validate.js';
import { Controller, type ControllerOptions } from '../../src/client/controller.js';

const routes = (Object.values(API) as RouteSpec[]).map((spec) => ({
  spec,
  pattern: new RegExp(`^${spec.path.replace(/:\w+/g, '[^/]+')}$`),
}));

/** Replies checked so far (a test can assert that the checking happened). */
export const checked = { replies: 0 };

/**
 * Why a reply breaks the contract, or undefined when it keeps it. A path no route has (404) or a
 * method its path lacks (405) must still answer the error shape.
 */
export function contractViolation(
  method: string,
  url: string,
  status: number,
  contentType: string | undefined,
  body: Buffer,
): string | undefined {
  checked.replies++;
  const path = url.split('?')[0]!;
  const onPath = routes.filter((r) => r.pattern.test(path));
  const spec = onPath.find((r) => r.spec.method === method)?.spec;
  const where = spec ? `${method} ${spec.path} ${status}` : `${method} ${path} ${status} (no such route)`;
  let schema;
  if (!spec || status >= 400) {
    const allowed = spec ? errorStatuses(spec) : [onPath.length ? 405 : 404, 401, 400];
    if (!allowed.includes(status)) return `${where}: status ${status} is not declared (errors: ${allowed.join(', ')})`;
    schema = ErrorReply;
  } else {
    if (!(status in spec.replies)) {
      return `${where}: status ${status} is not declared (replies: ${Object.keys(spec.replies).join(', ')})`;
    }
    const reply = spec.replies[status]!;
    if (reply === null) return body.length ? `${where}: declared without a body, sent ${body.length} bytes` : undefined;
    if (isRawBody(reply)) {
      return contentType?.startsWith(reply.raw) ? undefined : `${where}: content-type ${contentType}, not ${reply.raw}`;
    }
    schema = reply;
  }
  if (!contentType?.startsWith('application/json')) return `${where}: content-type ${contentType}, not JSON`;
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch {
    return `${where}: the body is not JSON`;
  }
  const validator = validatorOf(schema);
  if (validator.Check(value)) return undefined;
  const problems = validator
    .Errors(value)
    .filter((e) => e.keyword !== 'boolean') // `additionalProperties: false` says it again, as "schema is false"
    .slice(0, 3)
    .map((e) => `${e.instancePath || '(the body)'} ${e.message}`);
  return `${where}: ${problems.join('; ')}`;
}

/** Passes a reply on as it comes, and fails the request at its end when the reply breaks the contract. */
function contractHandler(method: string, path: string, next: Dispatcher.DispatchHandler): Dispatcher.DispatchHandler {
  let status = 0;
  let contentType: string | undefined;
  const chunks: Buffer[] = [];
  return {
    onRequestStart: (controller, context) => next.onRequestStart?.(controller, context),
    onRequestUpgrade: (controller, statusCode, headers, socket) =>
      next.onRequestUpgrade?.(controller, statusCode, headers, socket),
    onResponseStart: (controller, statusCode, headers, statusMessage) => {
      status = statusCode;
      const type = headers['content-type'];
      contentType = Array.isArray(type) ? type[0] : type;
      next.onResponseStart?.(controller, statusCode, headers, statusMessage);
    },
    onResponseData: (controller, chunk) => {
      chunks.push(chunk);
      next.onResponseData?.(controller, chunk);
    },
    onResponseEnd: (controller, trailers) => {
      const violation = contractViolation(method, path, status, contentType, Buffer.concat(chunks));
      if (violation) next.onResponseError?.(controller, new Error(`API contract: ${violation}`));
      else next.onResponseEnd?.(controller, trailers);
    },
    onResponseError: (controller, error) => next.onResponseError?.(controller, error),
  };
}

// compose() hands interceptors handlers of the new (onResponse*) kind
const contract: Dispatcher.DispatcherComposeInterceptor = (dispatch) => (opts, handler) =>
  dispatch(opts, contractHandler(opts.method, opts.path, handler));

/** A Controller whose every reply is checked against the schema. */
export function contractController(options: ControllerOptions): Controller {
  const client = new Controller(options);
  // the client keeps its dispatcher to itself: the tests compose the check onto it
  const inner = client as unknown as { dispatcher: Dispatcher };
  inner.dispatcher = inner.dispatcher.compose(contract);
  return client;
}
