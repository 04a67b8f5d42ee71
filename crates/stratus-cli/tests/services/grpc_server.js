// A plain gRPC server (@grpc/grpc-js, insecure h2c) on process.env.PORT.
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');

const proto = grpc.loadPackageDefinition(loader.loadSync(`${__dirname}/greeter.proto`, { keepCase: true, defaults: true })).demo;
const server = new grpc.Server();
server.addService(proto.Greeter.service, {
  Hello(call, callback) {
    const trailer = new grpc.Metadata();
    trailer.set('x-done', 'yes');
    callback(null, {
      message: `hello ${call.request.name}`,
      request_id: String(call.metadata.get('x-stratus-request-id')[0] || ''),
      client_header: String(call.metadata.get('x-client')[0] || ''),
      authority: call.getHost(),
    }, trailer);
  },
  async Count(call) {
    for (let n = 1; n <= call.request.upto; n++) {
      call.write({ n });
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    call.end();
  },
  Fail(call, callback) {
    const trailer = new grpc.Metadata();
    trailer.set('x-why', `because ${call.request.name}`);
    trailer.set('x-detail-bin', Buffer.from([0, 1, 2, 255]));
    callback({ code: grpc.status.FAILED_PRECONDITION, details: 'not today', metadata: trailer });
  },
});
server.bindAsync(`0.0.0.0:${process.env.PORT}`, grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) {
    console.error(err);
    process.exit(1);
  }
  console.log(`grpc listening on ${port}`);
});
