import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { runDoctor, type DoctorReport } from './doctor.js';
import { assertSupportedHost } from '../engine/host-platform.js';
import { packageRoot, packageVersion } from '../common/package-root.js';
import { exitOnSignals } from '../engine/reaper.js';
import { loadRecipe } from '../engine/images/recipe.js';
import { Daemon } from '../server/daemon.js';
import { formatDemo, runDemo } from './demo.js';
import { sandboxCommands } from './sandbox-commands.js';
import type { OnProgress } from '../engine/progress.js';
import { openEngine } from '../hub/hub.js';
import type { Unpacked } from '../hub/unpack.js';
import { commandError, debugStack } from './errors.js';
import { progressRenderer } from './progress.js';

interface JsonFlag {
  json?: boolean;
}

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError('expected a positive integer');
  return n;
}

/** A process id for --exit-with; whether it is a running process, the daemon checks. */
function pidArgument(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n <= 0) {
    throw new InvalidArgumentError(
      "expected a process id (a positive integer): the pid of the process whose end stops the daemon, such as the test runner's own ($$, os.getpid(), process.pid)",
    );
  }
  return n;
}

function formatBytes(bytes: number): string {
  return bytes >= 1024 * 1024 ? `${(bytes / 1024 / 1024).toFixed(1)} MiB` : `${(bytes / 1024).toFixed(0)} KiB`;
}

/** Runs long work with progress on stderr (none with --json or --quiet), stopped however it ends. */
function withProgress<T>(quiet: boolean, work: (onProgress: OnProgress) => Promise<T>): Promise<T> {
  const progress = progressRenderer({ quiet });
  return work(progress.onProgress).finally(progress.stop);
}

/** --tag and --force of unpack and pull, as the engine takes them. */
function installOptions(opts: { tag?: string; force?: boolean }): { tag?: string; force?: boolean } {
  return { ...(opts.tag ? { tag: opts.tag } : {}), ...(opts.force ? { force: true } : {}) };
}

/** Where an image came from: an official pack, the cache, or a build that took `seconds`. */
function provenance(image: { reused: boolean; official?: string }, seconds: number): string {
  if (image.official) return `from the official pack ${image.official}`;
  return image.reused ? 'reused from cache' : `built in ${seconds}s`;
}

/** The one line that says a pack's snapshot was taken again here, why, and how long it took. */
function retakenNote(retaken: Unpacked['retaken']): string {
  return retaken ? ` (snapshot taken again here in ${(retaken.ms / 1000).toFixed(1)} s: ${retaken.reason})` : '';
}

/** This process's peak resident memory, in bytes (packs promise to stay bounded). */
function peakRss(): number {
  return process.resourceUsage().maxRSS * 1024;
}

function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** Runs a command action; an error becomes a message + hint (or a JSON error) and exit code 1. */
function action<A extends unknown[]>(fn: (...args: A) => Promise<number | void>) {
  return async (...args: A): Promise<void> => {
    const opts = args.find((a): a is JsonFlag => typeof a === 'object' && a !== null && !Array.isArray(a)) ?? {};
    try {
      const code = await fn(...args);
      process.exitCode = code ?? 0;
    } catch (err) {
      const e = commandError(err);
      const stack = debugStack(e);
      if (stack) process.stderr.write(`${stack}\n`);
      if (opts.json) printJson(e.toJSON());
      else process.stderr.write(`forkd: ${e.describe()}\n`);
      process.exitCode = 1;
    }
  };
}

function printDoctor(report: DoctorReport): void {
  const mark = { pass: 'PASS', warn: 'WARN', fail: 'FAIL', skip: 'SKIP' } as const;
  for (const c of report.checks) {
    process.stdout.write(`${mark[c.status]}  ${c.name.padEnd(20)} ${c.detail}\n`);
    if (c.hint) process.stdout.write(`      ${''.padEnd(20)} fix: ${c.hint}\n`);
  }
  const s = report.summary;
  process.stdout.write(
    `\naccel: ${report.accel ?? 'unknown'}\npass=${s.pass} warn=${s.warn} fail=${s.fail} skip=${s.skip}\n`,
  );
}

const program = new Command('forkd')
  .description('Fork microVMs from a warmed parent: fast, isolated test suites.')
  .version(packageVersion)
  .enablePositionalOptions()
  // Ctrl-C and SIGTERM end a command and take its VMs with it; `serve` drains gracefully instead.
  .hook('preAction', (_program, command) => {
    if (command.name() !== 'serve') exitOnSignals();
  });

