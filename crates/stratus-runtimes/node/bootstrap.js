'use strict';
/*
 * Stratus Node.js runtime bootstrap.
 *
 * Speaks the AWS Lambda Runtime API (2018-06-01) over one persistent
 * keep-alive HTTP connection and runs the user's handler one invocation at a
 * time, forever; or, with AWS_LAMBDA_MAX_CONCURRENCY=N, up to N at once, each
 * in an async context of its own, with every line it writes marked with its
 * request. Started by the platform as `node bootstrap.js` with
 * cwd = LAMBDA_TASK_ROOT. CommonJS, built-in modules only, Node.js 18+.
 */
const fs = require('fs');
const http = require('http');
const path = require('path');
const url = require('url');
const util = require('util');

const API_PREFIX = '/2018-06-01/runtime';
const env = process.env;

// A runtime started before its function was known (the platform set
// STRATUS_ACTIVATION_FD) waits here for it: one JSON line with the function's
// complete environment and working directory.
function awaitActivation() {
  const fd = Number(env.STRATUS_ACTIVATION_FD);
  const chunks = [];
  const buf = Buffer.alloc(65536);
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (;;) {
    let n;
    try {
      n = fs.readSync(fd, buf, 0, buf.length, null);
    } catch (err) {
      if (err.code !== 'EAGAIN') throw err;
      Atomics.wait(pause, 0, 0, 1);
      continue;
    }
    if (n === 0) fatal('the platform went away before activation');
    chunks.push(Buffer.from(buf.subarray(0, n)));
    // One line, not to end of file: processes the platform forks meanwhile
    // may hold the writing end for a moment.
    if (buf[n - 1] === 0x0a) break;
  }
  fs.closeSync(fd);
  const message = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  // Touch only what changes: a change to TZ, say, makes Node reload its
  // time-zone data.
  const next = new Map(message.env);
  for (const key of Object.keys(env)) if (!next.has(key)) delete env[key];
  for (const [key, value] of next) if (env[key] !== value) env[key] = value;
  process.chdir(message.cwd);
}

// ---------------------------------------------------------------------------
// Synchronous logging: console output goes straight to fd 1/2 so everything a
// handler logged is written before its response is posted, in order.
// ---------------------------------------------------------------------------
const sleepCell = new Int32Array(new SharedArrayBuffer(4));

function writeFully(fd, text) {
  const buf = Buffer.from(text, 'utf8');
  let off = 0;
  while (off < buf.length) {
    try {
      off += fs.writeSync(fd, buf, off, buf.length - off);
    } catch (err) {
      // Node marks stdio pipes non-blocking once process.stdout is touched;
      // wait a millisecond for the reader instead of dropping output.
      if (err.code === 'EAGAIN') Atomics.wait(sleepCell, 0, 0, 1);
      else return; // EPIPE and friends: nowhere left to write to.
    }
  }
}

// As AWS's Node.js runtime: AWS_LAMBDA_LOG_LEVEL drops the console calls
// below it, and with AWS_LAMBDA_LOG_FORMAT=JSON each call is one JSON object
// with its level and request id.
const LOG_LEVELS = { TRACE: 0, DEBUG: 1, INFO: 2, WARN: 3, ERROR: 4, FATAL: 5 };
// Read once the function's environment is known (after activation).
let logLevel = 0;
let logJson = false;
function configureLogging() {
  logLevel = LOG_LEVELS[(env.AWS_LAMBDA_LOG_LEVEL || '').toUpperCase()] ?? 0;
  logJson = (env.AWS_LAMBDA_LOG_FORMAT || '').toUpperCase() === 'JSON';
}
// The invocation in flight, for log records, with one at a time.
let currentRequestId = null;
// With several at once (AWS_LAMBDA_MAX_CONCURRENCY above 1), the async
// context each runs in names its request instead.
let concurrency = 1;
let events = null;

function requestId() {
  if (!events) return currentRequestId;
  const store = events.getStore();
  return store ? store.id : null;
}

// Marks each line of `text` (which ends with a newline) with the request
// that wrote it, when several run at once: 0x1E, the id, 0x1F.
function marked(text) {
  const id = events && requestId();
  if (!id) return text;
  const mark = `\x1e${id}\x1f`;
  return mark + text.slice(0, -1).split('\n').join('\n' + mark) + '\n';
}

function writeLines(fd, text) {
  writeFully(fd, marked(text));
}

function emit(fd, level, text) {
  if (LOG_LEVELS[level] < logLevel) return;
  if (logJson) {
    const record = { timestamp: new Date().toISOString(), level, requestId: requestId(), message: text };
    writeLines(fd, JSON.stringify(record) + '\n');
  } else {
    writeLines(fd, text + '\n');
  }
}

