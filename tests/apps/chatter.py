"""Speaks an unknown binary protocol: a server echoing, a client sending N small messages.
No tracing code.

server PORT          accept connections, echo every read
client PORT N [MS]   N request/response round trips of 16 opaque bytes, MS apart
push PORT N [MS]     N messages of 16 opaque bytes one way (the server only reads), MS apart
"""
import socket
import sys
import threading
import time


def serve(c):
    while True:
        b = c.recv(4096)
        if not b:
            break
        # A message starting with 0x18 is pushed one way: no reply.
        if b[0] != 0x18:
            c.sendall(b)
    c.close()


def server(port):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(8)
    print("ready", flush=True)
    while True:
        c, _ = ls.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


def client(port, n, pause_ms):
    s = socket.create_connection(("127.0.0.1", port))
    for i in range(n):
        time.sleep(pause_ms / 1000.0)
        s.sendall(bytes([0x17, 0x03, 0x03, 0, 11]) + bytes([i % 256]) * 11)
        s.recv(4096)
    s.close()


def push(port, n, pause_ms):
    s = socket.create_connection(("127.0.0.1", port))
    for i in range(n):
        time.sleep(pause_ms / 1000.0)
        s.sendall(bytes([0x18, 0x03, 0x03, 0, 11]) + bytes([i % 256]) * 11)
    s.close()


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(int(sys.argv[2]))
    elif sys.argv[1] == "push":
        push(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 0)
    else:
        client(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 0)
