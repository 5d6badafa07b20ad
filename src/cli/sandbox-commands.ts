import type { Command } from 'commander';
import { Controller, type SandboxInfo } from '../client/controller.js';
import { ForkdError, errorMessage } from '../errors.js';

interface Helpers {
  action: <A extends unknown[]>(fn: (...args: A) => Promise<number | void>) => (...args: A) => Promise<void>;
  printJson: (value: unknown) => void;
  positiveInt: (value: string) => number;
}

async function withController<T>(fn: (c: Controller) => Promise<T>): Promise<T> {
  const controller = new Controller();
  try {
    return await fn(controller);
  } finally {
    await controller.close();
  }
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

function printTable(rows: SandboxInfo[]): void {
  if (!rows.length) return void process.stdout.write('no sandboxes\n');
  process.stdout.write(`${'ID'.padEnd(15)}  ${'SNAPSHOT'.padEnd(20)}  ${'PID'.padEnd(7)}  ACCEL  READY     CREATED\n`);
  for (const r of rows) {
    process.stdout.write(
      `${r.id.padEnd(15)}  ${r.snapshot.padEnd(20)}  ${String(r.pid).padEnd(7)}  ${r.accel.padEnd(5)}  ${`${r.ready_ms} ms`.padEnd(8)}  ${r.created}\n`,
    );
  }
}

/** Sandbox verbs: they talk to a running daemon (FORKD_ENDPOINT/FORKD_TOKEN, or the local `forkd serve`). */
export function sandboxCommands(program: Command, { action, printJson, positiveInt }: Helpers): void {
  program
    .command('spawn')
    .description('fork sandboxes from a snapshot on the daemon')
    .requiredOption('--tag <tag>', 'snapshot to fork from')
    .option('-n, --n <count>', 'how many', positiveInt, 1)
    .option('--json', 'print the sandboxes as JSON')
    .action(
      action(async (opts: { tag: string; n: number; json?: boolean }) => {
        const sandboxes = await withController((c) => c.createSandboxes(opts.tag, opts.n));
        if (opts.json) printJson(sandboxes.map((s) => s.info));
        else printTable(sandboxes.map((s) => s.info));
      }),
    );

  program
    .command('ls')
    .description("list the daemon's sandboxes")
    .option('--json', 'machine-readable list')
    .action(
      action(async (opts: { json?: boolean }) => {
        const list = await withController((c) => c.listSandboxes());
        if (opts.json) printJson(list);
        else printTable(list);
      }),
    );

  program
    .command('exec')
    .description('run a command in a sandbox; prints its output and exits with its code')
    .argument('<id>', 'sandbox id')
    .argument('<command...>', 'the command (after --)')
    .option('--timeout <seconds>', 'kill the command after this long', positiveInt)
    .option('--json', 'print exit code and output as JSON')
    .passThroughOptions()
    .action(
      action(async (id: string, args: string[], opts: { timeout?: number; json?: boolean }) => {
        // commander keeps the `--` when it follows another positional argument
        const command = args[0] === '--' ? args.slice(1) : args;
        const r = await withController((c) =>
          c.exec(id, command, opts.timeout ? { timeoutMs: opts.timeout * 1000 } : {}),
        );
        if (opts.json) printJson({ ...r, stdout: r.stdout.toString('utf8'), stderr: r.stderr.toString('utf8') });
        else {
          process.stdout.write(r.stdout);
          process.stderr.write(r.stderr);
        }
        return r.exitCode;
      }),
    );

  program
    .command('branch')
    .description('copy a running sandbox into a new snapshot; the sandbox carries on')
    .argument('<id>', 'sandbox id')
    .requiredOption('--tag <tag>', 'the new snapshot')
    .option('--mode <mode>', 'full (pause for the whole copy), diff (store changed pages only) or live', 'live')
    .option('--no-wait', 'live only: return once the sandbox runs again; `forkd ls`/`info` show when it is ready')
    .option('--json', 'print the result as JSON')
    .action(
      action(async (id: string, opts: { tag: string; mode: string; wait: boolean; json?: boolean }) => {
        const r = await withController((c) =>
          c.branch(id, opts.tag, { mode: opts.mode as 'full' | 'diff' | 'live', wait: opts.wait }),
        );
        if (opts.json) return printJson(r);
        const mib = (n?: number) => `${((n ?? 0) / 1048576).toFixed(1)} MiB`;
        process.stdout.write(
          r.status === 'writing'
            ? `snapshot ${r.tag}: writing (live); ${id} paused ${r.pause_ms} ms\n`
            : `snapshot ${r.tag}: ${r.mode}, ${id} paused ${r.pause_ms} ms, ${mib(r.bytes_written)} written, ${r.total_ms} ms in all\n`,
        );
      }),
    );

  program
    .command('eval')
    .description("run code in a sandbox's warm interpreter (python-numpy, nodejs recipes) and print its value")
    .argument('<id>', 'sandbox id')
    .argument('[code...]', 'the code (after --); read from stdin when absent')
    .option('--timeout <seconds>', 'give up waiting after this long', positiveInt)
    .option('--json', 'print value, repr, output and error as JSON')
    .action(
      action(async (id: string, args: string[], opts: { timeout?: number; json?: boolean }) => {
        const words = args[0] === '--' ? args.slice(1) : args;
        const code = words.length ? words.join(' ') : await readStdin();
        const r = await withController((c) => c.eval(id, code, opts.timeout ? { timeoutMs: opts.timeout * 1000 } : {}));
        if (opts.json) printJson(r);
        else {
          process.stdout.write(r.output);
          if (r.ok && r.repr !== null) process.stdout.write(`${r.repr}\n`);
          if (!r.ok) process.stderr.write(r.error.stack.endsWith('\n') ? r.error.stack : `${r.error.stack}\n`);
        }
        return r.ok ? 0 : 1;
      }),
    );

  program
    .command('logs')
    .description("print the end of a sandbox's guest console (kernel messages, what the guest writes to /dev/console)")
    .argument('<id>', 'sandbox id')
    .option('-n, --lines <count>', 'how many lines (at most 1000)', positiveInt, 50)
    .option('--json', 'print {id, lines, text} as JSON')
    .action(
      action(async (id: string, opts: { lines: number; json?: boolean }) => {
        const text = await withController((c) => c.console(id, opts.lines));
        if (opts.json) printJson({ id, lines: opts.lines, text });
        else if (text) process.stdout.write(`${text}\n`);
      }),
    );

  program
    .command('ping')
    .description("check a sandbox's guest agent answers")
    .argument('<id>', 'sandbox id')
    .action(action(async (id: string) => printJson(await withController((c) => c.ping(id)))));

  program
    .command('kill')
    .description('delete sandboxes (their VMs stop at once)')
    .argument('[ids...]', 'sandbox ids')
    .option('--all', 'every sandbox')
    .option('--tag <tag>', 'every sandbox forked from this snapshot')
    .action(
      action(async (ids: string[], opts: { all?: boolean; tag?: string }) => {
        if (!ids.length && !opts.all && !opts.tag) {
          throw new ForkdError('FORKD_ERR_BAD_INPUT', 'name the sandboxes to kill', {
            hint: 'forkd kill ID..., --all, or --tag T',
          });
        }
        return withController(async (c) => {
          const targets = ids.length
            ? ids
            : (await c.listSandboxes()).filter((s) => opts.all || s.snapshot === opts.tag).map((s) => s.id);
          let failed = 0;
          for (const id of targets) {
            try {
              await c.deleteSandbox(id);
              process.stdout.write(`killed ${id}\n`);
            } catch (err) {
              failed++;
              process.stderr.write(`forkd: ${err instanceof ForkdError ? err.describe() : errorMessage(err)}\n`);
            }
          }
          return failed ? 1 : 0;
        });
      }),
    );
}
