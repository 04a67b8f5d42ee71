// An ordinary Node.js web server, run unchanged as a Stratus service: it
// listens on $PORT and knows nothing of the platform.
const http = require('http');

let served = 0;
const server = http.createServer((req, res) => {
  served += 1;
  console.log(`${req.method} ${req.url}`);
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({
    message: 'Hello from a service',
    path: req.url,
    prefix: req.headers['x-forwarded-prefix'] || null,
    served,
    pid: process.pid,
  }));
});
server.listen(Number(process.env.PORT), () => console.log(`listening on ${process.env.PORT}`));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
