/**
 * `forkd unpack` and `forkd pull` look at their input before anything else: on a brand-new state
 * dir (no images, no accelerator verdict) bad input is refused at once, building and writing nothing.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, test } from 'vitest';
import { openEngine } from '../../src/hub/hub.js';
import { StatePaths } from '../../src/common/state-dir.js';

const cli = join(import.meta.dirname, '../../bin/forkd.js');
const scratch = mkdtempSync(join(tmpdir(), 'forkd-unpack-input-'));
/**
 * The CLI's wall clock, node start included: a kernel build takes minutes, a refusal about 1 s (3 s
 * seen with two QEMU test files beside it on 2 cores). The empty state dir is what proves nothing ran.
 */
const CLI_BOUND_MS = 10_000;
/** The refusal itself, in process. */
const ENGINE_BOUND_MS = 1000;
const timings: string[] = [];

let home = '';
beforeEach(() => {
  home = mkdtempSync(join(scratch, 'home-'));
});
afterEach(() => rmSync(home, { recursive: true, force: true }));
afterAll(() => {
  rmSync(scratch, { recursive: true, force: true });
  process.stderr.write(`[unpack-input] refusal wall clock: ${timings.join(', ')}\n`);
});

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs the CLI on the fresh home (as `user` when given), timing it. */
function forkd(args: string[], env: Record<string, string> = {}, user?: number): Promise<Run> {
  const started = performance.now();
  const [cmd, argv] =
    user === undefined
      ? [process.execPath, [cli, ...args]]
      : ['setpriv', [`--reuid=${user}`, `--regid=${user}`, '--clear-groups', process.execPath, cli, ...args]];
  const childEnv: NodeJS.ProcessEnv = { ...process.env, FORKD_HOME: home, ...env };
  delete childEnv.FORKD_ACCEL; // the engine decides, as on a fresh host
  return new Promise((resolve) => {
    execFile(cmd, argv, { env: childEnv, encoding: 'utf8', timeout: 60_000 }, (err, stdout, stderr) => {
      const ms = Math.round(performance.now() - started);
      timings.push(`${args.slice(0, 2).join(' ')}${args.includes('--json') ? ' --json' : ''}: ${ms} ms`);
      resolve({ status: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr, ms });
    });
  });
}

/** A refusal: exit 1, the message and hint on stderr (or the JSON error on stdout), in time, nothing written. */
async function refusal(args: string[], code: string, message: RegExp, env: Record<string, string> = {}, user?: number) {
  const plain = await forkd(args, env, user);
  expect(plain.stderr).toMatch(new RegExp(`^forkd: ${message.source}.*\\n {2}hint: \\S`, 's'));
  expect(plain.status).toBe(1);
  expect(plain.stdout).toBe('');
  expect(plain.ms).toBeLessThan(CLI_BOUND_MS);
  const json = await forkd([...args, '--json'], env, user);
  expect(json.status).toBe(1);
  expect(JSON.parse(json.stdout)).toEqual({ code, error: expect.stringMatching(message), hint: expect.any(String) });
  expect(json.ms).toBeLessThan(CLI_BOUND_MS);
  expect(readdirSync(home)).toEqual([]); // no images/, no snapshots/, no tmp/, no accel.json
}

describe('forkd unpack on a fresh state dir refuses bad input at once', () => {
  test('a file that does not exist', async () => {
    await refusal(
      ['unpack', '/nonexistent/file.forkd.tar.zst'],
      'FORKD_ERR_NOT_FOUND',
      /no pack at \/nonexistent\/file\.forkd\.tar\.zst/,
    );
  });

  test('a file of random garbage', async () => {
    const garbage = join(scratch, 'garbage.forkd.tar.zst');
    writeFileSync(garbage, randomBytes(1024 * 1024));
    await refusal(['unpack', garbage], 'FORKD_ERR_CORRUPT', new RegExp(`${garbage} is not a forkd pack \\(`));
  });

  test('a directory', async () => {
    await refusal(['unpack', scratch], 'FORKD_ERR_BAD_INPUT', new RegExp(`${scratch} is a directory, not a pack`));
  });

  test('a file the user cannot read', async () => {
    const locked = join(scratch, 'locked.forkd.tar.zst');
    writeFileSync(locked, randomBytes(1024));
    chmodSync(locked, 0o000);
    chmodSync(scratch, 0o755); // the file itself is what cannot be read
    chmodSync(home, 0o777); // so an ordinary user may run forkd on this home (it must write nothing)
    // root reads any file: run the CLI as nobody then
    const user = process.getuid?.() === 0 ? 65534 : undefined;
    await refusal(
      ['unpack', locked],
      'FORKD_ERR_BAD_INPUT',
      /cannot read the pack .*locked\.forkd\.tar\.zst \(EACCES\)/,
      {},
      user,
    );
  });
});

describe('forkd pull on a fresh state dir refuses bad refs at once', () => {
  test('a malformed reference', async () => {
    await refusal(['pull', '../etc'], 'FORKD_ERR_BAD_INPUT', /"\.\.\/etc" is not a pack reference/);
  });

  test('a name with no Hub configured', async () => {
    await refusal(['pull', 'acme/postgres'], 'FORKD_ERR_BAD_INPUT', /no Hub is configured/, { FORKD_HUB_URL: '' });
  });

  test('a Hub that is not there', async () => {
    await refusal(
      ['pull', 'acme/postgres'],
      'FORKD_ERR_UNREACHABLE',
      /cannot reach http:\/\/127\.0\.0\.1:1\/registry\.json/,
      {
        FORKD_HUB_URL: 'http://127.0.0.1:1',
      },
    );
  });

  test('a URL that serves garbage: refused after the download, which is removed; nothing installed', async () => {
    const body = randomBytes(256 * 1024);
    const server = createServer((_req, res) => res.writeHead(200, { 'content-length': body.length }).end(body));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/x.forkd.tar.zst`;
      const r = await forkd(['pull', url, '--json']);
      expect(r.status).toBe(1);
      expect(JSON.parse(r.stdout)).toMatchObject({
        code: 'FORKD_ERR_CORRUPT',
        error: expect.stringContaining('is not a forkd pack'),
      });
      expect(r.ms).toBeLessThan(CLI_BOUND_MS);
      expect(readdirSync(home)).toEqual(['hub']);
      expect(readdirSync(join(home, 'hub', 'downloads'))).toEqual([]);
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe('the engine refuses in well under a second', () => {
  test('Hub.unpack of a missing file and of garbage, and Hub.pull of a bad ref, on a fresh state dir', async () => {
    const { hub } = openEngine(new StatePaths(join(home, 'state')));
    const garbage = join(scratch, 'garbage-2.forkd.tar.zst');
    writeFileSync(garbage, randomBytes(1024 * 1024));
    for (const [what, attempt, code] of [
      ['missing', () => hub.unpack(join(scratch, 'missing.forkd.tar.zst')), 'FORKD_ERR_NOT_FOUND'],
      ['garbage', () => hub.unpack(garbage), 'FORKD_ERR_CORRUPT'],
      ['bad ref', () => hub.pull('not a ref'), 'FORKD_ERR_BAD_INPUT'],
    ] as const) {
      const started = performance.now();
      await expect(attempt(), what).rejects.toMatchObject({ code });
      const ms = performance.now() - started;
      timings.push(`Engine ${what}: ${ms.toFixed(1)} ms`);
      expect(ms, what).toBeLessThan(ENGINE_BOUND_MS);
    }
    expect(existsSync(join(home, 'state'))).toBe(false);
  });
});
