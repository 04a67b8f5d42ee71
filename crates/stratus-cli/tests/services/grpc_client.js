// A gRPC client (@grpc/grpc-js, h2c): `node grpc_client.js HOST:PORT AUTHORITY PROTO`.
// Makes a unary call, a server-streaming call and a failing call, and prints
// what it got as one JSON object.
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');

const [target, authority, protoPath] = process.argv.slice(2);
const proto = grpc.loadPackageDefinition(loader.loadSync(protoPath, { keepCase: true, defaults: true })).demo;
const options = authority ? { 'grpc.default_authority': authority } : {};
const client = new proto.Greeter(target, grpc.credentials.createInsecure(), options);
const deadline = () => new Date(Date.now() + 20000);
const plain = (md) => {
  const out = {};
  for (const [k, v] of Object.entries(md ? md.getMap() : {})) {
    out[k] = Buffer.isBuffer(v) ? `hex:${v.toString('hex')}` : v;
  }
  return out;
};

function hello() {
  return new Promise((resolve) => {
    const md = new grpc.Metadata();
    md.set('x-client', 'grpc-js');
    let trailers = null;
    const call = client.Hello({ name: 'ada' }, md, { deadline: deadline() }, (err, reply) => {
      setImmediate(() => resolve({ error: err ? `${err.code} ${err.details}` : null, reply, trailers }));
    });
    call.on('status', (status) => { trailers = plain(status.metadata); });
  });
}

function count() {
  return new Promise((resolve) => {
    const got = [];
    const call = client.Count({ upto: 5 }, { deadline: deadline() });
    call.on('data', (m) => got.push(m.n));
    call.on('error', (err) => resolve({ got, error: `${err.code} ${err.details}` }));
    call.on('status', (status) => { if (status.code === 0) resolve({ got, code: status.code }); });
  });
}

function fail() {
  return new Promise((resolve) => {
    client.Fail({ name: 'bob' }, { deadline: deadline() }, (err) => {
      resolve(err
        ? { code: err.code, details: err.details, trailers: plain(err.metadata) }
        : { code: 0 });
    });
  });
}

(async () => {
  const result = { hello: await hello(), count: await count(), fail: await fail() };
  process.stdout.write(JSON.stringify(result) + '\n');
  client.close();
  process.exit(0);
})();
