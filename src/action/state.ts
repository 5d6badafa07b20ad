/**
 * Everything the post step needs from the main step. The only module that calls saveState: the
 * names of all cross-phase state are here.
 */
import { saveState } from '@actions/core';

export interface ActionState {
  /** The detached `forkd serve`. */
  daemonPid: number;
  /** FORKD_HOME for the job. */
  home: string;
  /** The daemon's log, printed in the post step. */
  daemonLog: string;
  endpoint: string;
  tag: string;
  accel: string;
  /** The images cache entry to save at the end (empty when caching is off or it was restored). */
  cacheKey: string;
}

const KEY = 'forkd';
const POST = 'isPost';

/** Called first in the main step, so the post step knows it is the post step even if main failed early. */
export function markMainStarted(): void {
  saveState(POST, 'true');
}

export function isPost(): boolean {
  return process.env[`STATE_${POST}`] === 'true';
}

export function saveActionState(state: ActionState): void {
  saveState(KEY, JSON.stringify(state));
}

/** The main step's state, or undefined when main failed before it started anything. */
export function loadActionState(): ActionState | undefined {
  const raw = process.env[`STATE_${KEY}`];
  if (!raw) return undefined;
  try {
    return JSON.parse(raw) as ActionState;
  } catch {
    return undefined;
  }
}
