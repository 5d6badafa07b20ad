import { API } from '../../api/routes.js';
import { FILE_BODY_LIMIT } from '../../api/schemas.js';
import type { ConsoleReply } from '../../api/types.js';
import { branchReadyReply, branchWritingReply, evalReply, execCall, execReply, pingReply } from '../../api/wire.js';
import type { StartedVm } from '../../engine/engine.js';
import { ForkdError } from '../../errors.js';
import { readBody } from '../body.js';
import type { DaemonContext } from '../context.js';
import { hold, sandboxInfo, type Holder, type Sandbox } from '../ledger.js';
import { ownerRecord } from '../owners.js';
import type { Router } from '../router.js';

const CONSOLE_DEFAULT_LINES = 50;

export function sandboxRoutes(router: Router, ctx: DaemonContext): void {
  const { engine, ledger, slots, metrics, branches } = ctx;

  /** Runs a request against a sandbox, which no lease reaps meanwhile; its lease starts over when the request ends. */
  const withSandbox = async <T>(id: string, fn: (sandbox: Sandbox) => Promise<T>): Promise<T> => {
    const sandbox = ledger.sandbox(id);
    const done = hold(sandbox);
    try {
      return await fn(sandbox);
    } finally {
      done();
    }
  };

  /** Hands forked children to the client; if recording one fails (a full disk), none of them is left running. */
  const addSandboxes = async (snapshot: string, children: StartedVm[], holder: Holder): Promise<Sandbox[]> => {
    const added: Sandbox[] = [];
    try {
      for (const vm of children) added.push(ledger.addSandbox(snapshot, vm, holder));
      return added;
    } catch (err) {
      for (const sandbox of added) ledger.release(sandbox);
      await Promise.all(children.map((vm) => vm.kill()));
      throw err;
    }
  };

  router
    .on(API.createSandboxes, async ({ body }) => {
      const { snapshot, n = 1, owner, ttl_s: ttlS } = body;
      const holder: Holder = { owner: owner ? ownerRecord(owner) : null, ttlS: ttlS ?? null };
      const release = slots.acquire();
      try {
        const children = await engine.fork(snapshot, n);
        for (const child of children) metrics.observeFork(child.readyMs);
        const json = (await addSandboxes(snapshot, children, holder)).map(sandboxInfo);
        metrics.observeSandboxes(ledger.size);
        return { status: 201, json };
      } finally {
        release();
      }
    })
    .on(API.listSandboxes, async () => ({ status: 200, json: ledger.list().map(sandboxInfo) }))
    .on(API.getSandbox, async ({ params }) => ({ status: 200, json: sandboxInfo(ledger.sandbox(params.id)) }))
    .on(API.console, async ({ params, query }) => {
      const lines = query.lines ?? CONSOLE_DEFAULT_LINES;
      const json: ConsoleReply = { id: params.id, lines, text: ledger.sandbox(params.id).vm.consoleTail(lines) };
      return { status: 200, json };
    })
    .on(API.deleteSandbox, async ({ params }) => {
      await ledger.take(params.id).vm.kill();
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
      const sandbox = ledger.sandbox(params.id);
      const release = slots.acquire(tag);
      const done = hold(sandbox); // until the copy is done, even when the reply does not wait for it
      let started;
      try {
        branches.forget(tag);
        started = await engine.startBranch(sandbox.vm, tag, mode);
      } catch (err) {
        release();
        done();
        throw err;
      }
      void started.done
        .finally(() => {
          release();
          done();
        })
        .catch(() => {});
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
      return withSandbox(params.id, async (s) => {
        const data = await readBody(req, FILE_BODY_LIMIT); // after the 404 of an unknown sandbox
        await s.vm.writeFile(query.path, data, { mode });
        return { status: 204 };
      });
    });
}
