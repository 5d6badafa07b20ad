import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ForkdError } from '../../errors.js';
import { runTool } from '../host-tools.js';
import type { StatePaths } from '../../common/state-dir.js';
import { ensureArtifact, hashInputs, type Artifact, type BuildOptions } from './cache.js';
import { writeCpio, type CpioEntry } from './cpio.js';

const LAYOUT_VERSION = 'initramfs-v1';
const DIRS = [
  'bin',
  'sbin',
  'usr',
  'usr/bin',
  'usr/sbin',
  'dev',
  'proc',
  'sys',
  'tmp',
  'run',
  'root',
  'etc',
  'var',
  'mnt',
];

/** True when an ELF file has no PT_INTERP program header (no dynamic loader needed). */
export function isStaticElf(bytes: Buffer): boolean {
  if (bytes.length < 64 || bytes.readUInt32BE(0) !== 0x7f454c46 || bytes[4] !== 2) return false;
  const phoff = Number(bytes.readBigUInt64LE(0x20));
  const phentsize = bytes.readUInt16LE(0x36);
  const phnum = bytes.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) {
    if (bytes.readUInt32LE(phoff + i * phentsize) === 3 /* PT_INTERP */) return false;
  }
  return true;
}

export function busyboxPath(env: NodeJS.ProcessEnv = process.env): string {
  return env.FORKD_BUSYBOX ?? '/bin/busybox';
}

async function readStaticBusybox(path: string): Promise<Buffer> {
  const bytes = await readFile(path).catch(() => {
    throw new ForkdError('FORKD_ERR_BUILD', `busybox not found at ${path}`, {
      hint: 'run the setup command (npm run setup) or: sudo apt-get install busybox-static',
    });
  });
  if (!isStaticElf(bytes)) {
    throw new ForkdError('FORKD_ERR_BUILD', `${path} is dynamically linked; the guest has no libc`, {
      hint: 'install the static build: sudo apt-get install busybox-static (or set FORKD_BUSYBOX)',
    });
  }
  return bytes;
}

/** The base image: an uncompressed initramfs with our agent as /init and busybox for a shell. */
export async function ensureInitramfs(
  paths: StatePaths,
  agentBinary: string,
  options: BuildOptions = {},
): Promise<Artifact & { initrd: string }> {
  const busybox = busyboxPath();
  const [agent, bb] = await Promise.all([readFile(agentBinary), readStaticBusybox(busybox)]);
  const key = hashInputs([LAYOUT_VERSION, agent, bb]);
  const artifact = await ensureArtifact(
    paths,
    'initramfs',
    key,
    async (staging) => {
      options.onProgress?.({ task: 'initramfs', phase: 'build' });
      const applets = (await runTool(busybox, ['--list-full'])).split('\n').filter(Boolean);
      const entries: CpioEntry[] = [
        ...DIRS.map((path): CpioEntry => ({ type: 'dir', path, mode: path === 'tmp' ? 0o1777 : 0o755 })),
        { type: 'chardev', path: 'dev/console', major: 5, minor: 1 },
        { type: 'chardev', path: 'dev/null', major: 1, minor: 3, mode: 0o666 },
        { type: 'file', path: 'init', data: agent, mode: 0o755 },
        { type: 'file', path: 'bin/busybox', data: bb, mode: 0o755 },
        { type: 'file', path: 'etc/passwd', data: Buffer.from('root:x:0:0:root:/root:/bin/sh\n') },
        { type: 'file', path: 'etc/group', data: Buffer.from('root:x:0:\n') },
        { type: 'file', path: 'etc/hosts', data: Buffer.from('127.0.0.1 localhost\n::1 localhost\n') },
        ...applets
          .filter((applet) => applet !== 'bin/busybox' && !DIRS.includes(applet))
          .map((applet): CpioEntry => ({ type: 'symlink', path: applet, target: '/bin/busybox' })),
      ];
      await writeFile(join(staging, 'initramfs.cpio'), writeCpio(entries));
    },
    options,
  );
  return { ...artifact, initrd: join(artifact.dir, 'initramfs.cpio') };
}
