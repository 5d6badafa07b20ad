import { appendFileSync } from 'node:fs';

export interface AuditEntry {
  time: string;
  method: string;
  path: string;
  status: number;
  latency_ms: number;
  outcome: 'ok' | 'rejected' | 'error';
}

/** Something the daemon did on its own, not asked by a request: a reap, an adoption, its stop. */
export interface AuditEvent {
  event: 'reap' | 'reap-failed' | 'adopt' | 'adopt-failed' | 'stop';
  [field: string]: unknown;
}

/** One JSON line per request, accepted or not, and per event. Never records headers (so never the token). */
export class AuditLog {
  constructor(readonly file: string) {}

  write(entry: Omit<AuditEntry, 'time' | 'outcome'>): void {
    const outcome = entry.status < 400 ? 'ok' : entry.status < 500 ? 'rejected' : 'error';
    this.append({ time: new Date().toISOString(), ...entry, outcome });
  }

  event(event: AuditEvent): void {
    this.append({ time: new Date().toISOString(), ...event });
  }

  private append(line: object): void {
    try {
      appendFileSync(this.file, `${JSON.stringify(line)}\n`, { mode: 0o600 });
    } catch {
      // an unwritable audit log must not take requests down; the daemon checked it at start
    }
  }
}
