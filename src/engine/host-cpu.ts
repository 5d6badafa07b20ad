import { readFileSync } from 'node:fs';

let model: string | undefined;

/**
 * This host's CPU as /proc/cpuinfo names it (vendor and model). Under KVM a guest runs with
 * `-cpu host`, so a snapshot restores faithfully only on the CPU it was taken on.
 */
export function hostCpu(): string {
  if (model === undefined) {
    const info = readFileSync('/proc/cpuinfo', 'utf8');
    const field = (name: string) => new RegExp(`^${name}\\s*:\\s*(.*)$`, 'm').exec(info)?.[1]?.trim() ?? '';
    model = [field('vendor_id'), field('model name')].filter(Boolean).join(' ') || 'unknown';
  }
  return model;
}
