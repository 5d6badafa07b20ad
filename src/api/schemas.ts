/**
 * The REST API's wire shapes (v1), declared once. Each is a TypeBox schema, which is plain JSON
 * Schema 2020-12: the daemon validates with it, the client's types are its Static<>, and the
 * OpenAPI document lists it under components.schemas. Field names are snake_case as on the wire.
 */
import Type, { type TProperties } from 'typebox';

/** An object that refuses fields it does not declare (requests and replies alike). */
const Strict = <P extends TProperties>(properties: P, description?: string) =>
  Type.Object(properties, { additionalProperties: false, ...(description ? { description } : {}) });

export const TAG_PATTERN_SOURCE = '^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$';
export const SANDBOX_ID_PATTERN_SOURCE = '^sb-[0-9a-f]{12}$';
export const OWNER_LABEL_PATTERN_SOURCE = '^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$';
/** A recipe's name, which is its directory's name (src/engine/images/recipe.ts checks it with this). */
export const RECIPE_NAME_PATTERN_SOURCE = '^[a-z0-9][a-z0-9-]{0,40}$';

/** Children one fork (or pool) may ask for: beyond this a typo (n=100000) would exhaust the host. */
export const MAX_FORK = 256;
export const MAX_TTL_S = 86_400;
export const MAX_MEMORY_MIB = 16 * 1024;
export const MIN_MEMORY_MIB = 64;
/** Uploads and downloads of guest files: the body and the default (and largest) read limit. */
export const FILE_BODY_LIMIT = 64 * 1024 * 1024;
/** The agent's cap per output stream (agent.c MAX_OUTPUT_CAP). */
export const MAX_OUTPUT_BYTES = 4 * 1024 * 1024;
/** The longest exec or eval timeout: a day (a timer of 2^31 ms or more would fire at once). */
export const MAX_TIMEOUT_MS = 24 * 60 * 60 * 1000;
export const CONSOLE_MAX_LINES = 1000;
/** A recipe sent as its files (recipe_files): at most this many files, and this many bytes of them (decoded). */
export const MAX_RECIPE_FILES = 256;
export const MAX_RECIPE_UPLOAD_BYTES = 16 * 1024 * 1024;
/** POST /v1/snapshots's body limit: the largest upload in base64, plus 1 MiB (every other route's limit) for the rest. */
export const RECIPE_UPLOAD_BODY_LIMIT = Math.ceil(MAX_RECIPE_UPLOAD_BYTES / 3) * 4 + 1024 * 1024;
export const BRANCH_MODES = ['full', 'diff', 'live'] as const;

const Tag = Type.String({
  pattern: TAG_PATTERN_SOURCE,
  description: 'a snapshot tag: 1-64 characters of A-Z a-z 0-9 _ . - not starting with . or -',
});
const SandboxId = Type.String({ pattern: SANDBOX_ID_PATTERN_SOURCE, description: 'a sandbox id, sb-<12 hex>' });
const OwnerLabel = Type.String({
  pattern: OWNER_LABEL_PATTERN_SOURCE,
  description: 'an owner label: 1-64 characters of A-Z a-z 0-9 . _ : - starting with a letter or digit',
});
const Timestamp = Type.String({ format: 'date-time' });
const Base64 = Type.String({ contentEncoding: 'base64' });
const Count = Type.Integer({ minimum: 0 });
const Millis = Type.Number({ minimum: 0 });
const BranchModeSchema = Type.Union([Type.Literal('full'), Type.Literal('diff'), Type.Literal('live')], {
  description: 'full, diff (pages changed since the parent) or live (pauses only for the last pass)',
});

// ---- errors ---------------------------------------------------------------------------------

export const ErrorReply = Strict(
  {
    error: Type.String({ description: 'what went wrong' }),
    code: Type.String({ pattern: '^FORKD_ERR_[A-Z_]+$', description: 'a stable ForkdError code' }),
    hint: Type.Optional(Type.String({ description: 'what to do about it' })),
  },
  'Every error reply: the status says the class, code the exact error.',
);

// ---- system ---------------------------------------------------------------------------------

export const HealthReply = Strict({ ok: Type.Literal(true) });
export const EngineHost = Strict(
  {
    cpus: Type.Integer({ minimum: 1, description: "the engine host's CPUs (each busy sandbox keeps one busy)" }),
    memory_mib: Type.Integer({ minimum: 1, description: "the engine host's memory" }),
  },
  'what the engine can serve at once: runners size their parallelism by it',
);
export const VersionReply = Strict({ version: Type.String(), api: Type.Literal('v1'), host: EngineHost });

