/**
 * Process-exit cleanup for everything this process starts (QEMU children, scratch dirs). Each
 * cleanup is synchronous and never throws, so it can run from 'exit' and signal handlers.
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

function install(): void {
  if (installed) return;
  installed = true;
  process.on('exit', runAll);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(signal, () => {
      runAll();
      // Only exit when nobody else handles the signal (a test runner or daemon may).
      if (process.listenerCount(signal) === 1)
        process.exit(128 + (signal === 'SIGINT' ? 2 : signal === 'SIGTERM' ? 15 : 1));
    });
  }
}

/** Registers a cleanup; returns a function that unregisters it (call it once cleaned up normally). */
export function onProcessExit(cleanup: () => void): () => void {
  install();
  cleanups.add(cleanup);
  return () => cleanups.delete(cleanup);
}
