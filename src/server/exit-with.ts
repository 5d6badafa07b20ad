import { ForkdError } from '../errors.js';
import { processStartTime } from './owners.js';

/** How often the process is looked at: the daemon stops at most this late after it. */
const WATCH_MS = 250;

export interface ExitWith {
  readonly pid: number;
  /** Resolves once the process has ended. */
  readonly gone: Promise<void>;
  /** Stops watching (`gone` then never resolves). */
  stop(): void;
}

/**
 * Watches process `pid` (`forkd serve --exit-with PID`), pinned to the process running now by its
 * start time, so a later process reusing the pid is not taken for it. A pid that is not a running
 * process is refused.
 */
export function watchExitWith(pid: number): ExitWith {
  const start = Number.isInteger(pid) && pid > 0 ? processStartTime(pid) : undefined;
  if (start === undefined) {
    throw new ForkdError('FORKD_ERR_BAD_INPUT', `exit-with pid ${pid} is not a running process on this host`, {
      hint: "give the pid of a live process on the daemon's host whose end should stop the daemon, such as the test runner's own (os.getpid(), process.pid, $$)",
    });
  }
  let timer: NodeJS.Timeout | undefined;
  const gone = new Promise<void>((resolve) => {
    timer = setInterval(() => {
      if (processStartTime(pid) === start) return;
      clearInterval(timer);
      resolve();
    }, WATCH_MS).unref();
  });
  return { pid, gone, stop: () => clearInterval(timer) };
}
