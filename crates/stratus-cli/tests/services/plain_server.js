// A dependency-free Node HTTP server on process.env.PORT; prints one line
// per request to stdout.
const crypto = require('crypto');
const http = require('http');

// Tells this process from the one that replaces it.
const boot = crypto.randomUUID();

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  const id = req.headers['x-stratus-request-id'] || '-';
  console.log(`served ${req.method} ${url.pathname} request=${id} boot=${boot}`);
  const reply = (status, body) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  if (url.pathname === '/crash') {
    console.error(`crashing on purpose, request=${id}`);
    process.exit(1);
  } else if (url.pathname === '/upload') {
    let size = 0;
    req.on('data', (chunk) => { size += chunk.length; });
    req.on('end', () => reply(200, { size }));
  } else if (url.pathname === '/slow') {
    setTimeout(() => reply(200, { slept: true, boot }), Number(url.searchParams.get('ms') || 1000));
  } else {
    reply(200, {
      path: url.pathname,
      boot,
      version: process.env.VERSION || null,
      prefix: req.headers['x-forwarded-prefix'] || null,
    });
  }
});
server.keepAliveTimeout = 65000;
// START_DELAY_MS: a slow start, for requests that wait for one.
setTimeout(
  () => server.listen(Number(process.env.PORT), '0.0.0.0', () => console.log(`plain listening on ${process.env.PORT}`)),
  Number(process.env.START_DELAY_MS || 0),
);
