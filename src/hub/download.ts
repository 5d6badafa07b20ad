/**
 * HTTP for the Hub: a resumable download (a dropped connection continues with a Range request)
 * and a streamed upload. Both name the URL and the fix when the server cannot be reached.
 */
import { createReadStream, createWriteStream, existsSync } from 'node:fs';
import { rename, rm, stat } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { Agent, interceptors, request, type Dispatcher } from 'undici';
import { sha256File } from '../common/hash.js';
import { ForkdError, errorMessage } from '../errors.js';
import type { PackProgress } from './pack.js';

const ATTEMPTS = 4;
/** Redirects followed (release assets are usually redirects to a CDN). */
const MAX_REDIRECTS = 5;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);

/** An HTTP client for one transfer (closed after it). */
async function withClient<T>(fn: (dispatcher: Dispatcher) => Promise<T>): Promise<T> {
  const agent = new Agent();
  try {
    return await fn(agent);
  } finally {
    await agent.close();
  }
}
const RETRY_DELAY_MS = 300;

/** A pack URL refused because it is not https:// (the daemon's pulls); `via` says where it came from. */
export function httpsRequired(url: string, via = ''): ForkdError {
  return new ForkdError('FORKD_ERR_BAD_INPUT', `refusing to pull ${url}${via}: only https:// URLs are pulled`, {
    hint: 'serve the pack over https://, or start the daemon with `forkd serve --allow-http-pull` (trusted networks only)',
  });
}

/**
 * GETs `url`, following redirects by hand so that with `httpsOnly` every hop is checked, not only
 * the first: https://x answering 302 Location: http://10.0.0.5/ must not reach the internal host.
 * Throws a ForkdError for a refused hop or too many redirects, the network's own error otherwise.
 */
export async function getFollowingRedirects(
  url: string,
  options: { dispatcher: Dispatcher; headers?: Record<string, string>; httpsOnly?: boolean },
): Promise<Dispatcher.ResponseData> {
  let at = url;
  for (let hop = 0; ; hop++) {
    if (options.httpsOnly && new URL(at).protocol !== 'https:') {
      throw httpsRequired(at, at === url ? '' : ` (a redirect from ${url})`);
    }
    const response = await request(at, {
      method: 'GET',
      headers: options.headers ?? {},
      dispatcher: options.dispatcher,
    });
    const location = response.headers.location;
    if (!REDIRECT_STATUSES.has(response.statusCode) || typeof location !== 'string') return response;
    await response.body.dump();
    if (hop === MAX_REDIRECTS) {
      throw new ForkdError('FORKD_ERR_UNREACHABLE', `${url} redirected more than ${MAX_REDIRECTS} times`, {
        hint: 'check the URL: the server sends the download round in circles',
      });
    }
    at = new URL(location, at).toString();
  }
}

export function unreachable(url: string, err: unknown): ForkdError {
  return new ForkdError('FORKD_ERR_UNREACHABLE', `cannot reach ${url}: ${errorMessage(err)}`, {
    hint: 'check the URL and your network; FORKD_HUB_URL sets the Hub, or unpack a pack file you have',
    cause: err,
  });
}

function httpError(method: string, url: string, status: number): ForkdError {
  return new ForkdError(
    status === 404 ? 'FORKD_ERR_NOT_FOUND' : 'FORKD_ERR_UNREACHABLE',
    `${method} ${url} answered ${status}`,
    {
      hint:
        status === 404
          ? 'check the name, version or URL'
          : 'the server refused the request; check the URL and its credentials',
    },
  );
}

function sizeMismatch(url: string, got: number, options: DownloadOptions): ForkdError {
  return new ForkdError(
    'FORKD_ERR_CORRUPT',
    `${url} is ${got} bytes; ${options.vouchedBy ?? 'the registry'} says ${options.size}`,
    { hint: 'the pack was changed or damaged on the way; nothing was installed. Try again, or tell the publisher' },
  );
}

export interface DownloadOptions {
  sha256?: string;
  /** Bytes the file must have: a server that sends more is cut off, and another size refused. */
  size?: number;
  /** Who vouches for sha256 and size, for the error: "the registry" (default), "its pin in ...". */
  vouchedBy?: string;
  onProgress?: PackProgress;
  /** Refuse plain http:// on every hop, redirects included (the daemon's pulls). */
  httpsOnly?: boolean;
}

