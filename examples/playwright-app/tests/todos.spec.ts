import { test, expect } from 'forkd-action/playwright';
import { SEED, addTodo, expectTodos, todoItem } from './todo-list.js';

// Every test gets its own app and database, forked from one snapshot: each starts from exactly
// the seed and sees only its own change, although two workers run these tests at the same time.

test.beforeEach(async ({ page }) => {
  await page.goto('/');
});

test('starts from the seed data', async ({ page }) => {
  await expectTodos(page, SEED);
});

test('adds a todo', async ({ page }) => {
  await page.getByLabel('New todo').fill('Water the plants');
  await page.getByRole('button', { name: 'Add', exact: true }).click();

  await expectTodos(page, [...SEED, { title: 'Water the plants', done: false }]);
  await expect(page.getByLabel('New todo')).toBeEmpty();
});

test('adds two todos, in order, with Enter', async ({ page }) => {
  for (const title of ['Pay the rent', 'Call grandma']) {
    await page.getByLabel('New todo').fill(title);
    await page.getByLabel('New todo').press('Enter');
    await expect(page.getByTestId('todo-title').last()).toHaveText(title);
  }

  await expectTodos(page, [...SEED, { title: 'Pay the rent', done: false }, { title: 'Call grandma', done: false }]);
});

test('renames a todo', async ({ page }) => {
  await todoItem(page, 'Buy milk').getByRole('link', { name: 'Edit' }).click();
  await expect(page.getByRole('heading', { name: 'Edit todo' })).toBeVisible();
  await expect(page.getByLabel('Title')).toHaveValue('Buy milk');
  await page.getByLabel('Title').fill('Buy oat milk');
  await page.getByRole('button', { name: 'Save' }).click();

  await expect(page).toHaveURL('/');
  await expectTodos(
    page,
    SEED.map((todo) => (todo.title === 'Buy milk' ? { ...todo, title: 'Buy oat milk' } : todo)),
  );
});

test('leaves a todo as it was when the edit is cancelled', async ({ page }) => {
  await todoItem(page, 'Read a book').getByRole('link', { name: 'Edit' }).click();
  await page.getByLabel('Title').fill('Burn the book');
  await page.getByRole('link', { name: 'Cancel' }).click();

  await expectTodos(page, SEED);
});

test('marks an open todo done', async ({ page }) => {
  const done = todoItem(page, 'Buy milk').getByRole('checkbox', { name: 'Done' });
  await expect(done).not.toBeChecked();
  await done.click();

  await expect(done).toBeChecked();
  await expectTodos(
    page,
    SEED.map((todo) => (todo.title === 'Buy milk' ? { ...todo, done: true } : todo)),
  );
});

test('reopens a done todo', async ({ page }) => {
  const done = todoItem(page, 'Walk the dog').getByRole('checkbox', { name: 'Done' });
  await expect(done).toBeChecked();
  await done.click();

  await expect(done).not.toBeChecked();
  await expectTodos(
    page,
    SEED.map((todo) => ({ ...todo, done: false })),
  );
});

test('deletes a todo', async ({ page }) => {
  await todoItem(page, 'Walk the dog').getByRole('button', { name: 'Delete' }).click();

  await expectTodos(
    page,
    SEED.filter((todo) => todo.title !== 'Walk the dog'),
  );
});

test('refuses an empty title and changes nothing', async ({ page }) => {
  // the form's `required` stops a browser from sending one: post it directly
  const response = await page.request.post('/todos', { form: { title: '   ' } });
  expect(response.status()).toBe(400);
  expect(await response.text()).toContain('the title must not be empty');

  await page.reload();
  await expectTodos(page, SEED);
});

test('answers 404 for a todo that does not exist', async ({ page }) => {
  const response = await page.goto('/todos/999/edit');
  expect(response?.status()).toBe(404);
  await expect(page.getByRole('alert')).toHaveText('no such todo');
  await page.getByRole('link', { name: 'Back to the list' }).click();

  await expectTodos(page, SEED);
});

test('serves the list as JSON, with the new todo as number 4', async ({ page }) => {
  await addTodo(page, 'Fix the bike');

  // a fresh database for every test: its sequence, too, is where the seed left it
  const response = await page.request.get('/api/todos');
  expect(response.ok()).toBe(true);
  expect(await response.json()).toEqual([
    { id: 1, title: 'Buy milk', done: false, created_at: '2024-01-01T09:00:00.000Z' },
    { id: 2, title: 'Walk the dog', done: true, created_at: '2024-01-01T09:05:00.000Z' },
    { id: 3, title: 'Read a book', done: false, created_at: '2024-01-01T09:10:00.000Z' },
    { id: 4, title: 'Fix the bike', done: false, created_at: expect.any(String) },
  ]);
});

test('keeps its change in its own database', async ({ page, app }) => {
  await todoItem(page, 'Read a book').getByRole('button', { name: 'Delete' }).click();
  await expect(page.getByTestId('todo-item')).toHaveCount(2);

  const query = await app.sandbox.exec(`psql -U todo -tA -c 'SELECT title FROM todos ORDER BY id' todo`);
  expect(query.exitCode, query.stderr.toString()).toBe(0);
  expect(query.stdout.toString().trim().split('\n')).toEqual(['Buy milk', 'Walk the dog']);
});
