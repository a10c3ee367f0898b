"""gRPC greeter server and client (python grpcio, generic handlers, raw bytes: no protoc needed).
No tracing code.

server PORT                 serves helloworld.Greeter/SayHello (NOT_FOUND when name == "missing")
client PORT NAME [N]        N unary calls on one channel, prints the replies
"""
import sys
from concurrent import futures

import grpc


def say_hello(request, context):
    name = request.decode()
    if name == "missing":
        context.abort(grpc.StatusCode.NOT_FOUND, "no such person")
    return ("Hello, " + name).encode()


def server(port):
    s = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.method_handlers_generic_handler(
        "helloworld.Greeter",
        {"SayHello": grpc.unary_unary_rpc_method_handler(say_hello)},
    )
    s.add_generic_rpc_handlers((handler,))
    s.add_insecure_port("127.0.0.1:%d" % port)
    s.start()
    print("ready", flush=True)
    s.wait_for_termination()


def client(port, name, n):
    with grpc.insecure_channel("127.0.0.1:%d" % port) as ch:
        call = ch.unary_unary("/helloworld.Greeter/SayHello")
        for _ in range(n):
            try:
                print(call(name.encode(), timeout=10).decode(), flush=True)
            except grpc.RpcError as e:
                print("error", e.code().name, flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(int(sys.argv[2]))
    else:
        client(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 1)
