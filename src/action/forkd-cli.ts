/**
 * The engine's CLI as child processes of the main step. Their output goes to the step's log; a
 * failure carries the command's last stderr lines (its error, hint and the guest console tail).
 * When the job is cancelled the runner signals only this process, so `stopAll` passes the signal
 * on: each command then stops its VMs itself before the runner's hard kill.
 */
import * as core from '@actions/core';
import { spawn, type ChildProcess } from 'node:child_process';
import { ForkdError } from '../errors.js';

const STDERR_TAIL_LINES = 30;
/** Progress lines ("kernel: compile 40% (12s)") are noise in an error. */
const PROGRESS_LINE = /^\S+: .*\(\d+s\)$/;

export class ForkdCli {
  private readonly running = new Set<ChildProcess>();

  constructor(readonly script: string) {}

  /** Runs `forkd ...args`; resolves with its stdout (echoed to the log unless `echo` is false), rejects with its stderr tail. */
  run(args: string[], { echo = true } = {}): Promise<string> {
    core.info(`[command]forkd ${args.join(' ')}`);
    const child = spawn(process.execPath, [this.script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.running.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
      if (echo) process.stdout.write(chunk);
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
      process.stderr.write(chunk);
    });
    return new Promise((resolve, reject) => {
      child.on('error', (err) => {
        this.running.delete(child);
        reject(err);
      });
      child.on('close', (code, signal) => {
        this.running.delete(child);
        if (code === 0) return resolve(stdout);
        const tail = stderr
          .trim()
          .split('\n')
          .filter((line) => !PROGRESS_LINE.test(line))
          .slice(-STDERR_TAIL_LINES);
        const how = signal ? `stopped by ${signal}` : `exit ${code}`;
        reject(new ForkdError('FORKD_ERR_INTERNAL', `forkd ${args.join(' ')} failed (${how}):\n${tail.join('\n')}`));
      });
    });
  }

  /** Sends SIGTERM to every running command and waits (bounded) until they have exited. */
  async stopAll(timeoutMs: number): Promise<void> {
    const exits = [...this.running].map(
      (child) =>
        new Promise<void>((resolve) => (child.exitCode !== null ? resolve() : child.once('close', () => resolve()))),
    );
    for (const child of this.running) child.kill('SIGTERM');
    await Promise.race([Promise.all(exits), new Promise((resolve) => setTimeout(resolve, timeoutMs))]);
  }
}
