"""Test peer (no tracing code): one connection kept across more TCP connections than any map
of the agent's could hold.

many_sockets.py PORT COUNT: serves one echo connection on PORT, then has child processes open
COUNT connections to listeners of their own (one byte sent on each, so each is in use; both
ends stay open; a process may hold only so many fds), then uses the first connection again.
Prints "probe PORT" once the probe connection is up, "opened N" after the flood (N counts
only what the children opened), and "done" at the end; waits for a line on stdin before each
of the last two steps so the caller can look in between.
"""
import os
import resource
import socket
import struct
import sys
import traceback


def hold_connections(count, ready_w):
    """In a child: `count` connections to a listener of its own, held until stdin closes.
    Reports how many it opened (0 when it failed) on `ready_w`."""
    try:
        ends = open_connections(count)
    except BaseException:
        traceback.print_exc()
        os.write(ready_w, b"0\n")
        os._exit(1)
    os.write(ready_w, b"%d\n" % (len(ends) // 2))
    os.read(0, 1)  # the parent exits or closes our stdin
    os._exit(0)


def open_connections(count):
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(4096)
    ls.setblocking(False)
    ends = []
    for i in range(count):
        c = socket.socket()
        # Closed with a reset at the end: no TIME_WAIT left behind.
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.connect(ls.getsockname())
        c.send(b"x")
        ends.append(c)
        if i % 1000 == 999 or i == count - 1:
            while True:
                try:
                    ends.append(ls.accept()[0])
                except BlockingIOError:
                    break
    return ends


def exchange(client, server, word):
    client.sendall(word)
    got = server.recv(64)
    server.sendall(got)
    assert client.recv(64) == word, "echo"


def main(port, count):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    per_child = max(1, (hard - 64) // 2)
    probe = socket.socket()
    probe.bind(("127.0.0.1", port))
    probe.listen(1)
    print("probe", probe.getsockname()[1], flush=True)
    client = socket.create_connection(probe.getsockname())
    server, _ = probe.accept()
    exchange(client, server, b"ping-before")

    ready_r, ready_w = os.pipe()
    children = []
    left = count
    while left > 0:
        n = min(per_child, left)
        left -= n
        stdin_r, stdin_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.dup2(stdin_r, 0)
            # Only the parent may hold a child's stdin open, or it never ends.
            for _, w in children:
                os.close(w)
            os.close(stdin_w)
            hold_connections(n, ready_w)
        os.close(stdin_r)
        children.append((pid, stdin_w))
    os.close(ready_w)  # a child that dies unreported ends the count instead of hanging it
    with os.fdopen(ready_r) as ready:
        opened = sum(int(ready.readline() or 0) for _ in children)
    print("opened", opened, flush=True)
    sys.stdin.readline()

    exchange(client, server, b"ping-after")
    print("done", flush=True)
    sys.stdin.readline()
    for pid, stdin_w in children:
        os.close(stdin_w)
        os.waitpid(pid, 0)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
