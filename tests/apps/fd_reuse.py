"""Test peer for the fd cache (no tracing code): a socket fd that is replaced without close()
must not make the file now behind that fd number look like the socket.

fd_reuse.py PORT FILE: against an HTTP server on PORT, for each way a process can replace an fd
behind close() (dup2, close_range, exec), use a socket on some fd, replace it with FILE, and read
FILE through the same fd number with read().
"""
import os
import socket
import subprocess
import sys


def use_socket(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /before HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
    s.recv(4096)
    return s


def read_all(fd):
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 4096)


def main(port, path):
    # dup2: the file replaces the socket's fd number.
    s = use_socket(port)
    fd = s.fileno()
    f = os.open(path, os.O_RDONLY)
    os.dup2(f, fd)
    assert b"FILE-CONTENT" in read_all(fd)
    os.close(f)
    os.close(fd)
    s.detach()

    # close_range: the socket's fd disappears without close(); open() reuses the number.
    s = use_socket(port)
    fd = s.fileno()
    os.closerange(fd, fd + 1)
    s.detach()
    f = os.open(path, os.O_RDONLY)
    assert f == fd, (f, fd)
    assert b"FILE-CONTENT" in read_all(f)
    os.close(f)

    # exec: a close-on-exec socket vanishes in the new program, which opens the file on its fd.
    s = use_socket(port)
    fd = s.fileno()
    os.set_inheritable(fd, False)
    code = (
        "import os,sys; fd=int(sys.argv[1]); f=os.open(sys.argv[2], os.O_RDONLY); "
        "assert f == fd, (f, fd); os.lseek(f,0,0); assert b'FILE-CONTENT' in os.read(f, 4096)"
    )
    # The child is a fork of this process (same fds), then exec (the socket closes on exec).
    pid = os.fork()
    if pid == 0:
        # Close the lower fds the new program would otherwise not have free, so its first open()
        # lands on the socket's number.
        for low in range(3, fd):
            try:
                os.close(low)
            except OSError:
                pass
        os.execv(sys.executable, [sys.executable, "-c", code, str(fd), path])
    _, status = os.waitpid(pid, 0)
    assert status == 0, status
    s.close()
    print("done", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
