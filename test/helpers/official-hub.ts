/**
 * Official packs as a release makes them (scripts/release.mjs --packs), served by a Hub on
 * loopback, and a copy of the package that ships their pins: what a user's forkd-action is.
 */
import { execFileSync, spawn } from 'node:child_process';
import {
  chmodSync,
  cpSync,
  createReadStream,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { packageVersion } from '../../src/common/package-root.js';
import { PINS_FILE, type OfficialPins } from '../../src/hub/official.js';
import { repoRoot } from './readme-snippets.js';

/** Runs the release script into `out`: official packs of base and `recipes`, registry.json, the pins. */
export function makeOfficialPacks(out: string, recipes: string[]): OfficialPins {
  execFileSync(
    process.execPath,
    ['scripts/release.mjs', '--version', packageVersion, '--out', out, '--packs', '--recipes', recipes.join(',')],
    { cwd: repoRoot, stdio: ['ignore', 'ignore', 'inherit'] },
  );
  return JSON.parse(readFileSync(join(out, PINS_FILE), 'utf8')) as OfficialPins;
}

export interface Ran {
  status: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs a command without blocking this process: the Hub answers from this process's event loop,
 * so a spawnSync of a client that downloads from it would wait forever.
 */
export function run(command: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs = 900_000): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

/** How the Hub answers for one file: as it is, 404, with one byte changed, or with bytes added and no length. */
export type Answer = 'as-is' | 'missing' | 'tampered' | 'grown';

/** A Hub on 127.0.0.1 serving the files of a release dir, answering as told per file name. */
export class LoopbackHub {
  private constructor(
    private readonly server: Server,
    readonly url: string,
    /** The file names asked for, in order. */
    readonly requests: string[],
    private readonly answers: Map<string, Answer>,
  ) {}

  static async serve(dir: string): Promise<LoopbackHub> {
    const requests: string[] = [];
    const answers = new Map<string, Answer>();
    const server = createServer((req, res) => {
      const name = basename(decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname));
      requests.push(name);
      const file = join(dir, name);
      const answer = answers.get(name) ?? 'as-is';
      if (answer === 'missing' || !existsSync(file)) return void res.writeHead(404).end();
      if (answer === 'tampered') {
        const bytes = readFileSync(file);
        bytes[bytes.length >> 1]! ^= 0xff;
        return void res.writeHead(200, { 'content-length': bytes.length }).end(bytes);
      }
      if (answer === 'grown') {
        res.writeHead(200); // chunked: no length to refuse it by
        return void res.end(Buffer.concat([readFileSync(file), Buffer.alloc(4096, 1)]));
      }
      res.writeHead(200, { 'content-length': statSync(file).size });
      createReadStream(file).pipe(res);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    return new LoopbackHub(server, `http://127.0.0.1:${port}/`, requests, answers);
  }

  answer(file: string, how: Answer): void {
    this.answers.set(file, how);
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

/**
 * A copy of the package as npm installs it, with `pins` as its official-packs.json: bin/ and lib/
 * copied (lib finds the package root from where it is), the rest linked to this checkout.
 */
export function packageWithPins(pins: OfficialPins): { root: string; cli: string; remove(): void } {
  const root = mkdtempSync(join(tmpdir(), 'forkd-pinned-'));
  for (const dir of ['bin', 'lib']) cpSync(join(repoRoot, dir), join(root, dir), { recursive: true });
  for (const entry of ['native', 'recipes', 'scripts', 'node_modules', 'package.json'])
    symlinkSync(join(repoRoot, entry), join(root, entry));
  writeFileSync(join(root, PINS_FILE), `${JSON.stringify(pins, null, 2)}\n`);
  return { root, cli: join(root, 'bin', 'forkd.js'), remove: () => rmSync(root, { recursive: true, force: true }) };
}

/** Stand-ins for the compilers and bootstrappers: each records that it ran and fails. */
export function buildToolTraps(): { dir: string; log: string; ran(): string[]; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'forkd-traps-'));
  const log = join(dir, 'ran.log');
  mkdirSync(join(dir, 'bin'));
  // an ordinary user's run goes through them too
  chmodSync(dir, 0o755);
  writeFileSync(log, '', { mode: 0o666 });
  chmodSync(log, 0o666);
  for (const tool of ['gcc', 'cc', 'make', 'mmdebstrap', 'debootstrap']) {
    const trap = join(dir, 'bin', tool);
    writeFileSync(trap, `#!/bin/sh\necho "${tool} $*" >> '${log}'\nexit 1\n`, { mode: 0o755 });
  }
  return {
    dir: join(dir, 'bin'),
    log,
    ran: () => readFileSync(log, 'utf8').split('\n').filter(Boolean),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}
