import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { QmpClient } from '../../src/engine/vmm/qmp.js';

const dir = mkdtempSync(join(tmpdir(), 'forkd-qmp-'));
const servers: Server[] = [];
const connections: Socket[] = [];
afterAll(async () => {
  for (const socket of connections) socket.destroy();
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
  rmSync(dir, { recursive: true, force: true });
});

/**
 * A QMP server in a VM's run dir that greets, accepts qmp_capabilities, then answers every
 * command with `answer(command)`: the test decides what QEMU says.
 */
async function fakeQmp(vmId: string, answer: (command: { execute: string; id: number }) => string): Promise<string> {
  mkdirSync(join(dir, vmId));
  const path = join(dir, vmId, 'qmp.sock');
  const server = createServer((socket: Socket) => {
    connections.push(socket);
    socket.write('{"QMP": {"version": {"qemu": {"major": 9, "minor": 2, "micro": 0}}, "capabilities": []}}\r\n');
    let buffered = '';
    socket.on('data', (chunk) => {
      buffered += chunk.toString();
      for (let nl; (nl = buffered.indexOf('\n')) >= 0; buffered = buffered.slice(nl + 1)) {
        const command = JSON.parse(buffered.slice(0, nl)) as { execute: string; id: number };
        socket.write(
          command.execute === 'qmp_capabilities' ? `{"return": {}, "id": ${command.id}}\r\n` : answer(command),
        );
      }
    });
    socket.on('error', () => {});
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return path;
}

describe('QMP client', { timeout: 10_000 }, () => {
  test('answers commands, and a QMP error rejects only its own command', async () => {
    const path = await fakeQmp('vm-good', (c) =>
      c.execute === 'bad'
        ? `{"error": {"class": "GenericError", "desc": "no"}, "id": ${c.id}}\r\n`
        : `{"return": {"status": "running"}, "id": ${c.id}}\r\n`,
    );
    const qmp = await QmpClient.connect(path);
    try {
      await expect(qmp.execute('bad')).rejects.toThrow('QMP: no');
      await expect(qmp.execute('query-status')).resolves.toEqual({ status: 'running' });
    } finally {
      qmp.close();
    }
  });

  test('a malformed line fails the VM: commands in flight and later are rejected, the process lives', async () => {
    const path = await fakeQmp('vm-broken', (c) =>
      c.execute === 'query-status' ? `{"return": {"status": "running"}, "id": ${c.id}}\r\n` : '{"return": oops\r\n',
    );
    const qmp = await QmpClient.connect(path);
    try {
      const inFlight = qmp.execute('query-status');
      const broken = qmp.execute('stop');
      await expect(inFlight).resolves.toEqual({ status: 'running' });
      const failed = { code: 'FORKD_ERR_VM_STOPPED', message: expect.stringContaining('QMP sent a malformed line') };
      await expect(broken).rejects.toMatchObject(failed);
      await expect(qmp.execute('cont')).rejects.toMatchObject(failed);
    } finally {
      qmp.close();
    }
  });

  test('a line that is JSON but not an object fails the VM too', async () => {
    const path = await fakeQmp('vm-null', () => 'null\r\n');
    const qmp = await QmpClient.connect(path);
    try {
      await expect(qmp.execute('stop')).rejects.toMatchObject({
        message: expect.stringMatching(/malformed line.*: null$/),
      });
    } finally {
      qmp.close();
    }
  });
});
