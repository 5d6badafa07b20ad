/** Small statistics helpers shared by the bench scripts. */
export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export function row(label: string, values: number[], unit = 'ms'): string {
  const fmt = (n: number) => n.toFixed(n < 10 ? 2 : 1);
  return `${label.padEnd(40)} median ${fmt(median(values))} ${unit}  p90 ${fmt(percentile(values, 90))} ${unit}  min ${fmt(Math.min(...values))}  max ${fmt(Math.max(...values))}  (n=${values.length})`;
}
