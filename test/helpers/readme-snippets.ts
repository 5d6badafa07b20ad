import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** The repository root (this file is test/helpers/readme-snippets.ts). */
export const repoRoot = join(import.meta.dirname, '..', '..');

/**
 * What the line right before a README code fence says about the block: `snippet` blocks are run
 * or compared by a test under their name, `illustrative` ones are not, `null` means no marker.
 */
export type BlockMarker = { kind: 'snippet'; name: string } | { kind: 'illustrative' } | null;

export interface ReadmeBlock {
  /** 1-based line of the opening fence. */
  line: number;
  /** The fence's info string, such as `ts` or `sh`. */
  lang: string;
  /** The lines between the fences, each ending in a newline, as a file of them would hold. */
  body: string;
  marker: BlockMarker;
}

const SNIPPET = /^<!-- snippet: ([\w./-]+) -->$/;
const ILLUSTRATIVE = /^<!-- illustrative -->$/;
const FENCE = /^(\s*)(`{3,}|~{3,})(.*)$/;

function markerOf(line = ''): BlockMarker {
  const snippet = SNIPPET.exec(line.trim());
  if (snippet) return { kind: 'snippet', name: snippet[1]! };
  return ILLUSTRATIVE.test(line.trim()) ? { kind: 'illustrative' } : null;
}

/** Every fenced code block of a Markdown text (CommonMark fences), with the marker before it. */
export function markdownBlocks(text: string): ReadmeBlock[] {
  const lines = text.split('\n');
  const blocks: ReadmeBlock[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = FENCE.exec(lines[i]!);
    if (!open) continue;
    const [, indent, fence, info] = open;
    const close = new RegExp(`^\\s*${fence![0] === '`' ? '`' : '~'}{${fence!.length},}\\s*$`);
    let end = i + 1;
    while (end < lines.length && !close.test(lines[end]!)) end++;
    if (end === lines.length) throw new Error(`the code fence on line ${i + 1} is never closed`);
    const body = lines.slice(i + 1, end).map((l) => (indent ? l.replace(new RegExp(`^ {0,${indent.length}}`), '') : l));
    blocks.push({
      line: i + 1,
      lang: info!.trim().split(/\s+/)[0] ?? '',
      body: body.map((l) => `${l}\n`).join(''),
      marker: markerOf(lines[i - 1]),
    });
    i = end;
  }
  return blocks;
}

export function readmeText(): string {
  return readFileSync(join(repoRoot, 'README.md'), 'utf8');
}

export function readmeBlocks(): ReadmeBlock[] {
  return markdownBlocks(readmeText());
}

/**
 * The README's tested blocks, by snippet name (`consumer/vitest.config.ts`,
 * `examples/workflows/user-project.yml`, ...), each body as a file would hold it. The consumer
 * test writes the `consumer/*` ones into its scratch project, at the name without `consumer/`.
 */
export function readmeSnippets(): Map<string, string> {
  const snippets = new Map<string, string>();
  for (const block of readmeBlocks()) {
    if (block.marker?.kind !== 'snippet') continue;
    if (snippets.has(block.marker.name)) throw new Error(`README.md names the snippet ${block.marker.name} twice`);
    snippets.set(block.marker.name, block.body);
  }
  return snippets;
}