// ---- snapshots ------------------------------------------------------------------------------

export const SnapshotSummary = Strict({
  tag: Tag,
  created: Timestamp,
  parent: Type.Union([Tag, Type.Null()]),
  memory_mib: Type.Integer({ minimum: 1 }),
  disk_bytes: Count,
  accel: Type.String(),
  warmup: Type.Union([Type.String(), Type.Null()]),
  ports: Type.Array(Type.Integer({ minimum: 1, maximum: 65535 }), {
    description: 'guest TCP ports each sandbox exposes on 127.0.0.1',
  }),
  status: Type.Literal('ready'),
  depth: Count,
});

export const PoolState = Strict(
  {
    size: Count,
    available: Count,
    failing: Type.Boolean({ description: 'the pool gave up refilling after repeated failures' }),
    last_error: Type.Union([Type.String(), Type.Null()]),
  },
  'The warm pool of restored children kept ready for forks (size 0: no pool).',
);

export const SnapshotDetail = Strict({
  ...SnapshotSummary.properties,
  memory_logical_bytes: Count,
  memory_physical_bytes: Count,
  cache_bytes: Type.Integer({ minimum: 0, description: "a diff link's assembled full memory (a cache)" }),
  vmstate_bytes: Count,
  ancestors: Type.Array(Tag),
  dependents: Type.Array(Tag),
  sandboxes: Count,
  pool_size: Type.Integer({ minimum: 0, description: 'the same as pool.size' }),
  pool: PoolState,
});

export const PendingSnapshot = Strict(
  {
    tag: Tag,
    status: Type.Union([Type.Literal('writing'), Type.Literal('failed')]),
    sandbox: SandboxId,
    error: Type.Optional(Strict({ code: Type.String(), error: Type.String(), hint: Type.Optional(Type.String()) })),
  },
  'A branch answered early (wait: false) that is still being written, or that failed.',
);

export const SnapshotListReply = Type.Array(Type.Union([SnapshotSummary, PendingSnapshot]));
export const SnapshotGetReply = Type.Union([SnapshotDetail, PendingSnapshot]);

export const RecipeFiles = Strict(
  {
    name: Type.String({
      pattern: RECIPE_NAME_PATTERN_SOURCE,
      description: "the recipe's name (its directory's): 1-41 characters of a-z 0-9 - not starting with -",
    }),
    files: Type.Record(Type.String(), Base64, {
      description:
        'relative path -> content (base64); recipe.json and the files its "files" field names. ' +
        `Paths: forward slashes, segments of A-Z a-z 0-9 . _ - + @ (not . or ..), at most 512 characters. ` +
        `At most ${MAX_RECIPE_FILES} files and ${MAX_RECIPE_UPLOAD_BYTES / 1024 / 1024} MiB in all (413 FORKD_ERR_LIMIT)`,
    }),
    modes: Type.Optional(
      Type.Record(Type.String(), Type.String({ pattern: '^[4-7][0-7]{2}$' }), {
        description:
          "a file's permission bits in octal, e.g. 755 (default 644), readable by its owner: the image keeps them",
      }),
    ),
  },
  'A recipe directory sent as its files: the daemon writes them into a private directory of its own, ' +
    'builds from it and removes it. It never reads a path a caller names.',
);

export const CreateSnapshotRequest = Strict({
  tag: Tag,
  recipe: Type.Optional(
    Type.String({
      pattern: '^[^/]+$',
      description: "a recipe by name (recipes/<name>), not a path: send a directory's recipe in recipe_files",
    }),
  ),
  recipe_files: Type.Optional(RecipeFiles),
  memory_mib: Type.Optional(Type.Integer({ minimum: MIN_MEMORY_MIB, maximum: MAX_MEMORY_MIB })),
  warmup: Type.Optional(Type.String({ description: 'a shell command run before the snapshot is taken' })),
  ports: Type.Optional(Type.Array(Type.Integer({ minimum: 1, maximum: 65535 }), { uniqueItems: true })),
});

