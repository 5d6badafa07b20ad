import type { TSchema } from 'typebox';
import { Compile, type Validator } from 'typebox/compile';
import { ForkdError } from '../errors.js';

const compiled = new WeakMap<TSchema, Validator>();

/** The compiled (JIT) validator of a schema, compiled once. */
export function validatorOf(schema: TSchema): Validator {
  let validator = compiled.get(schema);
  if (!validator) {
    validator = Compile(schema);
    compiled.set(schema, validator);
  }
  return validator;
}

interface SchemaNode {
  type?: string;
  const?: unknown;
  anyOf?: SchemaNode[];
  oneOf?: Array<{ required?: string[] }>;
  items?: SchemaNode;
  properties?: Record<string, SchemaNode>;
  patternProperties?: Record<string, SchemaNode>;
  pattern?: string;
  minimum?: number;
  maximum?: number;
  minItems?: number;
  minLength?: number;
  uniqueItems?: boolean;
  description?: string;
}

const plural = (item: string) => /^an? (\w+)$/.exec(item)?.[1]?.concat('s') ?? `items, each ${item}`;

/**
 * What a schema accepts, in words: `an integer from 1 to 256`, `one of "full", "diff", "live"`;
 * `typeOnly` leaves out a string's pattern (for a value of the wrong type).
 */
export function describeSchema(node: SchemaNode, typeOnly = false): string {
  if (node.const !== undefined) return JSON.stringify(node.const);
  if (node.anyOf) {
    const consts = node.anyOf.filter((n) => n.const !== undefined);
    if (consts.length === node.anyOf.length) return `one of ${consts.map((n) => JSON.stringify(n.const)).join(', ')}`;
    return node.anyOf.map((n) => describeSchema(n, typeOnly)).join(' or ');
  }
  switch (node.type) {
    case 'integer':
    case 'number': {
      const kind = node.type === 'integer' ? 'an integer' : 'a number';
      if (node.minimum !== undefined && node.maximum !== undefined)
        return `${kind} from ${node.minimum} to ${node.maximum}`;
      if (node.minimum !== undefined) return `${kind} >= ${node.minimum}`;
      return kind;
    }
    case 'string':
      if (node.pattern && !typeOnly) return `a string matching ${node.pattern}`;
      return node.minLength ? 'a non-empty string' : 'a string';
    case 'boolean':
      return 'a boolean';
    case 'null':
      return 'null';
    case 'array': {
      const items = plural(node.items ? describeSchema(node.items, typeOnly) : 'a value');
      return `${node.minItems ? 'a non-empty array' : 'an array'} of ${node.uniqueItems ? 'distinct ' : ''}${items}`;
    }
    case 'object': {
      const [value] = Object.values(node.patternProperties ?? {});
      return value ? `an object of ${plural(describeSchema(value, typeOnly))}` : 'an object';
    }
    default:
      return 'a value';
  }
}

/** The schema node at a JSON pointer into a value (`/owner/label`), following properties and items. */
function nodeAt(schema: SchemaNode, pointer: string): SchemaNode | undefined {
  let node: SchemaNode | undefined = schema;
  for (const part of pointer.split('/').slice(1)) {
    if (!node) return undefined;
    const key = part.replace(/~1/g, '/').replace(/~0/g, '~');
    node = node.properties?.[key] ?? node.items ?? Object.values(node.patternProperties ?? {})[0];
  }
  return node;
}

/** `/owner/label` -> `owner.label`, `/ports/0` -> `ports[0]` */
const fieldName = (pointer: string) =>
  pointer
    .slice(1)
    .replace(/\/(\d+)(?=\/|$)/g, '[$1]')
    .replace(/\//g, '.');

/** The fields the object at `pointer` declares, as a hint: `allowed: tag, recipe`, `allowed in owner: label, pid`. */
function allowedFields(root: SchemaNode, pointer: string, what: string): string {
  const names = Object.keys(nodeAt(root, pointer)?.properties ?? {});
  const where = pointer ? ` in ${fieldName(pointer)}` : '';
  if (!names.length) return pointer ? `${fieldName(pointer)} takes no fields` : `${what} takes no fields`;
  return `allowed${where}: ${names.join(', ')}`;
}

/**
 * The one message a client needs for a value that does not match: unknown fields first (they are
 * usually typos), then missing ones, then the first field of the wrong type or range, named.
 */
export function mismatch(schema: TSchema, value: unknown, what: string): ForkdError | undefined {
  const validator = validatorOf(schema);
  if (validator.Check(value)) return undefined;
  const root = schema as SchemaNode;
  const errors = validator.Errors(value);
  const allowedHint = allowedFields(root, '', what);

  const extra = errors.filter((e) => e.keyword === 'additionalProperties');
  const unknown = extra.flatMap((e) =>
    (e.params as { additionalProperties: string[] }).additionalProperties.map((key) =>
      fieldName(`${e.instancePath}/${key}`),
    ),
  );
  if (unknown.length) {
    return new ForkdError(
      'FORKD_ERR_BAD_INPUT',
      `unknown field${unknown.length > 1 ? 's' : ''}: ${unknown.join(', ')}`,
      {
        hint: allowedFields(root, extra[0]!.instancePath, what),
      },
    );
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return new ForkdError('FORKD_ERR_BAD_INPUT', `${what} must be a JSON object`, { hint: allowedHint });
  }
  // a oneOf's alternatives report their own `required`: those are the choice below, not a missing field
  const missing = errors.find((e) => e.keyword === 'required' && !e.schemaPath.includes('/oneOf/'));
  if (missing) {
    const names = (missing.params as { requiredProperties: string[] }).requiredProperties;
    const path = missing.instancePath ? `${fieldName(missing.instancePath)}.` : '';
    return new ForkdError('FORKD_ERR_BAD_INPUT', `${what} needs ${names.map((n) => `"${path}${n}"`).join(', ')}`, {
      hint: allowedHint,
    });
  }
  const field = errors.find((e) => e.instancePath !== '' && e.keyword !== 'boolean');
  if (field) {
    const node = nodeAt(root, field.instancePath);
    const description = node ? describeSchema(node, field.keyword === 'type') : field.message;
    return new ForkdError('FORKD_ERR_BAD_INPUT', `"${fieldName(field.instancePath)}" must be ${description}`, {
      hint: node?.description ?? `see ${what} in GET /v1/openapi.json`,
    });
  }
  const choice = root.oneOf?.map((o) => o.required?.map((n) => `"${n}"`).join(' + ')).filter(Boolean);
  if (choice?.length) {
    return new ForkdError('FORKD_ERR_BAD_INPUT', `${what} needs exactly one of ${choice.join(', ')}`, {
      hint: allowedHint,
    });
  }
  return new ForkdError('FORKD_ERR_BAD_INPUT', `${what} does not match the API schema: ${errors[0]?.message}`, {
    hint: 'see GET /v1/openapi.json',
  });
}

/** The value, typed by its schema, or a FORKD_ERR_BAD_INPUT naming the field and what it allows. */
export function parseWith<T>(schema: TSchema, value: unknown, what: string): T {
  const error = mismatch(schema, value, what);
  if (error) throw error;
  return value as T;
}