program
  .command('doctor')
  .description('check this host: QEMU, accelerator (KVM or TCG, with the reason), cached images, disk space')
  .option('--json', 'machine-readable report')
  .action(
    action(async (opts: JsonFlag) => {
      const { engine } = openEngine();
      const report = await runDoctor(engine.paths);
      if (opts.json) printJson(report);
      else printDoctor(report);
      return report.ok ? 0 : 1;
    }),
  );

program
  .command('install-deps')
  .description(
    'install the host packages forkd needs with apt-get, using sudo when not root (the one step that needs root)',
  )
  .action(
    action(async () => {
      assertSupportedHost();
      const script = join(packageRoot, 'scripts', 'host-packages.sh');
      const child = spawn('bash', [script], { stdio: 'inherit' });
      const [code] = (await once(child, 'close')) as [number | null];
      return code ?? 1;
    }),
  );

program
  .command('build')
  .description("build a guest image: `base` (kernel + initramfs with the agent) or a recipe's root filesystem; cached")
  .argument('<target>', 'base, a recipe name (see recipes/) or the path of a recipe directory')
  .option('--json', 'print the result as JSON')
  .option('-q, --quiet', 'no progress output')
  .action(
    action(async (target: string, opts: JsonFlag & { quiet?: boolean }) => {
      const progress = progressRenderer({ quiet: Boolean(opts.quiet || opts.json) });
      const started = performance.now();
      const { engine } = openEngine();
      const seconds = () => Number(((performance.now() - started) / 1000).toFixed(1));
      if (target === 'base') {
        const base = await engine.buildBase({ onProgress: progress.onProgress }).finally(progress.stop);
        if (opts.json) return printJson({ ...base, seconds: seconds() });
        return void process.stdout.write(
          `kernel    ${base.kernel}\ninitramfs ${base.initrd}\n${provenance(base, seconds())}\n`,
        );
      }
      const recipe = loadRecipe(target);
      if (recipe.base === 'none') {
        if (opts.json) return printJson({ recipe: recipe.name, image: null, reused: true, seconds: seconds() });
        return void process.stdout.write(`recipe ${recipe.name} boots the embedded initramfs: no image to build\n`);
      }
      const image = await engine.recipeImage(recipe, { onProgress: progress.onProgress }).finally(progress.stop);
      if (opts.json)
        return printJson({
          recipe: recipe.name,
          image: image.image,
          reused: image.reused,
          official: image.official ?? null,
          seconds: seconds(),
        });
      process.stdout.write(`rootfs ${image.image}\n${provenance(image, seconds())}\n`);
    }),
  );

program
  .command('run')
  .description('boot a fresh base microVM, run a command in it, print its output and exit with its code')
  .argument('<command...>', 'the command and its arguments (put them after --)')
  .option('--memory <MiB>', 'guest memory', positiveInt, 256)
  .option('--timeout <seconds>', 'kill the command after this long', positiveInt)
  .option('--json', 'print exit code, output and timings as JSON')
  .option('-q, --quiet', 'no progress output')
  .passThroughOptions()
  .action(
    action(async (command: string[], opts: JsonFlag & { memory: number; timeout?: number; quiet?: boolean }) => {
      const { engine } = openEngine();
      await using vm = await withProgress(Boolean(opts.quiet || opts.json), (onProgress) =>
        engine.boot({ memoryMiB: opts.memory }, onProgress),
      );
      const result = await vm.exec(command, opts.timeout ? { timeoutMs: opts.timeout * 1000 } : {});
      if (opts.json) {
        printJson({
          exitCode: result.exitCode,
          signal: result.signal,
          timedOut: result.timedOut,
          stdout: result.stdout.toString('utf8'),
          stderr: result.stderr.toString('utf8'),
          accel: vm.accel,
          bootMs: Math.round(vm.readyMs),
          execMs: result.durationMs,
        });
      } else {
        process.stdout.write(result.stdout);
        process.stderr.write(result.stderr);
        if (result.timedOut) process.stderr.write(`forkd: command timed out after ${opts.timeout}s and was killed\n`);
      }
      return result.exitCode;
    }),
  );