export const SnapshotCreatedReply = Strict({
  ...SnapshotSummary.properties,
  timings: Type.Record(Type.String({ pattern: '^[a-z_]+_ms$' }), Count, {
    description: 'milliseconds per phase, e.g. boot_ms, warmup_ms, save_ms',
  }),
});

export const PullRequest = Strict({
  ref: Type.String({
    minLength: 1,
    description: 'owner/name[@version] from the daemon\u2019s Hub, or an https:// URL of a pack',
  }),
  tag: Type.Optional(Tag),
  force: Type.Optional(Type.Boolean()),
});

export const PullReply = Strict({
  ref: Type.String(),
  tags: Type.Array(Tag),
  cached: Type.Boolean({ description: 'it was pulled before and is still installed' }),
});

export const PoolRequest = Strict({
  size: Type.Integer({ minimum: 0, maximum: MAX_FORK, description: '0 removes the pool' }),
});
export const PoolReply = Strict({ tag: Tag, size: Count, available: Count });

// ---- sandboxes ------------------------------------------------------------------------------

export const Owner = Strict(
  {
    label: OwnerLabel,
    pid: Type.Optional(
      Type.Integer({ minimum: 1, description: 'a process on the daemon host: its exit reaps the sandboxes' }),
    ),
  },
  'Who holds a sandbox: the heartbeat and delete routes act on all of an owner\u2019s sandboxes.',
);

export const Lease = Strict(
  {
    ttl_s: Type.Integer({ minimum: 1, maximum: MAX_TTL_S }),
    expires: Timestamp,
  },
  'Renewed by any request on the sandbox and by its owner\u2019s heartbeat; reaped when it expires.',
);

export const SandboxInfo = Strict({
  id: SandboxId,
  snapshot: Tag,
  pid: Type.Integer({ minimum: 1 }),
  accel: Type.String(),
  created: Timestamp,
  ready_ms: Millis,
  ports: Type.Record(Type.String({ pattern: '^[0-9]+$' }), Type.Integer({ minimum: 1, maximum: 65535 }), {
    description: 'guest port -> host port on 127.0.0.1, e.g. {"5432": 41234}',
  }),
  owner: Type.Union([Owner, Type.Null()]),
  lease: Type.Union([Lease, Type.Null()]),
});

export const CreateSandboxesRequest = Strict({
  snapshot: Tag,
  n: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_FORK, description: 'fork in batches for more' })),
  owner: Type.Optional(Owner),
  ttl_s: Type.Optional(
    Type.Integer({
      minimum: 1,
      maximum: MAX_TTL_S,
      description: 'a lease in seconds: renew it with any request or the owner heartbeat, or the sandbox is reaped',
    }),
  ),
});
export const SandboxListReply = Type.Array(SandboxInfo);

export const ConsoleReply = Strict({
  id: SandboxId,
  lines: Type.Integer({ minimum: 1, maximum: CONSOLE_MAX_LINES }),
  text: Type.String(),
});

export const EmptyRequest = Strict({}, 'No fields (an empty body is fine).');
/** The query of a route that takes none: a parameter it is sent is refused, not ignored. */
export const NoQuery = Strict({});

export const PingReply = Strict({
  pong: Type.Literal(true),
  version: Type.String({ description: 'the guest agent protocol version' }),
  uptime_ms: Millis,
  jobs: Count,
});

export const ExecRequest = Type.Object(
  {
    argv: Type.Optional(Type.Array(Type.String(), { minItems: 1 })),
    shell: Type.Optional(Type.String({ description: 'run with sh -c' })),
    env: Type.Optional(Type.Record(Type.String(), Type.String())),
    cwd: Type.Optional(Type.String()),
    stdin: Type.Optional(Base64),
    timeout_ms: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: MAX_TIMEOUT_MS,
        description: 'kill the process group after this long (ms, at most a day)',
      }),
    ),
    max_output: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: MAX_OUTPUT_BYTES,
        description: 'cap per output stream in bytes (default 1 MiB, max 4 MiB)',
      }),
    ),
  },
  { additionalProperties: false, oneOf: [{ required: ['argv'] }, { required: ['shell'] }] },
);

export const ExecReply = Strict({
  exit_code: Type.Integer({ description: 'the exit status, or 128 + signal number when a signal killed it' }),
  signal: Type.Union([Type.String(), Type.Null()]),
  timed_out: Type.Boolean(),
  stdout: Base64,
  stderr: Base64,
  stdout_truncated: Type.Boolean(),
  stderr_truncated: Type.Boolean(),
  duration_ms: Millis,
});

