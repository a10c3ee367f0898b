"""Test peer for capture tests (no tracing code).

server PORT CHUNK EXPECT [READ]: accept one connection, read EXPECT bytes in reads of CHUNK bytes
with READ (recv: recv(2), the default; read: read(2); readv: readv(2) into two buffers; recvmsg:
recvmsg(2)), reply "ok".
client PORT MODE SIZE [GO_FILE]: connect, optionally wait until GO_FILE exists (the agent started
after the connection), then send SIZE bytes with MODE (writev: three iovecs via os.writev; sendall),
then read the reply.
"""
import os
import socket
import sys
import time


def reader(c, how):
    """One read of up to `chunk` bytes with the syscall `how` names."""
    if how == "read":
        return lambda chunk: os.read(c.fileno(), chunk)
    if how == "readv":
        def readv(chunk):
            first, second = bytearray(chunk // 2), bytearray(chunk - chunk // 2)
            n = os.readv(c.fileno(), [first, second])
            return bytes((first + second)[:n])
        return readv
    if how == "recvmsg":
        return lambda chunk: c.recvmsg(chunk)[0]
    return c.recv


def server(port, chunk, expect, how="recv"):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(4)
    print("listening", flush=True)
    c, _ = ls.accept()
    print("accepted", flush=True)
    read = reader(c, how)
    got = 0
    while got < expect:
        b = read(chunk)
        if not b:
            break
        got += len(b)
    c.sendall(b"ok")
    c.recv(16)
    c.close()
    # Keep listening until stopped: the agent may look at the socket tables after the exchange.
    time.sleep(30)


def client(port, mode, size, go_file=None):
    s = socket.create_connection(("127.0.0.1", port))
    print("connected %d" % s.getsockname()[1], flush=True)
    if go_file:
        while not os.path.exists(go_file):
            time.sleep(0.02)
    body = bytes((i % 26) + 65 for i in range(size))
    if mode == "writev":
        third = size // 3
        parts = [body[:third], body[third:2 * third], body[2 * third:]]
        n = os.writev(s.fileno(), parts)
        if n < size:
            s.sendall(body[n:])
    else:
        s.sendall(body)
    s.recv(16)
    s.close()


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), *sys.argv[5:6])
    else:
        client(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5] if len(sys.argv) > 5 else None)
