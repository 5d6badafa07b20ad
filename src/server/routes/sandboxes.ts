import { API } from '../../api/routes.js';
import { FILE_BODY_LIMIT } from '../../api/schemas.js';
import type { ConsoleReply } from '../../api/types.js';
import { branchReadyReply, branchWritingReply, evalReply, execCall, execReply, pingReply } from '../../api/wire.js';
import { ForkdError } from '../../errors.js';
import { readBody } from '../body.js';
import type { DaemonContext } from '../context.js';
import type { Sandbox } from '../registry.js';
import { sandboxInfo } from '../registry.js';
import type { Router } from '../router.js';

const CONSOLE_DEFAULT_LINES = 50;

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
    .on(API.createSandboxes, async ({ body }) => {
      const { snapshot, n = 1 } = body;
      const release = slots.acquire();
      try {
        const children = await engine.fork(snapshot, n);
        for (const child of children) metrics.observeFork(child.readyMs);
        const json = children.map((vm) => sandboxInfo(registry.add(snapshot, vm)));
        metrics.observeSandboxes(registry.size);
        return { status: 201, json };
      } finally {
        release();
      }
    })
    .on(API.listSandboxes, async () => ({ status: 200, json: registry.list().map(sandboxInfo) }))
    .on(API.getSandbox, async ({ params }) => ({ status: 200, json: sandboxInfo(registry.get(params.id)) }))
    .on(API.console, async ({ params, query }) => {
      const lines = query.lines ?? CONSOLE_DEFAULT_LINES;
      const json: ConsoleReply = { id: params.id, lines, text: registry.get(params.id).vm.consoleTail(lines) };
      return { status: 200, json };
    })
    .on(API.deleteSandbox, async ({ params }) => {
      await registry.take(params.id).vm.kill();
      return { status: 204 };
    })
    .on(API.ping, async ({ params }) =>
      withSandbox(params.id, async (s) => ({ status: 200, json: pingReply(await s.vm.guest.ping()) })),
    )
    .on(API.exec, async ({ params, body }) => {
      const { command, options } = execCall(body);
      return withSandbox(params.id, async (s) => ({ status: 200, json: execReply(await s.vm.exec(command, options)) }));
    })
    .on(API.branch, async ({ params, body }) => {
      const { tag, mode = 'live', wait = true } = body;
      if (!wait && mode !== 'live') {
        throw new ForkdError('FORKD_ERR_BAD_INPUT', '"wait": false is for live branches only', {
          hint: 'full and diff branches pause the sandbox until the copy is done anyway',
        });
      }
      const sandbox = registry.get(params.id);
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
        return { status: 202, json: branchWritingReply(tag, mode, pauseMs) };
      }
      return { status: 201, json: branchReadyReply(await started.done) };
    })
    .on(API.eval, async ({ params, body }) => {
      const { code, timeout_ms: timeoutMs } = body;
      return withSandbox(params.id, async (s) => ({
        status: 200,
        json: evalReply(await s.vm.eval(code, timeoutMs === undefined ? {} : { timeoutMs })),
      }));
    })
    .on(API.readFile, async ({ params, query }) =>
      withSandbox(params.id, async (s) => ({
        status: 200,
        contentType: 'application/octet-stream',
        body: await s.vm.readFile(query.path, { maxBytes: query.max_bytes ?? FILE_BODY_LIMIT }),
      })),
    )
    .on(API.writeFile, async ({ req, params, query }) => {
      const mode = Number.parseInt(query.mode ?? '644', 8);
      registry.get(params.id); // 404 before reading a large body
      const data = await readBody(req, FILE_BODY_LIMIT);
      return withSandbox(params.id, async (s) => {
        await s.vm.writeFile(query.path, data, { mode });
        return { status: 204 };
      });
    });
}
