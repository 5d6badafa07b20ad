import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { requireTool, runTool } from '../host-tools.js';
import { packageRoot } from '../../common/package-root.js';
import type { StatePaths } from '../../common/state-dir.js';
import { ensureArtifact, hashInputs, type Artifact, type BuildOptions } from './cache.js';

const SOURCES = ['agent.c', 'json.c', 'json.h', 'Makefile'];

/** The static guest init + agent from native/agent, compiled with the host's gcc. */
export async function ensureAgentBinary(
  paths: StatePaths,
  options: BuildOptions = {},
): Promise<Artifact & { binary: string }> {
  const srcDir = join(packageRoot, 'native', 'agent');
  const gcc = requireTool('gcc', 'gcc libc6-dev');
  const make = requireTool('make', 'make');
  const compiler = (await runTool(gcc, ['--version'])).split('\n')[0] ?? '';
  const sources = await Promise.all(SOURCES.map((name) => readFile(join(srcDir, name))));
  const key = hashInputs(['agent-v1', compiler, ...sources]);
  const artifact = await ensureArtifact(
    paths,
    'agent',
    key,
    async (staging) => {
      await runTool(make, ['-s', '-C', srcDir, `OUT=${join(staging, 'forkd-agent')}`]);
    },
    options,
  );
  return { ...artifact, binary: join(artifact.dir, 'forkd-agent') };
}
