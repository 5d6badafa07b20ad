import { appendFileSync } from 'node:fs';

export interface AuditEntry {
  time: string;
  method: string;
  path: string;
  status: number;
  latency_ms: number;
  outcome: 'ok' | 'rejected' | 'error';
}

/** One JSON line per request, accepted or not. Never records headers (so never the token). */
export class AuditLog {
  constructor(readonly file: string) {}

  write(entry: Omit<AuditEntry, 'time' | 'outcome'>): void {
    const outcome = entry.status < 400 ? 'ok' : entry.status < 500 ? 'rejected' : 'error';
    const line: AuditEntry = { time: new Date().toISOString(), ...entry, outcome };
    try {
      appendFileSync(this.file, `${JSON.stringify(line)}\n`, { mode: 0o600 });
    } catch {
      // an unwritable audit log must not take requests down; the daemon checked it at start
    }
  }
}
