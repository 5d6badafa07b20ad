import { test, expect } from 'forkd-action/playwright';
import { SEED, addTodo, expectTodos } from './todo-list.js';

// Serial mode runs each group's tests in one worker, in order, so the second test of a group
// runs after the first one's change.

test.describe('one app per worker', () => {
  test.use({ forkdScope: 'worker' });
  test.describe.configure({ mode: 'serial' });
  let firstTestURL: string | undefined;

  test('the first test adds a todo', async ({ page, app }) => {
    firstTestURL = app.url;
    await page.goto('/');
    await addTodo(page, 'Left for the next test');

    await expectTodos(page, [...SEED, { title: 'Left for the next test', done: false }]);
  });

  test('the next test has the same app and sees that todo', async ({ page, app }) => {
    expect(app.url).toBe(firstTestURL);
    await page.goto('/');

    await expectTodos(page, [...SEED, { title: 'Left for the next test', done: false }]);
  });
});

test.describe('one app per test', () => {
  test.use({ forkdScope: 'test' });
  test.describe.configure({ mode: 'serial' });

  test('the first test adds a todo', async ({ page }) => {
    await page.goto('/');
    await addTodo(page, 'Gone with this test');

    await expectTodos(page, [...SEED, { title: 'Gone with this test', done: false }]);
  });

  test('the next test has a new app with only the seed', async ({ page }) => {
    await page.goto('/');

    await expectTodos(page, SEED);
  });
});
