"""A gRPC server and client from another ecosystem (Python grpcio), for the end-to-end test in
tests/grpc.rs. Messages are raw bytes (generic handlers), so no code generation is needed.

  peer.py server          serves on 127.0.0.1, prints "PORT <n>", runs until stdin closes
  peer.py client <addr> [<ca.pem> <name>]
                          runs every call through <addr>, prints one JSON object, exits 0;
                          with a CA file, over a secure channel that checks the server's
                          certificate against it for <name>
"""
import json
import sys
from concurrent import futures

import grpc

SERVICE = "test.Echo"


def metadata(context, key):
    return dict(context.invocation_metadata()).get(key, "")


def unary(request, context):
    return b"unary:" + request + b" from " + metadata(context, "x-forwarded-for").encode()


def server_stream(request, context):
    for i in range(int(request)):
        yield b"item %d" % i


def bidi(requests, context):
    for r in requests:
        yield b"echo:" + r


def fail(request, context):
    context.set_trailing_metadata([("grpc-status-details-bin", b"\x08\x03\x12\x09bad thing")])
    context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad thing")


def serve():
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print("PORT %d" % port, flush=True)
    sys.stdin.read()
    server.stop(0)


def channel_to(target, tls):
    if not tls:
        return grpc.insecure_channel(target)
    ca_file, name = tls
    with open(ca_file, "rb") as f:
        credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
    return grpc.secure_channel(target, credentials, options=(("grpc.ssl_target_name_override", name),))


def client(target, tls):
    out = {}
    with channel_to(target, tls) as channel:
        call = lambda kind, name: getattr(channel, kind)("/%s/%s" % (SERVICE, name))
        out["unary"] = call("unary_unary", "Unary")(b"hello", timeout=10).decode()
        out["server_stream"] = [m.decode() for m in call("unary_stream", "ServerStream")(b"3", timeout=10)]
        out["bidi"] = [m.decode() for m in call("stream_stream", "Bidi")(iter([b"a", b"b", b"c"]), timeout=10)]
        try:
            call("unary_unary", "Fail")(b"x", timeout=10)
            out["fail"] = "no error"
        except grpc.RpcError as e:
            details = dict(e.trailing_metadata() or ()).get("grpc-status-details-bin", b"")
            out["fail"] = {"code": e.code().name, "details": e.details(), "status_details": details.hex()}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve()
    else:
        client(sys.argv[2], sys.argv[3:5])