// What handlers write through process.stdout/stderr themselves is marked
// too, whole lines at a time: a partial line waits, per request, for its
// end (or the event's).
const partialLines = [new Map(), new Map()];
function markStream(stream, partial) {
  const write = stream.write.bind(stream);
  stream.write = (chunk, encoding, callback) => {
    const id = requestId();
    if (!id) return write(chunk, encoding, callback);
    if (typeof encoding === 'function') {
      callback = encoding;
      encoding = undefined;
    }
    const piece = typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString();
    const text = (partial.get(id) || '') + piece;
    const end = text.lastIndexOf('\n');
    if (end < 0) {
      partial.set(id, text);
      if (callback) process.nextTick(callback);
      return true;
    }
    if (end + 1 < text.length) partial.set(id, text.slice(end + 1));
    else partial.delete(id);
    return write(marked(text.slice(0, end + 1)), 'utf8', callback);
  };
}

// Writes what the event `id` left without a newline.
function endLines(id) {
  if (!events) return;
  [process.stdout, process.stderr].forEach((stream, i) => {
    const rest = partialLines[i].get(id);
    if (rest === undefined) return;
    partialLines[i].delete(id);
    stream.write(rest + '\n');
  });
}

const writer = (fd, level) => (...args) => emit(fd, level, util.format(...args));
console.log = console.info = writer(1, 'INFO');
console.debug = writer(1, 'DEBUG');
console.warn = writer(2, 'WARN');
console.error = writer(2, 'ERROR');
console.dir = (obj, options) => emit(1, 'INFO', util.inspect(obj, { customInspect: false, ...options }));
console.trace = function trace(...args) {
  const err = { name: 'Trace', message: util.format(...args) };
  Error.captureStackTrace(err, trace);
  emit(2, 'TRACE', err.stack);
};

function fatal(message) {
  writeFully(2, `stratus-runtime: ${message}\n`);
  process.exit(1);
}

// Wait until anything the handler wrote through process.stdout/stderr directly
// (asynchronous streams) has been handed to the OS.
async function flushStdio() {
  for (const stream of [process.stdout, process.stderr]) {
    if (stream.writableLength > 0) await new Promise((resolve) => stream.once('drain', resolve));
  }
}

// A runtime started ahead of demand runs one request through the same client
// against a throwaway local server while it waits, so that the first real
// call does not pay for compiling the HTTP code paths, and loads the built-in
// modules that handlers commonly use.
const PRELOAD = ['crypto', 'events', 'os', 'querystring', 'stream', 'zlib'];
async function prime() {
  for (const name of PRELOAD) require(name);
  // The first change to process.env is slow (it builds its interceptors).
  env.STRATUS_PRIME = '1';
  delete env.STRATUS_PRIME;
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => res.end('{}'));
  });
  try {
    await new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', resolve);
    });
    useApi(`127.0.0.1:${server.address().port}`);
    await request('GET', '/invocation/next', undefined, { 'Stratus-Prime': '1' });
    await request('POST', '/invocation/prime/response', '{}');
  } catch (_) {
    // Priming is an optimisation only.
  } finally {
    if (api) closeApi();
    server.close();
  }
}

// ---------------------------------------------------------------------------
// Runtime API client: one keep-alive socket speaking HTTP/1.1 by hand (Node's
// http client costs more per request than the rest of an invocation),
// reconnecting once on errors. Streamed responses use the http module.
// ---------------------------------------------------------------------------
const net = require('net');
let api;
function useApi(address) {
  const portSep = address.lastIndexOf(':');
  if (api) closeApi();
  api = {
    address,
    host: address.slice(0, portSep).replace(/^\[(.*)\]$/, '$1'),
    port: Number(address.slice(portSep + 1)),
    // Streamed responses, and with several events at once every request:
    // a long poll and a post for each.
    agent: new http.Agent({ keepAlive: true, maxSockets: concurrency > 1 ? 2 * concurrency : 1 }),
    sock: null,
    chunks: [], // what has arrived and is not yet consumed
    size: 0,
    head: null, // the parsed head of the answer being received
    pending: [], // { resolve, reject } of the requests awaiting answers, in order
  };
}

function closeApi() {
  api.agent.destroy();
  if (api.sock) api.sock.destroy();
  api.sock = null;
}

function connectApi() {
  const sock = net.connect({ host: api.host, port: api.port });
  sock.setNoDelay(true);
  api.sock = sock;
  api.chunks = [];
  api.size = 0;
  api.head = null;
  sock.on('data', (chunk) => {
    if (sock !== api.sock) return;
    api.chunks.push(chunk);
    api.size += chunk.length;
    parseAnswer();
  });
  const broken = (err) => {
    if (sock !== api.sock) return;
    failApi(err || new Error('the Runtime API closed the connection'));
  };
  sock.on('error', broken);
  sock.on('close', () => broken());
}