program
  .command('snapshot')
  .description('boot a parent, run an optional warm-up in it, and save it as a snapshot that children fork from')
  .requiredOption('--tag <tag>', 'name of the snapshot')
  .option('--recipe <name>', "boot this recipe's root filesystem (built if needed) with its warm-up, ports and memory")
  .option('--mem-mib <MiB>', "guest memory (default: the recipe's, else 256)", positiveInt)
  .option('--warmup <cmd>', 'shell command run in the parent before the snapshot; must exit 0')
  .option('--port <port...>', 'guest TCP ports each child exposes on 127.0.0.1')
  .option('--json', 'print the result as JSON')
  .option('-q, --quiet', 'no progress output')
  .action(
    action(
      async (
        opts: JsonFlag & {
          tag: string;
          recipe?: string;
          memMib?: number;
          warmup?: string;
          port?: string[];
          quiet?: boolean;
        },
      ) => {
        const progress = progressRenderer({ quiet: Boolean(opts.quiet || opts.json) });
        const result = await openEngine()
          .engine.snapshot(opts.tag, {
            ...(opts.memMib ? { memoryMiB: opts.memMib } : {}),
            ...(opts.port ? { ports: opts.port.map(Number) } : {}),
            ...(opts.recipe ? { recipe: opts.recipe } : {}),
            ...(opts.warmup ? { warmup: opts.warmup } : {}),
            onProgress: progress.onProgress,
          })
          .finally(progress.stop);
        const timings = Object.fromEntries(Object.entries(result.timings).map(([k, v]) => [k, Math.round(v)]));
        if (opts.json)
          printJson({
            tag: result.tag,
            dir: result.dir,
            diskBytes: result.diskBytes,
            meta: result.meta,
            timings,
            official: result.official ?? null,
          });
        else if (result.official)
          process.stdout.write(`snapshot ${result.tag}: the official ${result.official}, in ${timings.totalMs} ms\n`);
        else
          process.stdout.write(
            `snapshot ${result.tag}: boot ${timings.bootMs} ms, warm-up ${timings.warmupMs} ms, save ${timings.saveMs} ms; ${formatBytes(result.diskBytes)} on disk\n`,
          );
      },
    ),
  );

program
  .command('images')
  .description('list snapshots: tag, memory size, bytes on disk, created, parent')
  .option('--json', 'machine-readable list')
  .action(
    action(async (opts: JsonFlag) => {
      const list = await openEngine().engine.snapshots.list();
      const rows = list.map((s) => ({
        tag: s.tag,
        memoryMiB: s.meta.memoryMiB,
        diskBytes: s.diskBytes,
        created: s.meta.created,
        parent: s.meta.parent,
        accel: s.meta.accel,
      }));
      if (opts.json) return printJson(rows);
      if (!rows.length) return void process.stdout.write('no snapshots (take one: forkd snapshot --tag NAME)\n');
      const width = Math.max(3, ...rows.map((r) => r.tag.length));
      process.stdout.write(`${'TAG'.padEnd(width)}  MEMORY    DISK      ACCEL  CREATED                   PARENT\n`);
      for (const r of rows) {
        process.stdout.write(
          `${r.tag.padEnd(width)}  ${`${r.memoryMiB} MiB`.padEnd(8)}  ${formatBytes(r.diskBytes).padEnd(8)}  ${r.accel.padEnd(5)}  ${r.created.padEnd(24)}  ${r.parent ?? '-'}\n`,
        );
      }
    }),
  );

program
  .command('info')
  .description("a snapshot's chain (depth, parent, ancestors, dependents) and its logical and physical bytes")
  .argument('<tag>', 'snapshot tag')
  .option('--json', 'machine-readable')
  .action(
    action(async (tag: string, opts: JsonFlag) => {
      const d = await openEngine().engine.describe(tag);
      const { info, ...rest } = d;
      if (opts.json) return printJson({ tag: info.tag, ...rest, meta: info.meta });
      const lines = [
        ['tag', info.tag],
        ['created', info.meta.created],
        [
          'branched',
          info.meta.branch
            ? `from ${info.meta.branch.from} (${info.meta.branch.mode}, paused ${info.meta.branch.pauseMs} ms)`
            : '-',
        ],
        ['depth', String(d.depth)],
        ['parent', d.parent ?? '-'],
        ['ancestors', d.ancestors.join(' <- ') || '-'],
        ['dependents', d.dependents.join(', ') || '-'],
        ['memory', `${info.meta.memoryMiB} MiB`],
        ['logical', formatBytes(d.logicalBytes)],
        [
          'physical',
          `${formatBytes(d.physicalBytes)}${d.cacheBytes ? ` (+ ${formatBytes(d.cacheBytes)} assembled-memory cache)` : ''}`,
        ],
      ];
      for (const [k, v] of lines) process.stdout.write(`${k!.padEnd(11)} ${v}\n`);
    }),
  );