export const EvalRequest = Strict({
  code: Type.String(),
  timeout_ms: Type.Optional(
    Type.Integer({
      minimum: 1,
      maximum: MAX_TIMEOUT_MS,
      description: 'give up with 504 after this long (ms, default 60 s, at most a day)',
    }),
  ),
});

export const EvalReply = Type.Union([
  Strict({
    ok: Type.Literal(true),
    value: Type.Unknown({ description: 'the value as JSON when it has a JSON form, else null' }),
    repr: Type.Union([Type.String(), Type.Null()]),
    output: Type.String(),
    duration_ms: Millis,
  }),
  Strict({
    ok: Type.Literal(false),
    error: Strict({ type: Type.String(), message: Type.String(), stack: Type.String() }),
    output: Type.String(),
    duration_ms: Millis,
  }),
]);

export const BranchRequest = Strict({
  tag: Tag,
  mode: Type.Optional(BranchModeSchema),
  wait: Type.Optional(Type.Boolean({ description: 'false (live only): answer 202 once the sandbox runs again' })),
});

const { status: _status, ...summaryFields } = SnapshotSummary.properties;
export const BranchReply = Strict(
  {
    ...Type.Partial(Type.Object(summaryFields)).properties,
    tag: Tag,
    status: Type.Union([Type.Literal('ready'), Type.Literal('writing')]),
    mode: BranchModeSchema,
    pause_ms: Millis,
    bytes_written: Type.Optional(Count),
    transferred_bytes: Type.Optional(Count),
    passes: Type.Optional(Count),
    diff_pages: Type.Optional(Count),
    total_ms: Type.Optional(Millis),
  },
  '201: the new snapshot (status ready); 202: status writing, the rest follows in GET /v1/snapshots/:tag.',
);

// ---- owners ---------------------------------------------------------------------------------

export const HeartbeatReply = Strict({
  owner: OwnerLabel,
  sandboxes: Count,
  renewed: Type.Integer({ minimum: 0, description: 'sandboxes whose lease was renewed' }),
});
export const OwnerRemovedReply = Strict({ owner: OwnerLabel, removed: Type.Array(SandboxId) });

// ---- path and query parameters ------------------------------------------------------------

export const TagParams = Strict({ tag: Tag });
export const SandboxParams = Strict({ id: SandboxId });
export const OwnerParams = Strict({ label: OwnerLabel });

const Flag = Type.Union([Type.Literal('true'), Type.Literal('false'), Type.Literal('1'), Type.Literal('0')]);
export const DeleteSnapshotQuery = Strict({
  cascade: Type.Optional(Flag),
  force: Type.Optional(Flag),
});
export const ConsoleQuery = Strict({
  lines: Type.Optional(Type.Integer({ minimum: 1, maximum: CONSOLE_MAX_LINES, default: 50 })),
});
const GuestPath = Type.String({ pattern: '^/[^\\u0000]*$', description: 'an absolute guest path' });
export const ReadFileQuery = Strict({
  path: GuestPath,
  max_bytes: Type.Optional(
    Type.Integer({
      minimum: 1,
      maximum: FILE_BODY_LIMIT,
      description: 'refuse (413 FORKD_ERR_LIMIT) a file longer than this; default and maximum 64 MiB',
    }),
  ),
});
export const WriteFileQuery = Strict({
  path: GuestPath,
  mode: Type.Optional(Type.String({ pattern: '^[0-7]{1,4}$', description: 'octal file mode, default 644' })),
});

/** The OpenAPI document's name of each shared schema; anything else is inlined. */
export const COMPONENTS = {
  ErrorReply,
  HealthReply,
  EngineHost,
  VersionReply,
  SnapshotSummary,
  PoolState,
  SnapshotDetail,
  PendingSnapshot,
  RecipeFiles,
  CreateSnapshotRequest,
  SnapshotCreatedReply,
  PullRequest,
  PullReply,
  PoolRequest,
  PoolReply,
  Owner,
  Lease,
  SandboxInfo,
  CreateSandboxesRequest,
  ConsoleReply,
  EmptyRequest,
  PingReply,
  ExecRequest,
  ExecReply,
  EvalRequest,
  EvalReply,
  BranchRequest,
  BranchReply,
  HeartbeatReply,
  OwnerRemovedReply,
} as const;
