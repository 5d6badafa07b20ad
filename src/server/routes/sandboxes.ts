import type { BranchReply, ConsoleReply, EvalReply } from '../../api/types.js';
import { BRANCH_MODES, type BranchMode } from '../../engine/snapshot/branch.js';
import { ForkdError } from '../../errors.js';
import type { ExecOptions } from '../../engine/agent/guest.js';
import { MAX_FORK } from '../../engine/engine.js';
import { validateTag } from '../../engine/snapshot/tag.js';
import { field, readBody, readJsonObject } from '../body.js';
import type { DaemonContext } from '../context.js';
import type { Sandbox } from '../registry.js';
import { sandboxInfo } from '../registry.js';
import type { Router } from '../router.js';
import { snapshotSummary } from './snapshots.js';

const round = (ms: number) => Math.round(ms * 10) / 10;

export const FILE_BODY_LIMIT = 64 * 1024 * 1024;
export const CONSOLE_MAX_LINES = 1000;
const CONSOLE_DEFAULT_LINES = 50;

function consoleLines(query: URLSearchParams): number {
  if (!query.has('lines')) return CONSOLE_DEFAULT_LINES;
  const lines = Number(query.get('lines'));
  if (!Number.isInteger(lines) || lines < 1 || lines > CONSOLE_MAX_LINES) {
    throw new ForkdError('FORKD_ERR_BAD_INPUT', `"lines" must be an integer from 1 to ${CONSOLE_MAX_LINES}`, {
      hint: '?lines=50',
    });
  }
  return lines;
}

function guestPath(query: URLSearchParams): string {
  const path = query.get('path');
  if (!path || !path.startsWith('/') || path.includes('\0')) {
    throw new ForkdError('FORKD_ERR_BAD_INPUT', 'the "path" query parameter must be an absolute guest path', {
      hint: '?path=/tmp/file',
    });
  }
  return path;
}