program
  .command('compact')
  .description('flatten a chain link into a new snapshot with no parent')
  .requiredOption('--from <tag>', 'the link to flatten')
  .requiredOption('--to <tag>', 'the new snapshot')
  .option('--json', 'print the result as JSON')
  .action(
    action(async (opts: JsonFlag & { from: string; to: string }) => {
      const info = await openEngine().engine.compact(opts.from, opts.to);
      if (opts.json) return printJson({ tag: info.tag, diskBytes: info.diskBytes, meta: info.meta });
      process.stdout.write(`snapshot ${info.tag}: ${opts.from} flattened, ${formatBytes(info.diskBytes)} on disk\n`);
    }),
  );

program
  .command('rmi')
  .description('remove snapshots (one that diff links depend on needs --cascade or --force)')
  .argument('<tags...>', 'tags to remove')
  .option('--cascade', 'remove the diff links that depend on it too')
  .option('--force', 'remove it even though diff links depend on it (they fail once their cache is gone)')
  .action(
    action(async (tags: string[], opts: { cascade?: boolean; force?: boolean }) => {
      const { engine } = openEngine();
      let failed = 0;
      for (const tag of tags) {
        try {
          for (const removed of await engine.removeSnapshot(tag, opts)) process.stdout.write(`removed ${removed}\n`);
        } catch (err) {
          failed++;
          process.stderr.write(`forkd: ${commandError(err).describe()}\n`);
        }
      }
      return failed ? 1 : 0;
    }),
  );

program
  .command('pack')
  .description(
    'write a snapshot (its chain, and the images it runs on) to a .forkd.tar.zst that zstd -d | tar x can read',
  )
  .requiredOption('--tag <tag>', 'the snapshot')
  .option('-o, --out <file>', 'the pack to write (default ./<tag>.forkd.tar.zst)')
  .option('--json', 'print the manifest and size as JSON')
  .action(
    action(async (opts: JsonFlag & { tag: string; out?: string }) => {
      const out = opts.out ?? `${opts.tag}.forkd.tar.zst`;
      const r = await withProgress(Boolean(opts.json), (onProgress) =>
        openEngine().hub.pack(opts.tag, out, onProgress),
      );
      if (opts.json) {
        return printJson({
          file: out,
          bytes: r.bytes,
          sha256: r.sha256,
          peak_rss_bytes: peakRss(),
          manifest: r.manifest,
        });
      }
      const links = r.manifest.chain.length;
      process.stdout.write(
        `packed ${opts.tag}${links > 1 ? ` (a chain of ${links})` : ''} into ${out}: ${formatBytes(r.bytes)}\n`,
      );
    }),
  );

program
  .command('unpack')
  .description('install a pack: every sha256 is checked before anything becomes visible')
  .argument('<file>', 'a .forkd.tar.zst written by forkd pack')
  .option('--tag <tag>', 'install the snapshot under this tag (a pack of one snapshot)')
  .option('--force', 'replace snapshots that exist under the same tags')
  .option('--json', 'print the installed tags and manifest as JSON')
  .action(
    action(async (file: string, opts: JsonFlag & { tag?: string; force?: boolean }) => {
      const r = await withProgress(Boolean(opts.json), (onProgress) =>
        openEngine().hub.unpack(file, installOptions(opts), onProgress),
      );
      if (opts.json)
        return printJson({ tags: r.tags, retaken: r.retaken ?? null, peak_rss_bytes: peakRss(), manifest: r.manifest });
      process.stdout.write(`unpacked ${r.tags.join(', ')} from ${file}${retakenNote(r.retaken)}\n`);
    }),
  );

program
  .command('pull')
  .description('install a pack from an https:// URL, or owner/name[@version] through the Hub (FORKD_HUB_URL)')
  .argument('<ref>', 'owner/name, owner/name@version, or a URL of a .forkd.tar.zst')
  .option('--tag <tag>', 'install the snapshot under this tag (a pack of one snapshot)')
  .option('--force', 'download again and replace snapshots that exist under the same tags')
  .option('--json', 'print the installed tags as JSON')
  .action(
    action(async (ref: string, opts: JsonFlag & { tag?: string; force?: boolean }) => {
      const r = await withProgress(Boolean(opts.json), (onProgress) =>
        openEngine().hub.pull(ref, installOptions(opts), onProgress),
      );
      if (opts.json) return printJson({ ref: r.ref, tags: r.tags, cached: r.cached, retaken: r.retaken ?? null });
      process.stdout.write(
        `${r.cached ? 'already pulled' : 'pulled'} ${r.ref}: ${r.tags.join(', ')}${retakenNote(r.retaken)}\n`,
      );
    }),
  );

