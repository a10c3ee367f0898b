"""Test peer (no tracing code): one TCP socket used for two connections in turn.

reconnect.py PORT: against an HTTP server on PORT, connect, send one request (its path names
the round), read the answer, then dissolve the association with connect(AF_UNSPEC), which
leaves the socket free to connect again; twice, on the same socket and fd.
"""
import ctypes
import socket
import sys


def main(port):
    libc = ctypes.CDLL(None, use_errno=True)
    s = socket.socket()
    for i in range(2):
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET /round%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
        assert s.recv(4096).startswith(b"HTTP/1.1 200"), "no answer"
        unspec = (ctypes.c_ubyte * 16)()  # sa_family 0: AF_UNSPEC
        if libc.connect(s.fileno(), unspec, 16) != 0:
            raise OSError(ctypes.get_errno(), "connect(AF_UNSPEC)")
    s.close()


if __name__ == "__main__":
    main(int(sys.argv[1]))
