import type { Locator, Page } from '@playwright/test';
import { expect } from 'forkd-action/playwright';

export interface Todo {
  title: string;
  done: boolean;
}

/** The todos every app starts with (todo-app/schema.sql), in list order. */
export const SEED: readonly Todo[] = [
  { title: 'Buy milk', done: false },
  { title: 'Walk the dog', done: true },
  { title: 'Read a book', done: false },
];

/** The list item of the todo titled exactly `title`. */
export function todoItem(page: Page, title: string): Locator {
  return page.getByTestId('todo-item').filter({ has: page.getByText(title, { exact: true }) });
}

export async function addTodo(page: Page, title: string): Promise<void> {
  await page.getByLabel('New todo').fill(title);
  await page.getByRole('button', { name: 'Add', exact: true }).click();
  await expect(page.getByTestId('todo-title').last()).toHaveText(title);
}

/** Asserts that the list shows exactly `todos`: these titles in this order, these ones done. */
export async function expectTodos(page: Page, todos: readonly Todo[]): Promise<void> {
  const done = todos.filter((todo) => todo.done);
  await expect(page.getByTestId('todo-title')).toHaveText(todos.map((todo) => todo.title));
  await expect(
    page
      .getByTestId('todo-item')
      .filter({ has: page.getByRole('checkbox', { checked: true }) })
      .getByTestId('todo-title'),
  ).toHaveText(done.map((todo) => todo.title));
  await expect(page.getByTestId('todo-count')).toHaveText(
    `${todos.length} todo${todos.length === 1 ? '' : 's'}, ${done.length} done`,
  );
}
