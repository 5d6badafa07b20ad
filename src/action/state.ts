/**
 * Everything the post step needs from the main step. The only module that calls saveState: the
 * names of all cross-phase state are here.
 */
import { saveState } from '@actions/core';
import type { CacheEntry } from './cache.js';

/** Known as soon as the main step has chosen them: enough for post to find what main started. */
export interface JobEngine {
  /** FORKD_HOME for the job. */
  home: string;
  /** The engine's CLI bundle (the bundled one, or a release from the tool cache). */
  script: string;
}

export interface ActionState extends JobEngine {
  /** The detached `forkd serve`. */
  daemonPid: number;
  /** The daemon's log, printed in the post step. */
  daemonLog: string;
  endpoint: string;
  tag: string;
  accel: string;
  /** The cache entries to save at the end (none when caching is off or they were restored). */
  toSave: CacheEntry[];
}

const KEY = 'forkd';
const ENGINE = 'forkd-engine';
const POST = 'isPost';

/** Called first in the main step, so the post step knows it is the post step even if main failed early. */
export function markMainStarted(): void {
  saveState(POST, 'true');
}

export function isPost(): boolean {
  return process.env[`STATE_${POST}`] === 'true';
}

export function saveJobEngine(engine: JobEngine): void {
  saveState(ENGINE, JSON.stringify(engine));
}

export function saveActionState(state: ActionState): void {
  saveState(KEY, JSON.stringify(state));
}

function load<T>(key: string): T | undefined {
  const raw = process.env[`STATE_${key}`];
  if (!raw) return undefined;
  try {
    return JSON.parse(raw) as T;
  } catch {
    return undefined;
  }
}

/** The engine main chose, or undefined when main failed before it started anything. */
export const loadJobEngine = (): JobEngine | undefined => load<JobEngine>(ENGINE);

/** The daemon main left running, or undefined when main did not get that far. */
export const loadActionState = (): ActionState | undefined => load<ActionState>(KEY);
