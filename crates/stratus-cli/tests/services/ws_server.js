// A plain WebSocket echo server (npm `ws`) on process.env.PORT.
const http = require('http');
const { WebSocketServer } = require('ws');

const version = process.env.VERSION || 'none';
const server = http.createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain' });
  res.end(`plain http, version ${version}\n`);
});
const wss = new WebSocketServer({ server });
wss.on('connection', (socket, req) => {
  console.log(`ws open ${req.url}`);
  socket.on('message', (data, isBinary) => {
    if (isBinary) {
      socket.send(data, { binary: true });
    } else if (data.toString() === 'info') {
      socket.send(JSON.stringify({
        version,
        url: req.url,
        host: req.headers.host,
        prefix: req.headers['x-forwarded-prefix'] || null,
      }));
    } else {
      socket.send(`${version}:${data}`);
    }
  });
  socket.on('close', (code) => console.log(`ws closed ${code}`));
});
server.listen(Number(process.env.PORT), '0.0.0.0', () => console.log(`ws listening on ${process.env.PORT}`));
