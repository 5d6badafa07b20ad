import { execFile, spawn } from 'node:child_process';
import { accessSync, constants, existsSync, statSync } from 'node:fs';
import { delimiter, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { ForkdError } from '../errors.js';

const execFileAsync = promisify(execFile);

/** Full path of an executable on PATH, or undefined. */
export function which(name: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (name.includes('/')) return existsSync(name) ? name : undefined;
  for (const dir of (env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** Runs a command to completion; on failure throws a build error carrying the stderr tail. */
export async function runTool(file: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}) {
  try {
    const { stdout } = await execFileAsync(file, args, { ...options, maxBuffer: 64 * 1024 * 1024 });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; code?: number | string; message: string };
    const tail = (e.stderr ?? '').trim().split('\n').slice(-15).join('\n');
    throw new ForkdError(
      'FORKD_ERR_BUILD',
      `${file} ${args.join(' ')} failed (${e.code ?? 'error'})\n${tail || e.message}`,
      {
        cause: err,
      },
    );
  }
}

/** Runs a command, calling onLine for each stdout/stderr line; rejects with the output tail on failure. */
export function runToolStreaming(
  file: string,
  args: string[],
  options: {
    cwd?: string;
    env?: NodeJS.ProcessEnv;
    onLine?: (line: string) => void;
    /** An open file the command gets as fd 3. */
    fd3?: number;
  },
): Promise<void> {
  return new Promise((resolve, reject) => {
    const stdio = ['ignore', 'pipe', 'pipe', ...(options.fd3 === undefined ? [] : [options.fd3])] as const;
    const child = spawn(file, args, { cwd: options.cwd, env: options.env, stdio: [...stdio] });
    const tail: string[] = [];
    const onLine = (line: string) => {
      tail.push(line);
      if (tail.length > 30) tail.shift();
      options.onLine?.(line);
    };
    createInterface({ input: child.stdout! }).on('line', onLine);
    createInterface({ input: child.stderr! }).on('line', onLine);
    child.on('error', (err) =>
      reject(new ForkdError('FORKD_ERR_BUILD', `cannot run ${file}: ${err.message}`, { cause: err })),
    );
    child.on('close', (code, signal) => {
      if (code === 0) resolve();
      else
        reject(
          new ForkdError('FORKD_ERR_BUILD', `${file} ${args.join(' ')} failed (${signal ?? code})\n${tail.join('\n')}`),
        );
    });
  });
}

export function requireTool(name: string, aptPackage: string): string {
  const path = which(name);
  if (!path) {
    throw new ForkdError('FORKD_ERR_BUILD', `${name} is not installed`, {
      hint: `run the setup command (npm run setup) or: sudo apt-get install ${aptPackage}`,
    });
  }
  return path;
}

/** Checks a user-supplied path is a readable file; throws a clear error otherwise. */
export function requireReadableFile(path: string, what: string, hint: string): string {
  const full = resolve(path);
  try {
    accessSync(full, constants.R_OK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ForkdError(
      code === 'ENOENT' ? 'FORKD_ERR_NOT_FOUND' : 'FORKD_ERR_BAD_INPUT',
      `${what} ${full} ${code === 'ENOENT' ? 'does not exist' : `is not readable (${code})`}`,
      { hint },
    );
  }
  if (!statSync(full).isFile())
    throw new ForkdError('FORKD_ERR_BAD_INPUT', `${what} ${full} is not a regular file`, { hint });
  return full;
}
