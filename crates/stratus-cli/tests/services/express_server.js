// A plain Express app, unaware of Stratus: listens on process.env.PORT.
const express = require('express');
const app = express();
app.use(express.json());

app.get('/healthz', (req, res) => res.send('ok'));

app.get('/api/items/:id', (req, res) => {
  res.json({ id: req.params.id, q: req.query.q, path: req.path, host: req.headers.host });
});
app.post('/api/items', (req, res) => res.status(201).json({ got: req.body }));

// Three events 300 ms apart; each reports when it was written.
app.get('/events', async (req, res) => {
  res.writeHead(200, {
    'content-type': 'text/event-stream',
    'cache-control': 'no-cache',
    connection: 'keep-alive',
  });
  res.flushHeaders();
  for (let i = 0; i < 3; i++) {
    res.write(`data: ${JSON.stringify({ n: i, at: Date.now() })}\n\n`);
    if (i < 2) await new Promise((resolve) => setTimeout(resolve, 300));
  }
  res.end();
});

app.listen(Number(process.env.PORT), '0.0.0.0', () => console.log(`express listening on ${process.env.PORT}`));
