import { ForkdError } from '../../errors.js';
import { runTool, which } from '../host-tools.js';

export interface QemuBinary {
  path: string;
  version: string;
}

const versions = new Map<string, string>();

export function parseQemuVersion(output: string): string | undefined {
  return /QEMU emulator version (\d+\.\d+(?:\.\d+)?)/.exec(output)?.[1];
}

/** The QEMU to run: `$FORKD_QEMU` or qemu-system-x86_64 on PATH. */
export async function findQemu(env: NodeJS.ProcessEnv = process.env): Promise<QemuBinary> {
  const wanted = env.FORKD_QEMU ?? 'qemu-system-x86_64';
  const path = which(wanted, env);
  if (!path) {
    throw new ForkdError('FORKD_ERR_QEMU_MISSING', `${wanted} not found${env.FORKD_QEMU ? '' : ' on PATH'}`, {
      hint: 'run the setup command (npm run setup) or: sudo apt-get install --no-install-recommends qemu-system-x86',
    });
  }
  let version = versions.get(path);
  if (!version) {
    version = parseQemuVersion(await runTool(path, ['--version'])) ?? 'unknown';
    versions.set(path, version);
  }
  return { path, version };
}