// Drops the connection and fails the request waiting on it.
function failApi(err) {
  const sock = api.sock;
  api.sock = null;
  if (sock) sock.destroy();
  const pending = api.pending;
  api.pending = [];
  for (const waiter of pending) waiter.reject(err);
}

// What has arrived, as one buffer (joined only when needed).
function received() {
  if (api.chunks.length > 1) api.chunks = [Buffer.concat(api.chunks, api.size)];
  return api.chunks[0];
}

// Completes the pending requests, in order, as their answers arrive.
function parseAnswer() {
  while (api.pending.length && api.size > 0 && parseOneAnswer());
}

// Completes the oldest pending request if its whole answer has arrived.
function parseOneAnswer() {
  if (!api.head) {
    const buf = received();
    const headEnd = buf.indexOf('\r\n\r\n');
    if (headEnd < 0) {
      if (buf.length > 65536) failApi(new Error('the Runtime API sent an oversized header'));
      return false;
    }
    const lines = buf.toString('latin1', 0, headEnd).split('\r\n');
    const headers = {};
    for (let i = 1; i < lines.length; i++) {
      const colon = lines[i].indexOf(':');
      if (colon > 0) headers[lines[i].slice(0, colon).trim().toLowerCase()] = lines[i].slice(colon + 1).trim();
    }
    api.head = { status: Number(lines[0].split(' ')[1]), headers, start: headEnd + 4,
      chunked: (headers['transfer-encoding'] || '').toLowerCase() === 'chunked',
      length: Number(headers['content-length'] || 0) };
  }
  const head = api.head;
  let body;
  let end;
  if (!head.chunked) {
    if (api.size < head.start + head.length) return false;
    const buf = received();
    body = buf.subarray(head.start, head.start + head.length);
    end = head.start + head.length;
  } else {
    const buf = received();
    const parts = [];
    let at = head.start;
    for (;;) {
      const lineEnd = buf.indexOf('\r\n', at);
      if (lineEnd < 0) return false;
      const size = parseInt(buf.toString('latin1', at, lineEnd), 16);
      if (!Number.isFinite(size) || size < 0) {
        failApi(new Error('the Runtime API sent a malformed chunk'));
        return false;
      }
      if (size === 0) {
        // Trailers, if any, end with an empty line.
        const trailerEnd = buf.indexOf('\r\n\r\n', lineEnd);
        if (trailerEnd < 0) return false;
        end = trailerEnd + 4;
        break;
      }
      if (buf.length < lineEnd + 2 + size + 2) return false;
      parts.push(buf.subarray(lineEnd + 2, lineEnd + 2 + size));
      at = lineEnd + 2 + size + 2;
    }
    body = Buffer.concat(parts);
  }
  const buf = api.chunks[0];
  api.chunks = end < buf.length ? [buf.subarray(end)] : [];
  api.size = buf.length - end;
  api.head = null;
  const waiter = api.pending.shift();
  const answer = { status: head.status, headers: head.headers, body: body.toString('utf8') };
  if ((head.headers.connection || '').toLowerCase() === 'close') {
    // Requests still queued on this connection fail and are asked again.
    failApi(new Error('the Runtime API closed the connection'));
  } else if (!api.pending.length) {
    // Idle between requests, the socket must not keep the event loop
    // alive: callback handlers wait for it to empty.
    api.sock.unref();
  }
  waiter.resolve(answer);
  return true;
}

