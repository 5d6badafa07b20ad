import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { ForkdError } from '../../errors.js';
import { which } from '../host-tools.js';

/** What the command line may use beyond what every supported QEMU (6.2 to 10.x) has. */
export interface QemuFeatures {
  /** microvm's `x-option-roms=off`: no option ROM scan at boot. */
  microvmOptionRoms: boolean;
  /** `-accel tcg,tb-size=`: without it every TCG VM reserves QEMU's default 1 GiB translation cache. */
  tcgTbSize: boolean;
}

export interface QemuBinary {
  path: string;
  version: string;
  features: QemuFeatures;
}

/** What forkd cannot do without: microvm without ACPI on a file-backed RAM, saved without that RAM. */
const REQUIRED = {
  'microvm machine property': ['acpi', 'memory-backend'],
  'memory-backend-file property': ['mem-path', 'share'],
  'migration capability': ['x-ignore-shared'],
} as const;

const QMP_PROBE_ARGS = ['-machine', 'none', '-nodefaults', '-display', 'none', '-qmp', 'stdio'];
// microvm is listed with `-machine microvm,help`: QEMU 7.2 aborts when QMP lists a microvm's properties.
const QMP_PROBE = [
  { execute: 'qmp_capabilities' },
  { execute: 'qom-list-properties', arguments: { typename: 'tcg-accel' }, id: 'tcg' },
  { execute: 'qom-list-properties', arguments: { typename: 'memory-backend-file' }, id: 'memfile' },
  { execute: 'query-migrate-capabilities', id: 'migration' },
  { execute: 'quit' },
]
  .map((command) => JSON.stringify(command))
  .join('\n');
const PROBE_TIMEOUT_MS = 15_000;

export interface QemuProbe {
  version: string;
  microvm: Set<string>;
  tcg: Set<string>;
  memfile: Set<string>;
  migration: Set<string>;
}

/** Property names from `-machine <type>,help` (`  name=<type>  - description`). */
export function parseHelpProperties(output: string): Set<string> {
  return new Set([...output.matchAll(/^\s+([\w-]+)=</gm)].map((m) => m[1]!));
}

/** The version (QMP greeting) and the answers of QMP_PROBE, from QEMU's QMP output on stdout. */
export function parseQmpProbe(output: string): Omit<QemuProbe, 'microvm'> {
  const answers = new Map<string, unknown>();
  let version = 'unknown';
  for (const line of output.split('\n')) {
    if (!line.trim()) continue;
    const message = JSON.parse(line) as {
      QMP?: { version: { qemu: { major: number; minor: number; micro: number } } };
      id?: string;
      return?: unknown;
    };
    if (message.QMP) {
      const v = message.QMP.version.qemu;
      version = `${v.major}.${v.minor}.${v.micro}`;
    }
    if (message.id) answers.set(message.id, message.return);
  }
  const names = (id: string, key: 'name' | 'capability') =>
    new Set(((answers.get(id) as Array<Record<string, string>> | undefined) ?? []).map((entry) => entry[key]!));
  return {
    version,
    tcg: names('tcg', 'name'),
    memfile: names('memfile', 'name'),
    migration: names('migration', 'capability'),
  };
}

/** The features of a probed QEMU; one that lacks something forkd needs is refused, naming it. */
export function qemuFeatures(path: string, probe: QemuProbe): QemuFeatures {
  const have = {
    'microvm machine property': probe.microvm,
    'memory-backend-file property': probe.memfile,
    'migration capability': probe.migration,
  };
  const missing = Object.entries(REQUIRED).flatMap(([what, names]) =>
    names.filter((name) => !have[what as keyof typeof REQUIRED].has(name)).map((name) => `${what} ${name}`),
  );
  if (missing.length) {
    throw new ForkdError(
      'FORKD_ERR_QEMU_MISSING',
      `QEMU ${probe.version} at ${path} lacks what forkd needs: ${missing.join(', ')}`,
      { hint: "forkd needs qemu-system-x86 6.2 or newer with the microvm machine (the distribution's package has it)" },
    );
  }
  return { microvmOptionRoms: probe.microvm.has('x-option-roms'), tcgTbSize: probe.tcg.has('tb-size') };
}

const execFileAsync = promisify(execFile);

async function probeQemu(path: string): Promise<QemuProbe> {
  const run = (args: string[], input?: string) => {
    const pending = execFileAsync(path, args, { timeout: PROBE_TIMEOUT_MS });
    pending.child.stdin?.end(input);
    return pending.then(
      ({ stdout }) => stdout,
      (err: { stderr?: string; message: string }) => {
        throw new ForkdError(
          'FORKD_ERR_QEMU_MISSING',
          `${path} ${args.join(' ')} failed: ${err.stderr || err.message}`,
          {
            hint: 'sudo apt-get install --no-install-recommends qemu-system-x86',
          },
        );
      },
    );
  };
  const [machineHelp, qmp] = await Promise.all([
    run(['-machine', 'microvm,help']),
    run(QMP_PROBE_ARGS, `${QMP_PROBE}\n`),
  ]);
  return { ...parseQmpProbe(qmp), microvm: parseHelpProperties(machineHelp) };
}

/** Per QEMU path: its version and features, probed once per process. */
const probed = new Map<string, Promise<Omit<QemuBinary, 'path'>>>();

/** The QEMU to run: `$FORKD_QEMU` or qemu-system-x86_64 on PATH, with its version and features. */
export async function findQemu(env: NodeJS.ProcessEnv = process.env): Promise<QemuBinary> {
  const wanted = env.FORKD_QEMU ?? 'qemu-system-x86_64';
  const path = which(wanted, env);
  if (!path) {
    throw new ForkdError('FORKD_ERR_QEMU_MISSING', `${wanted} not found${env.FORKD_QEMU ? '' : ' on PATH'}`, {
      hint: 'run the setup command (npm run setup) or: sudo apt-get install --no-install-recommends qemu-system-x86',
    });
  }
  let facts = probed.get(path);
  if (!facts) {
    facts = probeQemu(path).then((probe) => ({ version: probe.version, features: qemuFeatures(path, probe) }));
    probed.set(path, facts);
    facts.catch(() => probed.delete(path)); // a QEMU installed later is found by the next call
  }
  return { path, ...(await facts) };
}