export function sandboxRoutes(router: Router, ctx: DaemonContext): void {
  const { engine, registry, slots, metrics, branches } = ctx;

  /** Runs a request against a sandbox; a sandbox whose VM died is removed and reported gone (410). */
  const withSandbox = async <T>(id: string, fn: (sandbox: Sandbox) => Promise<T>): Promise<T> => {
    const sandbox = registry.get(id);
    try {
      return await fn(sandbox);
    } catch (err) {
      if (err instanceof ForkdError && err.code === 'FORKD_ERR_VM_STOPPED') {
        registry.take(id);
        await sandbox.vm.kill();
      }
      throw err;
    }
  };

  router
    .on('POST', '/v1/sandboxes', async ({ req }) => {
      const body = await readJsonObject(req, ['snapshot', 'n']);
      const tag = validateTag(field<string>(body, 'snapshot', 'string'));
      const n = field<number>(body, 'n', 'integer') ?? 1;
      if (n < 1 || n > MAX_FORK) {
        throw new ForkdError('FORKD_ERR_LIMIT', `n must be an integer from 1 to ${MAX_FORK}`, {
          hint: 'fork in batches if you need more',
        });
      }
      const release = slots.acquire();
      try {
        const children = await engine.fork(tag, n);
        for (const child of children) metrics.observeFork(child.readyMs);
        const json = children.map((vm) => sandboxInfo(registry.add(tag, vm)));
        metrics.observeSandboxes(registry.size);
        return { status: 201, json };
      } finally {
        release();
      }
    })
    .on('GET', '/v1/sandboxes', async () => ({ status: 200, json: registry.list().map(sandboxInfo) }))
    .on('GET', '/v1/sandboxes/:id', async ({ params }) => ({
      status: 200,
      json: sandboxInfo(registry.get(params.id!)),
    }))
    .on('GET', '/v1/sandboxes/:id/console', async ({ params, query }) => {
      const lines = consoleLines(query);
      const json: ConsoleReply = { id: params.id!, lines, text: registry.get(params.id!).vm.consoleTail(lines) };
      return { status: 200, json };
    })
    .on('DELETE', '/v1/sandboxes/:id', async ({ params }) => {
      await registry.take(params.id!).vm.kill();
      return { status: 204 };
    })
    .on('POST', '/v1/sandboxes/:id/ping', async ({ req, params }) => {
      await readJsonObject(req, []);
      return withSandbox(params.id!, async (s) => ({
        status: 200,
        json: { pong: true, ...(await s.vm.guest.ping()) },
      }));
    })
    .on('POST', '/v1/sandboxes/:id/exec', async ({ req, params }) => {
      const body = await readJsonObject(req, ['argv', 'shell', 'env', 'cwd', 'stdin', 'timeout_ms', 'max_output']);
      const argv = field<string[]>(body, 'argv', 'string[]');
      const shell = field<string>(body, 'shell', 'string');
      if ((argv === undefined) === (shell === undefined) || argv?.length === 0) {
        throw new ForkdError(
          'FORKD_ERR_BAD_INPUT',
          'exec needs exactly one of "argv" (non-empty array of strings) or "shell" (string)',
        );
      }
      const options: ExecOptions = {};
      const env = field<Record<string, string>>(body, 'env', 'object');
      const cwd = field<string>(body, 'cwd', 'string');
      const stdin = field<string>(body, 'stdin', 'string');
      const timeoutMs = field<number>(body, 'timeout_ms', 'integer');
      const maxOutput = field<number>(body, 'max_output', 'integer');
      if (env) options.env = env;
      if (cwd) options.cwd = cwd;
      if (stdin !== undefined) options.stdin = Buffer.from(stdin, 'base64');
      if (timeoutMs !== undefined) options.timeoutMs = timeoutMs;
      if (maxOutput !== undefined) options.maxOutputBytes = maxOutput;
      return withSandbox(params.id!, async (s) => {
        const r = await s.vm.exec(argv ?? shell!, options);
        return {
          status: 200,
          json: {
            exit_code: r.exitCode,
            signal: r.signal,
            timed_out: r.timedOut,
            stdout: r.stdout.toString('base64'),
            stderr: r.stderr.toString('base64'),
            stdout_truncated: r.stdoutTruncated,
            stderr_truncated: r.stderrTruncated,
            duration_ms: r.durationMs,
          },
        };
      });
    })
    .on('POST', '/v1/sandboxes/:id/branch', async ({ req, params }) => {
      const body = await readJsonObject(req, ['tag', 'mode', 'wait']);
      const tag = validateTag(field<string>(body, 'tag', 'string'));
      const mode = (field<string>(body, 'mode', 'string') ?? 'live') as BranchMode;
      const wait = field<boolean>(body, 'wait', 'boolean') ?? true;
      if (!BRANCH_MODES.includes(mode))
        throw new ForkdError('FORKD_ERR_BAD_INPUT', `"mode" must be one of ${BRANCH_MODES.join(', ')}`);
      if (!wait && mode !== 'live') {
        throw new ForkdError('FORKD_ERR_BAD_INPUT', '"wait": false is for live branches only', {
          hint: 'full and diff branches pause the sandbox until the copy is done anyway',
        });
      }
      const sandbox = registry.get(params.id!);
      const release = slots.acquire(tag);
      let started;
      try {
        branches.forget(tag);
        started = await engine.startBranch(sandbox.vm, tag, mode);
      } catch (err) {
        release();
        throw err;
      }
      void started.done.finally(release).catch(() => {});
      if (!wait) {
        branches.track(tag, sandbox.id, started.done);
        const { pauseMs } = await started.resumed;
        const json: BranchReply = { tag, status: 'writing', mode, pause_ms: round(pauseMs) };
        return { status: 202, json };
      }
      const r = await started.done;
      const json: BranchReply = {
        ...snapshotSummary(r),
        status: 'ready',
        mode,
        pause_ms: round(r.pauseMs),
        bytes_written: r.bytesWritten,
        transferred_bytes: r.transferredBytes,
        passes: r.passes,
        ...(r.diffPages !== undefined ? { diff_pages: r.diffPages } : {}),
        total_ms: Math.round(r.totalMs),
      };
      return { status: 201, json };
    })
    .on('POST', '/v1/sandboxes/:id/eval', async ({ req, params }) => {
      const body = await readJsonObject(req, ['code', 'timeout_ms']);
      const code = field<string>(body, 'code', 'string');
      if (code === undefined) throw new ForkdError('FORKD_ERR_BAD_INPUT', 'eval needs "code" (string)');
      const timeoutMs = field<number>(body, 'timeout_ms', 'integer');
      return withSandbox(params.id!, async (s) => {
        const { durationMs, ...result } = await s.vm.eval(code, timeoutMs === undefined ? {} : { timeoutMs });
        const json: EvalReply = { ...result, duration_ms: durationMs };
        return { status: 200, json };
      });
    })
    .on('GET', '/v1/sandboxes/:id/files', async ({ params, query }) => {
      const path = guestPath(query);
      return withSandbox(params.id!, async (s) => ({
        status: 200,
        contentType: 'application/octet-stream',
        body: await s.vm.readFile(path),
      }));
    })
    .on('PUT', '/v1/sandboxes/:id/files', async ({ req, params, query }) => {
      const path = guestPath(query);
      const mode = query.has('mode') ? Number.parseInt(query.get('mode')!, 8) : 0o644;
      if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777)
        throw new ForkdError('FORKD_ERR_BAD_INPUT', '"mode" must be octal, like 644');
      registry.get(params.id!); // 404 before reading a large body
      const data = await readBody(req, FILE_BODY_LIMIT);
      return withSandbox(params.id!, async (s) => {
        await s.vm.writeFile(path, data, { mode });
        return { status: 204 };
      });
    });
}