// One request on a connection of the agent's: with several events at once,
// a long poll must not hold up the posts behind it.
function agentRequest(method, apiPath, body, headers) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: api.host, port: api.port, method, agent: api.agent,
      path: API_PREFIX + apiPath, headers }, (res) => {
      const chunks = [];
      res.on('data', (chunk) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers,
        body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

function request(method, apiPath, body, headers) {
  if (events) return agentRequest(method, apiPath, body, headers);
  return new Promise((resolve, reject) => {
    if (!api.sock) connectApi();
    api.sock.ref();
    let head = `${method} ${API_PREFIX}${apiPath} HTTP/1.1\r\nHost: ${api.address}\r\n`;
    for (const name in headers) head += `${name}: ${headers[name]}\r\n`;
    api.pending.push({ resolve, reject });
    if (body !== undefined) {
      const bytes = Buffer.from(body, 'utf8');
      head += `Content-Length: ${bytes.length}\r\n\r\n`;
      api.sock.write(Buffer.concat([Buffer.from(head, 'latin1'), bytes]));
    } else {
      api.sock.write(head + '\r\n', 'latin1');
    }
    parseAnswer();
  });
}

async function apiRequest(method, apiPath, body, headers) {
  try {
    return await request(method, apiPath, body, headers);
  } catch (_) {
    // Most likely the server closed the idle keep-alive socket: retry once.
    try {
      return await request(method, apiPath, body, headers);
    } catch (err) {
      return fatal(`Runtime API at ${api.address} is unreachable (${method} ${apiPath}): ${err.message}`);
    }
  }
}

async function post(apiPath, payload, extraHeaders) {
  const headers = { 'Content-Type': 'application/json', ...extraHeaders };
  const res = await apiRequest('POST', apiPath, payload, headers);
  if (res.status < 200 || res.status > 299) {
    writeFully(2, `stratus-runtime: POST ${apiPath} rejected with HTTP ${res.status}: ${res.body}\n`);
  }
}

// Posts an answer and, right behind it on the same connection (HTTP/1.1
// pipelining), the request for the next event, so the platform can hand
// this runtime its next event without another round trip. Returns
// { next }: that request's promise, or null when the next event must be
// asked for anew (wrapped, so that awaiting this does not await it).
async function postThenNext(apiPath, payload, extraHeaders) {
  if (events) {
    await post(apiPath, payload, extraHeaders);
    return { next: null };
  }
  const headers = { 'Content-Type': 'application/json', ...extraHeaders };
  let answer;
  let next = null;
  try {
    const posted = request('POST', apiPath, payload, headers);
    next = request('GET', '/invocation/next', undefined, undefined);
    next.catch(() => {});
    answer = await posted;
  } catch (_) {
    // The connection broke: post alone, then ask for the next event anew.
    next = null;
    answer = await apiRequest('POST', apiPath, payload, headers);
  }
  if (answer.status < 200 || answer.status > 299) {
    writeFully(2, `stratus-runtime: POST ${apiPath} rejected with HTTP ${answer.status}: ${answer.body}\n`);
  }
  return { next };
}

let prefetchedNext = null;
const postInvokeError = (id, error) => post(`/invocation/${id}/error`, JSON.stringify(error),
  { 'Lambda-Runtime-Function-Error-Type': 'Unhandled' });
const postInitError = (error) => post('/init/error', JSON.stringify(error),
  { 'Lambda-Runtime-Function-Error-Type': error.errorType });

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------
// An error raised by the runtime itself; its name is the Lambda errorType.
class RuntimeError extends Error {
  constructor(errorType, message) {
    super(message);
    this.name = errorType;
  }
}

function safeString(value) {
  try { return String(value); } catch (_) { return util.inspect(value); }
}

// Stack frames without the "Name: message" header (which may span lines),
// cut off where the bootstrap's own frames begin.
function stackLines(stack) {
  if (typeof stack !== 'string') return [];
  const lines = stack.split('\n');
  const first = lines.findIndex((line) => /^\s+at /.test(line));
  if (first < 0) return lines.slice(1);
  const own = lines.findIndex((line, i) => i > first && line.includes(__filename));
  return lines.slice(first, own > 0 ? own : undefined);
}

function toErrorBody(err, errorType) {
  if (err instanceof RuntimeError) return { errorType: err.name, errorMessage: err.message, stackTrace: [] };
  if (err && typeof err === 'object' && typeof err.message === 'string') {
    return { errorType: errorType || err.name || 'Error', errorMessage: err.message,
      stackTrace: stackLines(err.stack) };
  }
  return { errorType: errorType || 'Error', errorMessage: safeString(err), stackTrace: [] };
}

function logError(error) {
  const trace = error.stackTrace.length ? '\n' + error.stackTrace.join('\n') : '';
  writeLines(2, `[ERROR] ${error.errorType}: ${error.errorMessage}${trace}\n`);
}

// Map an exception from the init phase to the Lambda error body.
function initErrorBody(err) {
  if (err instanceof SyntaxError) {
    // CommonJS syntax errors carry "file:line", the source line and a caret
    // before the "SyntaxError:" line of the stack; keep them as the first entries.
    const lines = String(err.stack).split('\n');
    const header = lines.findIndex((line) => line.startsWith('SyntaxError'));
    return { errorType: 'Runtime.UserCodeSyntaxError', errorMessage: `SyntaxError: ${err.message}`,
      stackTrace: [...lines.slice(0, Math.max(header, 0)).filter(Boolean), ...stackLines(err.stack)] };
  }
  if (err && (err.code === 'MODULE_NOT_FOUND' || err.code === 'ERR_MODULE_NOT_FOUND')) {
    return { ...toErrorBody(err, 'Runtime.ImportModuleError'), errorMessage: `Error: ${err.message}` };
  }
  return toErrorBody(err);
}

// ---------------------------------------------------------------------------
// Handler loading (init phase)
// ---------------------------------------------------------------------------
function inModulePackage(file) {
  for (let dir = path.dirname(file); ; dir = path.dirname(dir)) {
    const pkgFile = path.join(dir, 'package.json');
    if (fs.existsSync(pkgFile)) {
      try { return JSON.parse(fs.readFileSync(pkgFile, 'utf8')).type === 'module'; } catch (_) { return false; }
    }
    if (path.dirname(dir) === dir) return false;
  }
}

function isFile(file) {
  try { return fs.statSync(file).isFile(); } catch (_) { return false; }
}

const importFile = (file) => import(url.pathToFileURL(file).href);

function requireOrImport(file) {
  try {
    return require(file);
  } catch (err) {
    if (err.code === 'ERR_REQUIRE_ESM' || err.code === 'ERR_REQUIRE_ASYNC_MODULE') return importFile(file);
    throw err;
  }
}

async function loadModule(base, moduleName) {
  for (const ext of ['.js', '.cjs', '.mjs']) {
    const file = base + ext;
    if (!isFile(file)) continue;
    if (ext === '.mjs' || (ext === '.js' && inModulePackage(file))) return importFile(file);
    return requireOrImport(file);
  }
  // Extensionless file or directory module: fall back to Node's resolution.
  try {
    return requireOrImport(base);
  } catch (err) {
    if (err.code === 'MODULE_NOT_FOUND' && err.message.startsWith(`Cannot find module '${base}'`)) {
      err.message = err.message.replace(`'${base}'`, `'${moduleName}'`);
    }
    throw err;
  }
}

// The platform's SDK (`require('stratus')`) ships in the runtime's
// directory, which `require` searches after a function's own node_modules
// (as NODE_PATH's are; the variable itself is left as it was). Done as the
// handler loads: the runtime's directory is the function's, known then.
function addSdkPath() {
  const dir = env.LAMBDA_RUNTIME_DIR || __dirname;
  const saved = env.NODE_PATH;
  env.NODE_PATH = [path.join(dir, 'node_modules'), saved].filter(Boolean).join(path.delimiter);
  require('module')._initPaths();
  if (saved === undefined) delete env.NODE_PATH;
  else env.NODE_PATH = saved;
}

async function loadHandler(spec) {
  addSdkPath();
  // "src/index.a.b" -> directory "src/", module "index", export path "a.b".
  const slash = spec.lastIndexOf('/');
  const rest = spec.slice(slash + 1);
  const dot = rest.indexOf('.');
  if (dot <= 0 || dot === rest.length - 1) {
    throw new RuntimeError('Runtime.MalformedHandlerName', `Bad handler ${spec}`);
  }
  const moduleName = rest.slice(0, dot);
  const base = path.resolve(env.LAMBDA_TASK_ROOT || process.cwd(), spec.slice(0, slash + 1), moduleName);
  const mod = await loadModule(base, moduleName);
  const lookup = (obj) => rest.slice(dot + 1).split('.').reduce((o, key) => (o == null ? undefined : o[key]), obj);
  // Modules loaded with import() may expose CommonJS exports only on `default`.
  const fn = lookup(mod) ?? lookup(mod && mod[Symbol.toStringTag] === 'Module' ? mod.default : undefined);
  if (fn == null) throw new RuntimeError('Runtime.HandlerNotFound', `${spec} is undefined or not exported`);
  if (typeof fn !== 'function') throw new RuntimeError('Runtime.HandlerNotFound', `${spec} is not a function`);
  return fn;
}

// ---------------------------------------------------------------------------
// Response streaming, as Lambda's Node.js runtime offers it:
//   exports.handler = awslambda.streamifyResponse(async (event, responseStream, context) => {
//     responseStream = awslambda.HttpResponseStream.from(responseStream, { statusCode: 200 });
//     responseStream.write('...'); responseStream.end();
//   });
// The body goes to the Runtime API as it is written, in a chunked POST in
// streaming mode; an error part-way is reported in the trailers.
// ---------------------------------------------------------------------------
const STREAMING = Symbol.for('aws.lambda.runtime.handler.streaming');
const HTTP_INTEGRATION = 'application/vnd.awslambda.http-integration-response';
globalThis.awslambda = {
  streamifyResponse(handler) {
    handler[STREAMING] = 'response';
    return handler;
  },
  HttpResponseStream: class HttpResponseStream {
    static from(responseStream, prelude) {
      responseStream.setContentType(HTTP_INTEGRATION);
      responseStream.write(JSON.stringify(prelude || {}));
      responseStream.write(Buffer.alloc(8));
      return responseStream;
    }
  },
};

function openResponseStream(id) {
  const { host, port, agent } = api;
  const req = http.request({ host, port, method: 'POST', agent,
    path: `${API_PREFIX}/invocation/${id}/response`,
    headers: { 'Lambda-Runtime-Function-Response-Mode': 'streaming', 'Transfer-Encoding': 'chunked',
      'Content-Type': 'application/octet-stream',
      Trailer: 'Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body' } });
  req.setNoDelay(true);
  const answered = new Promise((resolve) => {
    req.on('response', (res) => { res.resume(); res.on('end', resolve); res.on('error', resolve); });
    req.on('error', (err) => {
      if (req.stratusAborted) return resolve();
      writeFully(2, `stratus-runtime: streaming the response failed: ${err.message}\n`);
      resolve();
    });
  });
  const { Writable } = require('stream');
  const responseStream = new Writable({
    write(chunk, encoding, callback) { req.write(chunk, encoding, callback); },
    final(callback) { req.end(); callback(); },
  });
  responseStream.setContentType = (type) => req.setHeader('Content-Type', type);
  return { req, responseStream, answered };
}

async function invokeStreaming(handler, next, inv) {
  inv.stream = openResponseStream(inv.id);
  const { responseStream } = inv.stream;
  let failure = null;
  try {
    const event = JSON.parse(next.body);
    const context = { awsRequestId: inv.id, functionName: env.AWS_LAMBDA_FUNCTION_NAME,
      functionVersion: env.AWS_LAMBDA_FUNCTION_VERSION,
      invokedFunctionArn: next.headers['lambda-runtime-invoked-function-arn'],
      traceparent: next.headers['lambda-runtime-traceparent'],
      getRemainingTimeInMillis: () =>
        Math.max((Number(next.headers['lambda-runtime-deadline-ms']) || 0) - Date.now(), 0) };
    await handler(event, responseStream, context);
  } catch (err) {
    failure = toErrorBody(err);
  }
  if (inv.settled) return inv.posting; // a fatal error already ended it
  inv.settled = true;
  if (failure) {
    logError(failure);
    inv.posting = failStream(inv, failure);
    return inv.posting;
  }
  if (!responseStream.writableEnded) responseStream.end();
  inv.posting = inv.stream.answered;
  return inv.posting;
}

// Ends a streamed response with `error`: as an ordinary error report when
// nothing was sent yet, else in the trailers of the chunked post.
async function failStream(inv, error) {
  const { req, responseStream, answered } = inv.stream;
  await flushStdio();
  if (!req.headersSent) {
    req.stratusAborted = true;
    req.destroy();
    return postInvokeError(inv.id, error);
  }
  if (responseStream.writableEnded) {
    // The body was complete before the failure: there is no way left to
    // report it but the log.
    return answered;
  }
  const latin1 = (text) => String(text).replace(/[^\x20-\x7e]/g, '?');
  try {
    req.addTrailers({ 'Lambda-Runtime-Function-Error-Type': latin1(error.errorType),
      'Lambda-Runtime-Function-Error-Body': Buffer.from(JSON.stringify(error)).toString('base64') });
  } catch (_) {
    // Trailers refused: ending the post without its final chunk still
    // tells the platform the stream broke off.
    req.destroy();
    return answered;
  }
  responseStream.end();
  return answered;
}

// ---------------------------------------------------------------------------
// Invocation
// ---------------------------------------------------------------------------
let phase = 'init';
// { id, settled, posting } of each invocation in flight.
const inFlight = new Set();

function parseJsonHeader(value) {
  if (!value) return undefined;
  try { return JSON.parse(value); } catch (_) { return undefined; }
}

// Runs the handler; resolves to { isError, value } from whichever of return
// value, promise, callback or context.done/succeed/fail settles first.
function runHandler(handler, inv, next) {
  let resolve;
  const outcome = new Promise((res) => { resolve = res; });
  const settle = (isError, value) => {
    if (inv.settled) return;
    inv.settled = true;
    resolve({ isError, value });
  };
  const done = (err, result) => settle(err !== undefined && err !== null, err ?? result);
  const deadline = Number(next.headers['lambda-runtime-deadline-ms']) || 0;
  const context = {
    awsRequestId: inv.id,
    invokedFunctionArn: next.headers['lambda-runtime-invoked-function-arn'],
    functionName: env.AWS_LAMBDA_FUNCTION_NAME,
    functionVersion: env.AWS_LAMBDA_FUNCTION_VERSION,
    memoryLimitInMB: env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    logGroupName: env.AWS_LAMBDA_LOG_GROUP_NAME,
    logStreamName: env.AWS_LAMBDA_LOG_STREAM_NAME,
    identity: parseJsonHeader(next.headers['lambda-runtime-cognito-identity']),
    clientContext: parseJsonHeader(next.headers['lambda-runtime-client-context']),
    // The verified end user of a client's call (`callable: true`).
    get auth() { return this.clientContext?.custom?.auth ?? null; },
    callbackWaitsForEmptyEventLoop: true,
    // This event's trace context, also when several run at once.
    traceparent: next.headers['lambda-runtime-traceparent'],
    getRemainingTimeInMillis: () => Math.max(deadline - Date.now(), 0),
    // Legacy API: settles immediately, regardless of the event loop.
    done,
    succeed: (result) => done(null, result),
    fail: (err) => settle(true, err),
  };
  // callback(err, result): like Lambda, by default the result is only sent
  // once the event loop is empty (all timers/sockets the handler started).
  const callback = (err, result) => {
    if (inv.settled || inv.callbackCalled) return;
    inv.callbackCalled = true;
    // With several events at once the loop is never empty: no waiting.
    if (context.callbackWaitsForEmptyEventLoop && !events) process.once('beforeExit', () => done(err, result));
    else done(err, result);
  };

  let event;
  try {
    event = JSON.parse(next.body);
  } catch (err) {
    settle(true, new RuntimeError('Runtime.UnmarshalError', `Unable to unmarshal input: ${err.message}`));
    return outcome;
  }
  let ret;
  try {
    ret = handler(event, context, callback);
  } catch (err) {
    settle(true, err);
    return outcome;
  }
  if (ret && typeof ret.then === 'function') {
    ret.then((result) => !inv.callbackCalled && settle(false, result),
      (err) => !inv.callbackCalled && settle(true, err));
  } else if (handler.length < 3) {
    settle(false, ret);
  }
  return outcome;
}

async function invoke(handler, next) {
  const inv = { id: next.headers['lambda-runtime-aws-request-id'], settled: false, callbackCalled: false };
  inFlight.add(inv);
  try {
    await invokeOne(handler, next, inv);
  } finally {
    inFlight.delete(inv);
  }
}

async function invokeOne(handler, next, inv) {
  if (!events) {
    // The environment is the process's: it names the event only when one
    // runs at a time.
    currentRequestId = inv.id;
    // OpenTelemetry SDKs read TRACEPARENT from it.
    const trace = next.headers['lambda-runtime-trace-id'];
    if (trace) env._X_AMZN_TRACE_ID = trace;
    else delete env._X_AMZN_TRACE_ID;
    const traceparent = next.headers['lambda-runtime-traceparent'];
    if (traceparent) env.TRACEPARENT = traceparent;
    else delete env.TRACEPARENT;
  }
  if (handler[STREAMING] === 'response') {
    await invokeStreaming(handler, next, inv);
    endLines(inv.id);
    return;
  }

  const outcome = await runHandler(handler, inv, next);
  let payload;
  let error = outcome.isError ? toErrorBody(outcome.value) : null;
  if (!error) {
    try {
      payload = JSON.stringify(outcome.value === undefined ? null : outcome.value) ?? 'null';
    } catch (err) {
      error = { errorType: 'Runtime.MarshalError', errorMessage: `Unable to marshal response: ${err.message}`,
        stackTrace: [] };
    }
  }
  if (error) logError(error);
  endLines(inv.id);
  inv.posting = flushStdio().then(async () => {
    const posted = error
      ? await postThenNext(`/invocation/${inv.id}/error`, JSON.stringify(error),
        { 'Lambda-Runtime-Function-Error-Type': 'Unhandled' })
      : await postThenNext(`/invocation/${inv.id}/response`, payload);
    prefetchedNext = posted.next;
  });
  await inv.posting;
}

// An uncaught exception or unhandled rejection is fatal, as on Lambda: report
// it against the init phase or the in-flight invocation, then exit(1).
let dying = false;
async function onFatal(err, isRejection) {
  if (dying) return;
  dying = true;
  const error = isRejection
    ? { ...toErrorBody(err, 'Runtime.UnhandledPromiseRejection'),
      errorMessage: err instanceof Error ? `${err.name}: ${err.message}` : safeString(err) }
    : toErrorBody(err);
  logError(error);
  try {
    if (phase === 'init') {
      await postInitError(error);
    }
    // Every event in flight fails with it: the process ends.
    await Promise.all([...inFlight].map((inv) => {
      if (inv.stream && !inv.settled) {
        inv.settled = true;
        return failStream(inv, error);
      }
      if (!inv.settled) {
        inv.settled = true;
        return postInvokeError(inv.id, error);
      }
      return inv.posting; // let the already-settled invocation's POST finish
    }));
  } finally {
    process.exit(1);
  }
}
process.on('uncaughtException', (err) => onFatal(err, false));
process.on('unhandledRejection', (reason) => onFatal(reason, true));

// ---------------------------------------------------------------------------
// `stratus profile`: SIGUSR2 starts V8's CPU profiler, a second SIGUSR2
// stops it and writes the samples as folded stacks (`outer;inner COUNT`) to
// /tmp/stratus-profile-PID.folded, whole and then renamed, for the platform
// to read. A profile that nobody stops ends by itself, unwritten. The signal
// is handled between events: a handler busy in one synchronous call for the
// whole window shows as one late start.
// ---------------------------------------------------------------------------
const PROFILE_INTERVAL_US = 10000;
const PROFILE_LIMIT_MS = 330 * 1000;
let profiling = null;

function foldProfile(profile) {
  const parent = new Map();
  const byId = new Map();
  for (const node of profile.nodes) {
    byId.set(node.id, node);
    for (const child of node.children || []) parent.set(child, node.id);
  }
  const frame = ({ callFrame: f }) => {
    const name = f.functionName || '(anonymous)';
    if (!f.url) return name;
    const file = f.url.startsWith('node:') ? f.url : path.basename(f.url);
    return `${name} (${file}:${f.lineNumber + 1})`;
  };
  const stacks = new Map();
  const stackOf = (id) => {
    if (stacks.has(id)) return stacks.get(id);
    const node = byId.get(id);
    const up = parent.has(id) ? stackOf(parent.get(id)) : '';
    const name = node.callFrame.functionName === '(root)' ? '' : frame(node).replace(/;/g, ':');
    const stack = up && name ? `${up};${name}` : up || name;
    stacks.set(id, stack);
    return stack;
  };
  const counts = new Map();
  for (const id of profile.samples || []) {
    const name = byId.get(id).callFrame.functionName;
    if (name === '(idle)') continue;
    const stack = stackOf(id) || '(program)';
    counts.set(stack, (counts.get(stack) || 0) + 1);
  }
  return Array.from(counts, ([stack, n]) => `${stack} ${n}\n`).join('');
}

function stopProfile(keep) {
  const { session, timer } = profiling;
  profiling = null;
  clearTimeout(timer);
  session.post('Profiler.stop', (err, result) => {
    session.disconnect();
    if (err || !keep) return;
    const out = `/tmp/stratus-profile-${process.pid}.folded`;
    try {
      fs.writeFileSync(`${out}.part`, foldProfile(result.profile));
      fs.renameSync(`${out}.part`, out);
    } catch (e) {
      process.stderr.write(`stratus-runtime: cannot write the profile: ${e.message}\n`);
    }
  });
}

process.on('SIGUSR2', () => {
  if (profiling) return stopProfile(true);
  const session = new (require('inspector').Session)();
  session.connect();
  session.post('Profiler.enable');
  session.post('Profiler.setSamplingInterval', { interval: PROFILE_INTERVAL_US });
  session.post('Profiler.start');
  const timer = setTimeout(() => stopProfile(false), PROFILE_LIMIT_MS);
  timer.unref();
  profiling = { session, timer };
});

// `stratus dev --debug`: the inspector listens on 127.0.0.1:PORT before the
// handler loads, for a debugger (the Chrome DevTools protocol) to attach.
function listenForDebugger(port) {
  if (!port) return;
  require('inspector').open(Number(port), '127.0.0.1', false);
  process.stderr.write(`stratus-runtime: the inspector listens on ${require('inspector').url()}\n`);
}

async function main() {
  if (env.STRATUS_ACTIVATION_FD !== undefined) {
    if (env.STRATUS_PRESTARTED) await prime();
    awaitActivation();
  }
  configureLogging();
  concurrency = Math.max(1, Number.parseInt(env.AWS_LAMBDA_MAX_CONCURRENCY, 10) || 1);
  if (concurrency > 1) {
    events = new (require('async_hooks').AsyncLocalStorage)();
    markStream(process.stdout, partialLines[0]);
    markStream(process.stderr, partialLines[1]);
  }
  useApi(env.AWS_LAMBDA_RUNTIME_API || fatal('AWS_LAMBDA_RUNTIME_API is not set'));
  let handler;
  const started = process.hrtime.bigint();
  try {
    listenForDebugger(env.STRATUS_DEBUG_PORT);
    handler = await loadHandler(env._HANDLER || '');
  } catch (err) {
    if (dying) return; // an unhandled rejection is already being reported
    dying = true;
    const error = initErrorBody(err);
    logError(error);
    await postInitError(error);
    process.exit(1);
  }
  // Let rejections left unhandled by module-level code surface as init errors.
  await new Promise((resolve) => setImmediate(resolve));
  if (dying) return;
  phase = 'invoke';
  // The platform reports the user's own init apart from the runtime's start.
  let headers = { 'Stratus-Handler-Init-Ms': (Number(process.hrtime.bigint() - started) / 1e6).toFixed(3) };
  if (events) {
    // Several at once: as many loops, each with its own long poll.
    const lane = async () => {
      for (;;) {
        const next = await apiRequest('GET', '/invocation/next', undefined, headers);
        if (next.status !== 200) fatal(`GET /invocation/next failed with HTTP ${next.status}: ${next.body}`);
        const id = next.headers['lambda-runtime-aws-request-id'];
        await events.run({ id }, () => invoke(handler, next));
      }
    };
    await Promise.all(Array.from({ length: concurrency }, lane));
    return;
  }
  for (;;) {
    let next = prefetchedNext && await prefetchedNext.catch(() => null);
    prefetchedNext = null;
    if (!next) next = await apiRequest('GET', '/invocation/next', undefined, headers);
    headers = undefined;
    if (next.status !== 200) fatal(`GET /invocation/next failed with HTTP ${next.status}: ${next.body}`);
    await invoke(handler, next);
  }
}

main().catch((err) => fatal(`internal error: ${err && err.stack}`));
