#!/usr/bin/env python3
"""Records the gRPC metadata official RocketMQ clients send, to check the signature vectors.

    python3 capture-headers.py PORT OUT.jsonl     # needs grpcio (pip install grpcio)

Listens on 127.0.0.1:PORT (plaintext h2c), appends one JSON line per call (method, metadata,
server_time in epoch seconds) and answers UNIMPLEMENTED, so a client started with credentials
against it sends its first call (QueryRoute or Telemetry) and fails. The captured headers in
src/authn.rs (CAPTURED) were recorded this way. A developer tool, not part of the test suite.
"""
import json
import sys
import time
from concurrent import futures

import grpc


class Recorder(grpc.GenericRpcHandler):
    def __init__(self, out):
        self.out = out

    def service(self, details):
        metadata = [(k, v if isinstance(v, str) else v.hex()) for k, v in details.invocation_metadata]
        record = {"method": details.method, "metadata": metadata, "server_time": time.time()}
        self.out.write(json.dumps(record) + "\n")
        self.out.flush()

        def refuse(_request, context):
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "header capture only")

        if details.method.endswith(("/Telemetry", "/ReceiveMessage", "/PullMessage")):
            return grpc.stream_stream_rpc_method_handler(refuse)
        return grpc.unary_unary_rpc_method_handler(refuse)


def main():
    port, path = sys.argv[1], sys.argv[2]
    with open(path, "a") as out:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=[Recorder(out)])
        server.add_insecure_port("127.0.0.1:" + port)
        server.start()
        server.wait_for_termination()


if __name__ == "__main__":
    main()
