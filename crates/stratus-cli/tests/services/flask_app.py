# A plain Flask app, unaware of Stratus: run by gunicorn on $PORT.
import hashlib
import os

from flask import Flask, jsonify, request

app = Flask(__name__)

SEEN = ("host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
        "x-forwarded-prefix", "forwarded", "x-stratus-request-id")


@app.route("/info/<path:rest>", methods=["GET"])
def info(rest):
    print(f"flask saw {request.method} {request.path} "
          f"request={request.headers.get('x-stratus-request-id', '-')}", flush=True)
    return jsonify(
        path=request.path,
        rest=rest,
        query=request.args.to_dict(flat=False),
        headers={k: request.headers.get(k) for k in SEEN},
        pid=os.getpid(),
        greeting=os.environ.get("GREETING"),
    )


@app.route("/sha256", methods=["POST", "PUT"])
def sha256():
    digest = hashlib.sha256()
    size = 0
    while True:
        chunk = request.stream.read(65536)
        if not chunk:
            break
        size += len(chunk)
        digest.update(chunk)
    return jsonify(
        sha256=digest.hexdigest(),
        size=size,
        transfer_encoding=request.headers.get("transfer-encoding"),
        content_length=request.headers.get("content-length"),
    )
