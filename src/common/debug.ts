import { format } from 'node:util';

/** What FORKD_DEBUG can turn on, one section per part of the VM's life. */
export type DebugSection = 'qmp' | 'agent' | 'pool' | 'fork' | 'vm';

/** Writes one line for a VM (its run dir name, vm-…) when its section is on; printf-like formatting. */
export interface DebugLog {
  (vmId: string, message: string, ...args: unknown[]): void;
  readonly enabled: boolean;
}

/**
 * Which sections a FORKD_DEBUG value turns on, as NODE_DEBUG does for util.debuglog: names
 * separated by commas (or spaces), case-insensitive, `*` as a wildcard (`*` or `all`: every one).
 */
export function debugSections(value: string | undefined): (section: string) => boolean {
  const patterns = (value ?? '')
    .split(/[\s,]+/)
    .filter(Boolean)
    .map((name) => (name.toLowerCase() === 'all' ? '*' : name));
  if (patterns.length === 0) return () => false;
  const escaped = patterns.map((name) => name.replace(/[|\\{}()[\]^$+?.]/g, '\\$&').replaceAll('*', '.*'));
  const matcher = new RegExp(`^(?:${escaped.join('|')})$`, 'i');
  return (section) => matcher.test(section);
}

let sectionsOn: ((section: string) => boolean) | undefined;

/**
 * A logger for one section, off unless FORKD_DEBUG names it (read on first use, like
 * util.debuglog). Lines go to stderr: time, section, pid, the VM's id, the message.
 */
export function debuglog(section: DebugSection): DebugLog {
  let on: boolean | undefined;
  const enabled = () => (on ??= (sectionsOn ??= debugSections(process.env.FORKD_DEBUG))(section));
  const log = (vmId: string, message: string, ...args: unknown[]): void => {
    if (!enabled()) return;
    process.stderr.write(
      `${new Date().toISOString()} forkd:${section} ${process.pid} ${vmId}: ${format(message, ...args)}\n`,
    );
  };
  return Object.defineProperty(log, 'enabled', { get: enabled }) as DebugLog;
}
