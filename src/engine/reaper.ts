/**
 * Process-exit cleanup for everything this process starts (QEMU children, scratch dirs). Each
 * cleanup is synchronous and never throws, so it can run from the 'exit' event. The library never
 * takes over signals; a program that wants Ctrl-C to clean up calls exitOnSignals() (the CLI does).
 */
const cleanups = new Set<() => void>();
let installed = false;

function runAll(): void {
  for (const cleanup of [...cleanups]) {
    try {
      cleanup();
    } catch {
      // cleanup must not stop the next cleanup
    }
  }
  cleanups.clear();
}

/** Registers a cleanup; returns a function that unregisters it (call it once cleaned up normally). */
export function onProcessExit(cleanup: () => void): () => void {
  if (!installed) {
    installed = true;
    process.on('exit', runAll);
  }
  cleanups.add(cleanup);
  return () => cleanups.delete(cleanup);
}

const SIGNAL_EXIT_CODES = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129 } as const;

/** Makes SIGINT/SIGTERM/SIGHUP exit the process (128 + signal), running the cleanups on the way out. */
export function exitOnSignals(): void {
  for (const [signal, code] of Object.entries(SIGNAL_EXIT_CODES)) process.once(signal, () => process.exit(code));
}
