#!/usr/bin/env python3
"""Recording TCP proxy for SQL fixtures: real client -> proxy -> real server.

Every recv() becomes one chunk in the client's view (client->server: role client, egress;
server->client: ingress), written as the fixture JSONL schema `tracewire capture --json` prints.

    record_sql.py LISTEN_PORT SERVER_PORT OUT.jsonl [--max-conns N]

Stops after N connections have closed (default 1), or on SIGTERM.
"""
import base64
import json
import selectors
import signal
import socket
import sys
import time


def main():
    listen_port, server_port, out_path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    max_conns = 1
    if "--max-conns" in sys.argv:
        max_conns = int(sys.argv[sys.argv.index("--max-conns") + 1])
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", listen_port))
    ls.listen(8)
    out = open(out_path, "w")
    sel = selectors.DefaultSelector()
    sel.register(ls, selectors.EVENT_READ, None)
    conns = {}
    closed = 0
    next_id = [1]
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))

    def emit(c, direction, data, t0, t1):
        ev = {
            "kind": "data", "pid": 1, "tid": 1, "fd": 3, "conn_id": c["id"],
            "role": "client", "family": "inet",
            "local_addr": "127.0.0.1", "local_port": c["cport"],
            "remote_addr": "127.0.0.1", "remote_port": server_port,
            "direction": direction, "bytes": len(data), "captured": len(data),
            "truncated": False, "ts_enter_ns": t0, "ts_exit_ns": t1,
            "payload_b64": base64.b64encode(data).decode(),
        }
        out.write(json.dumps(ev) + "\n")
        out.flush()

    while not stop[0] and closed < max_conns:
        for key, _ in sel.select(timeout=0.5):
            if key.data is None:
                cs, addr = ls.accept()
                ss = socket.create_connection(("127.0.0.1", server_port))
                c = {"id": next_id[0], "cport": addr[1], "cs": cs, "ss": ss}
                next_id[0] += 1
                conns[cs] = c
                sel.register(cs, selectors.EVENT_READ, ("client", c))
                sel.register(ss, selectors.EVENT_READ, ("server", c))
                continue
            side, c = key.data
            src = c["cs"] if side == "client" else c["ss"]
            dst = c["ss"] if side == "client" else c["cs"]
            t0 = time.time_ns()
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            t1 = time.time_ns()
            if not data:
                for s in (c["cs"], c["ss"]):
                    try:
                        sel.unregister(s)
                    except (KeyError, ValueError):
                        pass
                    s.close()
                conns.pop(c["cs"], None)
                closed += 1
                continue
            emit(c, "egress" if side == "client" else "ingress", data, t0, t1)
            dst.sendall(data)
    out.close()


if __name__ == "__main__":
    main()