/**
 * Downloads `url` to `dest`. The bytes go to `dest.partial` first; a dropped connection resumes
 * from where it stopped (here, up to 4 attempts, or in a later run). With `sha256`, a download
 * that does not match is removed and refused.
 */
export async function download(url: string, dest: string, options: DownloadOptions = {}): Promise<void> {
  return withClient((dispatcher) => downloadWith(dispatcher, url, dest, options));
}

async function downloadWith(
  dispatcher: Dispatcher,
  url: string,
  dest: string,
  options: DownloadOptions,
): Promise<void> {
  const partial = `${dest}.partial`;
  // a .partial left by an earlier run may be of an older version of the pack: if the result does
  // not match, it is downloaded once more from the start
  const leftOver = existsSync(partial);
  let lastError: unknown;
  for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
    const have = existsSync(partial) ? (await stat(partial)).size : 0;
    let response;
    try {
      response = await getFollowingRedirects(url, {
        dispatcher,
        headers: have ? { range: `bytes=${have}-` } : {},
        httpsOnly: options.httpsOnly ?? false,
      });
    } catch (err) {
      if (err instanceof ForkdError) throw err; // a refused hop: trying again changes nothing
      lastError = unreachable(url, err);
      await new Promise((resolve) => setTimeout(resolve, RETRY_DELAY_MS));
      continue;
    }
    const { statusCode, headers, body } = response;
    if (statusCode !== 200 && statusCode !== 206) {
      await body.dump();
      if (statusCode === 416 && have) break; // nothing left to fetch: the partial is whole
      throw httpError('GET', url, statusCode);
    }
    const append = statusCode === 206 && have > 0;
    const length = Number(headers['content-length'] ?? NaN);
    const total = (append ? have : 0) + (Number.isFinite(length) ? length : 0) || options.size || 0;
    if (options.size !== undefined && total > options.size) {
      body.destroy();
      await rm(partial, { force: true });
      throw sizeMismatch(url, total, options);
    }
    let done = append ? have : 0;
    let tooLong = false;
    body.on('data', (chunk: Buffer) => {
      options.onProgress?.((done += chunk.length), total || done);
      // a server that sends no length (or lies about it) is cut off at the size vouched for
      if (options.size !== undefined && done > options.size && !tooLong) {
        tooLong = true;
        body.destroy(sizeMismatch(url, done, options));
      }
    });
    try {
      await pipeline(body, createWriteStream(partial, { flags: append ? 'a' : 'w' }));
      lastError = undefined;
      break;
    } catch (err) {
      if (tooLong) {
        await rm(partial, { force: true });
        throw err;
      }
      lastError = unreachable(url, err); // the connection dropped: the next attempt resumes
    }
  }
  if (lastError) throw lastError;
  const got = (await stat(partial)).size;
  if (options.size !== undefined && got !== options.size) {
    await rm(partial, { force: true });
    throw sizeMismatch(url, got, options);
  }
  if (options.sha256) {
    const actual = await sha256File(partial);
    if (actual !== options.sha256) {
      await rm(partial, { force: true });
      if (leftOver) return downloadWith(dispatcher, url, dest, options);
      throw new ForkdError(
        'FORKD_ERR_CORRUPT',
        `${url} does not match its sha256 in ${options.vouchedBy ?? 'the registry'} (got ${actual})`,
        {
          hint: 'the pack was changed or damaged on the way; nothing was installed. Try again, or tell the publisher',
        },
      );
    }
  }
  await rename(partial, dest);
}

/** PUTs `file` to `url` as a stream with its Content-Length (e.g. a presigned upload URL). */
export async function upload(url: string, file: string, onProgress?: PackProgress): Promise<void> {
  const { size } = await stat(file);
  const body = createReadStream(file, { highWaterMark: 1024 * 1024 });
  let done = 0;
  body.on('data', (chunk) => onProgress?.((done += chunk.length), size));
  await withClient(async (dispatcher) => {
    let response;
    try {
      response = await request(url, {
        method: 'PUT',
        body,
        headers: { 'content-length': String(size) },
        dispatcher: dispatcher.compose(interceptors.redirect({ maxRedirections: MAX_REDIRECTS })),
      });
    } catch (err) {
      throw unreachable(url, err);
    }
    await response.body.dump();
    if (response.statusCode < 200 || response.statusCode >= 300) throw httpError('PUT', url, response.statusCode);
  });
}
