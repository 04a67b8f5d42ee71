// A WebSocket client (npm `ws`) driven by lines on stdin, reporting every
// event as one JSON line on stdout:
//   stdin:  "text STRING" | "binary HEX" | "ping HEX" | "close CODE"
//   stdout: {"ev":"open"} {"ev":"text","data":..} {"ev":"binary","hex":..}
//           {"ev":"pong","hex":..} {"ev":"close","code":N,"reason":..}
//           {"ev":"error",..} {"ev":"socket-error","code":..} {"ev":"socket-end"}
const WebSocket = require('ws');
const readline = require('readline');

const started = Date.now();
const emit = (event) => process.stdout.write(JSON.stringify({ ...event, ms: Date.now() - started }) + '\n');
const headers = {};
for (const h of process.argv.slice(3)) {
  const i = h.indexOf(':');
  headers[h.slice(0, i).trim()] = h.slice(i + 1).trim();
}
const ws = new WebSocket(process.argv[2], { headers, handshakeTimeout: 20000 });
let pending = [];
ws.on('open', () => {
  emit({ ev: 'open' });
  const queued = pending;
  pending = null;
  queued.forEach(run);
  ws._socket.on('error', (e) => emit({ ev: 'socket-error', code: e.code || String(e) }));
  ws._socket.on('end', () => emit({ ev: 'socket-end' }));
});
ws.on('unexpected-response', (req, res) => {
  // The body says why the gateway refused.
  const chunks = [];
  res.on('data', (chunk) => chunks.push(chunk));
  res.on('end', () => {
    emit({ ev: 'unexpected-response', status: res.statusCode, body: Buffer.concat(chunks).toString() });
    process.exit(2);
  });
});
ws.on('message', (data, isBinary) => {
  if (isBinary) emit({ ev: 'binary', hex: Buffer.from(data).toString('hex') });
  else emit({ ev: 'text', data: data.toString() });
});
ws.on('pong', (data) => emit({ ev: 'pong', hex: Buffer.from(data).toString('hex') }));
ws.on('error', (e) => emit({ ev: 'error', message: String(e && e.message), code: e && e.code }));
ws.on('close', (code, reason) => {
  emit({ ev: 'close', code, reason: reason.toString() });
  process.exit(0);
});

function run(line) {
  const i = line.indexOf(' ');
  const [cmd, arg] = i < 0 ? [line, ''] : [line.slice(0, i), line.slice(i + 1)];
  try {
    if (cmd === 'text') ws.send(arg);
    else if (cmd === 'binary') ws.send(Buffer.from(arg, 'hex'), { binary: true });
    else if (cmd === 'ping') ws.ping(Buffer.from(arg, 'hex'));
    else if (cmd === 'close') ws.close(Number(arg) || 1000);
  } catch (e) {
    emit({ ev: 'error', message: String(e.message) });
  }
}
// Commands given before the connection is open wait for it.
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  if (pending) pending.push(line);
  else run(line);
});
