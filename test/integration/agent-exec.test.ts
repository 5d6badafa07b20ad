import { describe, expect, test } from 'vitest';
import { bootForFile } from '../helpers/isolated-home.js';

const { vms } = bootForFile();
const vm = () => vms[0]!;

describe('exec', () => {
  test('returns exact stdout, stderr and exit code', async () => {
    const r = await vm().exec(['sh', '-c', 'printf "out\\nline2"; printf "err!" >&2; exit 0']);
    expect(r).toMatchObject({ exitCode: 0, signal: null, timedOut: false, stdoutTruncated: false });
    expect(r.stdout.toString()).toBe('out\nline2');
    expect(r.stderr.toString()).toBe('err!');
  });

  test.each([1, 3, 42, 255])('passes exit code %i through', async (code) => {
    const r = await vm().exec(`exit ${code}`);
    expect(r.exitCode).toBe(code);
    expect(r.signal).toBeNull();
  });

  test('reports a signal-killed process as 128+n with the signal name', async () => {
    const r = await vm().exec(['sh', '-c', 'kill -9 $$']);
    expect(r.exitCode).toBe(137);
    expect(r.signal).toBe('SIGKILL');
    const term = await vm().exec(['sh', '-c', 'kill -TERM $$']);
    expect(term.signal).toBe('SIGTERM');
    expect(term.exitCode).toBe(143);
  });

  test('kills a command that outlives its timeout, with its process group', async () => {
    const started = Date.now();
    const r = await vm().exec(['sh', '-c', 'sleep 60 & sleep 60; echo never'], { timeoutMs: 500 });
    expect(r.timedOut).toBe(true);
    expect(r.signal).toBe('SIGKILL');
    expect(r.stdout.toString()).toBe('');
    expect(Date.now() - started).toBeLessThan(10_000);
    const ps = await vm().exec(['sh', '-c', 'ps | grep -c "[s]leep 60" || true']);
    expect(ps.stdout.toString().trim()).toBe('0');
  });

  test('output is binary-safe', async () => {
    const bytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    await vm().writeFile('/tmp/all-bytes', bytes);
    const r = await vm().exec(['cat', '/tmp/all-bytes']);
    expect(r.stdout.equals(bytes)).toBe(true);
    const err = await vm().exec(['sh', '-c', 'cat /tmp/all-bytes >&2']);
    expect(err.stderr.equals(bytes)).toBe(true);
  });

  test('feeds stdin, env and cwd', async () => {
    const input = Buffer.concat([Buffer.from('héllo\0'), Buffer.alloc(200_000, 7)]);
    const r = await vm().exec(['sh', '-c', 'cat | md5sum; echo "$GREETING"; pwd'], {
      stdin: input,
      env: { GREETING: 'hi there' },
      cwd: '/etc',
    });
    const { createHash } = await import('node:crypto');
    const md5 = createHash('md5').update(input).digest('hex');
    expect(r.stdout.toString()).toBe(`${md5}  -\nhi there\n/etc\n`);
  });

  test('caps output and says it truncated', async () => {
    const r = await vm().exec(['sh', '-c', 'head -c 100000 /dev/zero'], { maxOutputBytes: 1000 });
    expect(r.stdout.length).toBe(1000);
    expect(r.stdoutTruncated).toBe(true);
    expect(r.exitCode).toBe(0);
  });

  test('a missing command exits 127 with a message on stderr', async () => {
    const r = await vm().exec(['no-such-command', '--flag']);
    expect(r.exitCode).toBe(127);
    expect(r.stderr.toString()).toMatch(/no-such-command: No such file or directory/);
  });

  test('a bad cwd is an error reply, not a crash', async () => {
    await expect(vm().exec(['true'], { cwd: '/does/not/exist' })).rejects.toMatchObject({
      code: 'FORKD_ERR_AGENT',
      agentCode: 'E_NOENT',
    });
    expect((await vm().exec('true')).exitCode).toBe(0);
  });

  test('serves several requests at once: a fast one overtakes a slow one', async () => {
    const order: string[] = [];
    const slow = vm()
      .exec(['sh', '-c', 'sleep 1; echo slow'])
      .then((r) => order.push(r.stdout.toString().trim()));
    const fast = Promise.all(
      Array.from({ length: 8 }, (_, i) =>
        vm()
          .exec(['echo', `fast${i}`])
          .then((r) => order.push(r.stdout.toString().trim())),
      ),
    );
    await Promise.all([slow, fast]);
    expect(order.at(-1)).toBe('slow');
    expect(order.slice(0, 8).sort()).toEqual(Array.from({ length: 8 }, (_, i) => `fast${i}`).sort());
  });

  test('the guest runs our kernel with busybox userland', async () => {
    const r = await vm().exec(['uname', '-srm']);
    expect(r.stdout.toString()).toMatch(/^Linux \d+\.\d+\.\d+ x86_64\n$/); // the newest linux-source the host has
  });
});