program
  .command('push')
  .description('pack a snapshot and upload it with a streamed HTTP PUT (e.g. to a presigned URL)')
  .requiredOption('--tag <tag>', 'the snapshot')
  .argument('<url>', 'where to PUT the pack')
  .option('--json', 'print the size and sha256 as JSON (the registry entry needs the sha256)')
  .action(
    action(async (url: string, opts: JsonFlag & { tag: string }) => {
      const r = await withProgress(Boolean(opts.json), (onProgress) =>
        openEngine().hub.push(opts.tag, url, onProgress),
      );
      if (opts.json) return printJson({ tag: opts.tag, url, bytes: r.bytes, sha256: r.sha256 });
      process.stdout.write(`pushed ${opts.tag} to ${url}: ${formatBytes(r.bytes)}, sha256 ${r.sha256}\n`);
    }),
  );

program
  .command('demo')
  .description(
    'the main job: cold boot vs snapshot + fork of N children, with timings and memory; cleans up after itself',
  )
  .option('--n <count>', 'children to fork', positiveInt, 8)
  .option('--json', 'print the report as JSON')
  .option('-q, --quiet', 'no progress output')
  .action(
    action(async (opts: JsonFlag & { n: number; quiet?: boolean }) => {
      const progress = progressRenderer({ quiet: Boolean(opts.quiet || opts.json) });
      const { engine } = openEngine();
      await engine.buildBase({ onProgress: progress.onProgress });
      const report = await runDemo(engine, opts.n, progress.onProgress).finally(progress.stop);
      if (opts.json) printJson(report);
      else process.stdout.write(`${formatDemo(report)}\n`);
      return report.children_ok === report.fork.n + report.fork.pooled_n ? 0 : 1;
    }),
  );

sandboxCommands(program, { action, printJson, positiveInt });

program
  .command('serve')
  .description(
    'run the engine as a daemon: REST API on a Unix socket (default) or loopback TCP, bearer token, audit log',
  )
  .option('--listen <addr>', 'Unix socket path or 127.0.0.1:PORT (default: <state>/forkd.sock)')
  .option('--token-file <file>', 'bearer token file (default: <state>/token, generated 0600 if absent)')
  .option('--max-heavy <n>', 'snapshots/forks in flight at once; more get 503', positiveInt, 4)
  .option('--allow-http-pull', 'let POST /v1/snapshots/pull fetch plain http:// packs (default: https:// only)')
  .option(
    '--allow-recipe-upload',
    'let POST /v1/snapshots take a recipe as its files (recipe_files): its build runs on this host',
  )
  .option(
    '--exit-with <pid>',
    "a daemon for one run: stop (as on SIGTERM) when process PID ends, e.g. the test runner's; its VMs die with the daemon even if it is SIGKILLed",
    pidArgument,
  )
  .action(
    action(
      async (opts: {
        listen?: string;
        tokenFile?: string;
        maxHeavy: number;
        allowHttpPull?: boolean;
        allowRecipeUpload?: boolean;
        exitWith?: number;
      }) => {
        const daemon = await Daemon.start({
          ...(opts.listen ? { listen: opts.listen } : {}),
          ...(opts.tokenFile ? { tokenFile: opts.tokenFile } : {}),
          maxHeavy: opts.maxHeavy,
          allowHttpPull: opts.allowHttpPull === true,
          allowRecipeUpload: opts.allowRecipeUpload === true,
          ...(opts.exitWith === undefined ? {} : { exitWith: opts.exitWith }),
        });
        const until = opts.exitWith === undefined ? '' : ` or the end of process ${opts.exitWith}`;
        process.stderr.write(
          `forkd serve: listening on ${daemon.endpoint} (token in ${daemon.tokenFile}); SIGTERM, Ctrl-C${until} stops it\n`,
        );
        for (const signal of ['SIGTERM', 'SIGINT'] as const) process.once(signal, () => void daemon.close(signal));
        const reason = await daemon.stopped;
        process.stderr.write(`forkd serve: stopped (${reason}); every sandbox it started is gone\n`);
      },
    ),
  );

await program.parseAsync(process.argv);
