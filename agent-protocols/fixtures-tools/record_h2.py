#!/usr/bin/env python3
"""Recording TCP proxy: real client -> proxy -> real server.

Every recv() becomes one chunk in the client's view, written as one JSON line in the fixture
format of agent-protocols/tests/fixtures (client->server = role client, direction egress;
server->client = ingress). Records the connections it accepts until --conns have closed or
--timeout seconds pass, then exits.

usage: record_h2.py --listen 127.0.0.1:PORT --upstream 127.0.0.1:PORT --out FILE [--conns N]
"""
import argparse
import base64
import json
import socket
import threading
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--conns", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=60)
    a = ap.parse_args()
    lh, lp = a.listen.rsplit(":", 1)
    uh, up = a.upstream.rsplit(":", 1)
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((lh, int(lp)))
    srv.listen(16)
    srv.settimeout(1)
    lock = threading.Lock()
    out = open(a.out, "w")
    done = []
    t0 = time.monotonic_ns()

    def pump(src, dst, conn_id, direction, cport):
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            now = time.monotonic_ns() - t0
            if not data:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            ev = {
                "kind": "data", "pid": 1, "tid": 1, "fd": 3, "conn_id": conn_id,
                "role": "client", "family": "inet",
                "local_addr": "127.0.0.1", "local_port": cport,
                "remote_addr": uh, "remote_port": int(up),
                "direction": direction, "bytes": len(data), "captured": len(data),
                "truncated": False, "ts_enter_ns": now, "ts_exit_ns": now + 1000,
                "payload_b64": base64.b64encode(data).decode(),
            }
            with lock:
                out.write(json.dumps(ev) + "\n")
                out.flush()
            try:
                dst.sendall(data)
            except OSError:
                return

    def handle(c, conn_id, cport):
        u = socket.create_connection((uh, int(up)))
        ts = [
            threading.Thread(target=pump, args=(c, u, conn_id, "egress", cport)),
            threading.Thread(target=pump, args=(u, c, conn_id, "ingress", cport)),
        ]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        c.close()
        u.close()
        done.append(conn_id)

    conn_id = 0
    deadline = time.monotonic() + a.timeout
    while len(done) < a.conns and time.monotonic() < deadline:
        try:
            c, addr = srv.accept()
        except socket.timeout:
            continue
        conn_id += 1
        threading.Thread(target=handle, args=(c, conn_id, addr[1]), daemon=True).start()
    out.close()


if __name__ == "__main__":
    main()
