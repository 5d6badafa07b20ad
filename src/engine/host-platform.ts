import { arch, platform } from 'node:os';
import { ForkdError } from '../errors.js';

export interface HostPlatform {
  platform: string;
  arch: string;
}

export const thisHost = (): HostPlatform => ({ platform: platform(), arch: arch() });

/** Why forkd cannot run on `host`, or undefined on x86_64 Linux (the only host it runs guests on). */
export function unsupportedHost(host: HostPlatform = thisHost()): string | undefined {
  if (host.platform === 'linux' && host.arch === 'x64') return undefined;
  return `forkd runs x86_64 Linux guests on x86_64 Linux hosts only; this host is ${host.platform}/${host.arch}`;
}

/** Refuses a host forkd cannot run on, before anything is installed or built there. */
export function assertSupportedHost(host: HostPlatform = thisHost(), hint = 'use an x86_64 Linux host'): void {
  const why = unsupportedHost(host);
  if (why) throw new ForkdError('FORKD_ERR_INCOMPATIBLE', why, { hint });
}
