/** Formatting for the bench scripts; the statistics come from the engine's own helper. */
import { quantile } from '../src/engine/stats.js';

export function median(values: number[]): number {
  return quantile(values, 0.5);
}

export function row(label: string, values: number[], unit = 'ms'): string {
  const fmt = (n: number) => n.toFixed(n < 10 ? 2 : 1);
  return `${label.padEnd(40)} median ${fmt(median(values))} ${unit}  p90 ${fmt(quantile(values, 0.9))} ${unit}  min ${fmt(Math.min(...values))}  max ${fmt(Math.max(...values))}  (n=${values.length})`;
}
