// The todo app of the Playwright example: server-rendered HTML over the guest's PostgreSQL,
// Node's http module and Debian's node-pg, nothing else. No client-side JavaScript: every change
// is a form POST answered by a 303 redirect to the list.
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { URL, URLSearchParams } from 'node:url';

// Debian installs node-pg in /usr/share/nodejs, which require() searches and import does not
const pg = createRequire(import.meta.url)('pg');

const PORT = Number(process.env.PORT ?? 3000);
const MAX_BODY_BYTES = 16 * 1024;
const MAX_TITLE_LENGTH = 200;

// the local server's socket (PG* variables override it); idle connections never time out: a
// forked child's first request reuses one the parent opened (a timeout would also fire at once in a
// child, which resumes with the clock moved on)
const db = new pg.Pool({
  host: process.env.PGHOST ?? '/run/postgresql',
  database: process.env.PGDATABASE ?? 'todo',
  user: process.env.PGUSER ?? 'todo',
  max: 4,
  idleTimeoutMillis: 0,
});
db.on('error', (err) => console.error(`database connection lost: ${err.message}`));

class HttpError extends Error {
  constructor(status, message, headers = {}) {
    super(message);
    this.status = status;
    this.headers = headers;
  }
}

const notFound = () => new HttpError(404, 'no such todo');

// [method, path pattern, handler(request, ...captured path parts)]; ids of up to 9 digits fit Postgres's integer
const routes = [
  ['GET', /^\/$/, listPage],
  ['POST', /^\/todos$/, addTodo],
  ['GET', /^\/todos\/(\d{1,9})\/edit$/, editPage],
  ['POST', /^\/todos\/(\d{1,9})$/, renameTodo],
  ['POST', /^\/todos\/(\d{1,9})\/toggle$/, toggleTodo],
  ['POST', /^\/todos\/(\d{1,9})\/delete$/, deleteTodo],
  ['GET', /^\/api\/todos$/, listJson],
  ['GET', /^\/health$/, health],
];

async function listPage() {
  const { rows } = await db.query('SELECT id, title, done FROM todos ORDER BY id');
  const done = rows.filter((todo) => todo.done).length;
  const items = rows.map(
    ({ id, title, done }) => `
    <li data-testid="todo-item" data-id="${id}"${done ? ' class="done"' : ''}>
      <form method="post" action="/todos/${id}/toggle">
        <button type="submit" role="checkbox" aria-checked="${done}" aria-label="Done: ${escape(title)}">${done ? '☑' : '☐'}</button>
      </form>
      <span data-testid="todo-title">${escape(title)}</span>
      <a href="/todos/${id}/edit" aria-label="Edit: ${escape(title)}">Edit</a>
      <form method="post" action="/todos/${id}/delete">
        <button type="submit" aria-label="Delete: ${escape(title)}">Delete</button>
      </form>
    </li>`,
  );
  return html(
    200,
    'Todos',
    `<h1>Todos</h1>
  <form method="post" action="/todos">
    <label for="new-title">New todo</label>
    <input id="new-title" name="title" required maxlength="${MAX_TITLE_LENGTH}" autocomplete="off">
    <button type="submit">Add</button>
  </form>
  <p data-testid="todo-count">${plural(rows.length, 'todo')}, ${done} done</p>
  ${rows.length ? `<ul aria-label="Todos">${items.join('')}\n  </ul>` : '<p>Nothing to do.</p>'}`,
  );
}

async function addTodo(request) {
  const title = titleFrom(await readForm(request));
  await db.query('INSERT INTO todos (title) VALUES ($1)', [title]);
  return redirect('/');
}

async function editPage(_request, id) {
  const { rows } = await db.query('SELECT title FROM todos WHERE id = $1', [id]);
  if (!rows.length) throw notFound();
  return html(
    200,
    'Edit todo',
    `<h1>Edit todo</h1>
  <form method="post" action="/todos/${id}">
    <label for="title">Title</label>
    <input id="title" name="title" value="${escape(rows[0].title)}" required maxlength="${MAX_TITLE_LENGTH}">
    <button type="submit">Save</button>
    <a href="/">Cancel</a>
  </form>`,
  );
}

async function renameTodo(request, id) {
  const title = titleFrom(await readForm(request));
  return changeOne('UPDATE todos SET title = $2 WHERE id = $1', [id, title]);
}

