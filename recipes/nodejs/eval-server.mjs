// forkd eval bridge: a warm Node that evaluates code sent over /run/forkd/eval.sock.
// One request per connection: the client writes the code and shuts down its write side; the reply
// is one JSON object. The context persists between calls, so each child keeps its own session;
// a returned promise is awaited.
import { mkdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { dirname } from 'node:path';
import { format, inspect } from 'node:util';
import vm from 'node:vm';

const SOCKET = '/run/forkd/eval.sock';
let output = '';
const capture = (...args) => {
  output += `${format(...args)}\n`;
};
const sandboxConsole = { log: capture, info: capture, warn: capture, error: capture, debug: capture };
const context = vm.createContext({ require: createRequire('/root/'), console: sandboxConsole, process, Buffer });

function toJson(value) {
  try {
    return value === undefined ? null : JSON.parse(JSON.stringify(value));
  } catch {
    return null;
  }
}

async function evaluate(code) {
  output = '';
  try {
    const value = await vm.runInContext(code, context, { filename: '<eval>' });
    return { ok: true, value: toJson(value), repr: value === undefined ? null : inspect(value), output };
  } catch (err) {
    // errors from the context come from another realm: `instanceof Error` is false for them
    const e = typeof err === 'object' && err !== null && 'stack' in err ? err : new Error(String(err));
    // drop this server's own frames: the stack ends in the caller's code
    const stack = String(e.stack ?? err)
      .split('\n')
      .filter((line) => !/\/opt\/forkd\/|node:vm|node:internal/.test(line))
      .join('\n');
    return { ok: false, error: { type: String(e.name ?? 'Error'), message: String(e.message ?? ''), stack }, output };
  }
}

// One evaluation at a time, like a REPL: a second connection waits for the first.
let queue = Promise.resolve();
mkdirSync(dirname(SOCKET), { recursive: true });
rmSync(SOCKET, { force: true });
// allowHalfOpen: the client ends its side after the code; the reply still has to go back
createServer({ allowHalfOpen: true }, (conn) => {
  const chunks = [];
  conn.on('data', (c) => chunks.push(c));
  conn.on('end', () => {
    queue = queue.then(async () => conn.end(JSON.stringify(await evaluate(Buffer.concat(chunks).toString()))));
  });
  conn.on('error', () => {});
}).listen(SOCKET);
