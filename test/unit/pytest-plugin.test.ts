import { expect, test } from 'vitest';
import { requireVenv, runPytest, tally } from '../helpers/python.js';

test('the pytest plugin: options, client, contract against docs/openapi.json, -n auto sizing', async () => {
  requireVenv();
  const { status, output } = await runPytest(['-q', 'runner-plugins/pytest/tests']);
  expect(status, output).toBe(0);
  const counts = tally(output);
  expect(counts.passed, output).toBeGreaterThan(75);
  expect(counts.failed ?? 0, output).toBe(0);
}, 120_000);