function toggleTodo(_request, id) {
  return changeOne('UPDATE todos SET done = NOT done WHERE id = $1', [id]);
}

function deleteTodo(_request, id) {
  return changeOne('DELETE FROM todos WHERE id = $1', [id]);
}

async function changeOne(sql, params) {
  const { rowCount } = await db.query(sql, params);
  if (rowCount === 0) throw notFound();
  return redirect('/');
}

async function listJson() {
  const { rows } = await db.query('SELECT id, title, done, created_at FROM todos ORDER BY id');
  return { status: 200, type: 'application/json', body: JSON.stringify(rows) };
}

async function health() {
  await db.query('SELECT 1');
  return { status: 200, type: 'text/plain', body: 'ok\n' };
}

async function readForm(request) {
  const type = request.headers['content-type'] ?? '';
  if (!type.startsWith('application/x-www-form-urlencoded'))
    throw new HttpError(415, `expected a form (application/x-www-form-urlencoded), got ${type || 'no content type'}`);
  const chunks = [];
  let size = 0;
  for await (const chunk of request) {
    chunks.push(chunk);
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new HttpError(413, `form larger than ${MAX_BODY_BYTES} bytes`);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString());
}

function titleFrom(form) {
  const title = (form.get('title') ?? '').trim();
  if (!title) throw new HttpError(400, 'the title must not be empty');
  if (title.length > MAX_TITLE_LENGTH)
    throw new HttpError(400, `the title must be at most ${MAX_TITLE_LENGTH} characters`);
  return title;
}

function redirect(location) {
  return { status: 303, type: 'text/plain', body: `see ${location}\n`, headers: { location } };
}

function html(status, title, main) {
  const body = `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>${escape(title)}</title>
  <style>
    body { font-family: sans-serif; max-width: 40rem; margin: 2rem auto; }
    li { display: flex; gap: 0.5rem; align-items: center; margin: 0.25rem 0; }
    li form { display: inline; }
    li.done [data-testid="todo-title"] { text-decoration: line-through; color: #666; }
  </style>
</head>
<body>
<main>
  ${main}
</main>
</body>
</html>
`;
  return { status, type: 'text/html; charset=utf-8', body };
}

function errorPage(status, message) {
  const heading = { 400: 'Bad request', 404: 'Not found', 405: 'Method not allowed' }[status] ?? 'Error';
  return html(
    status,
    heading,
    `<h1>${heading}</h1>\n  <p role="alert">${escape(message)}</p>\n  <a href="/">Back to the list</a>`,
  );
}

function plural(count, noun) {
  return `${count} ${noun}${count === 1 ? '' : 's'}`;
}

function escape(text) {
  const entities = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
  return String(text).replace(/[&<>"']/g, (char) => entities[char]);
}

async function respond(request) {
  const { pathname } = new URL(request.url, 'http://app');
  const matching = routes.filter(([, pattern]) => pattern.test(pathname));
  if (!matching.length) throw new HttpError(404, `no page at ${pathname}`);
  const route = matching.find(([method]) => method === request.method);
  if (!route) {
    const allowed = matching.map(([method]) => method).join(', ');
    throw new HttpError(405, `${request.method} is not allowed here (only ${allowed})`, { allow: allowed });
  }
  const [, pattern, handler] = route;
  return handler(request, ...pattern.exec(pathname).slice(1).map(Number));
}

const server = createServer(async (request, response) => {
  const started = Date.now();
  let answer;
  let problem = '';
  try {
    answer = await respond(request);
  } catch (err) {
    const status = err instanceof HttpError ? err.status : 500;
    problem = status === 500 ? err.stack : err.message;
    answer = errorPage(status, status === 500 ? 'something went wrong' : err.message);
    answer.headers = err.headers;
  }
  response.writeHead(answer.status, { 'content-type': answer.type, ...answer.headers });
  response.end(answer.body);
  const line = `${request.method} ${request.url} ${answer.status} ${Date.now() - started}ms`;
  if (problem) console.error(`${line}: ${problem}`);
  else console.log(line);
});

server.listen(PORT, () => console.log(`todo app listening on port ${PORT}`));

process.on('SIGTERM', () => {
  server.close();
  db.end();
});
