"""A two-service chain for end-to-end tests. It contains no tracing code at all.

frontend PORT BACKEND_PORT          GET /checkout?id=N -> GET http://127.0.0.1:BACKEND/order/N
backend PORT PG_PORT REDIS_PORT     GET /order/N -> PostgreSQL SELECT + Redis GET
Each prints "ready" once listening.
"""
import http.client
import http.server
import json
import sys
import urllib.parse


class Quiet(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def frontend(port, backend_port):
    class H(Quiet):
        def do_GET(self):
            url = urllib.parse.urlparse(self.path)
            if url.path != "/checkout":
                return self.reply(404, {"error": "not found"})
            oid = urllib.parse.parse_qs(url.query).get("id", ["0"])[0]
            conn = http.client.HTTPConnection("127.0.0.1", backend_port, timeout=10)
            conn.request("GET", "/order/%s" % oid)
            resp = conn.getresponse()
            body = json.loads(resp.read() or b"{}")
            conn.close()
            self.reply(resp.status, {"checkout": body})

    serve(port, H)


def backend(port, pg_port, redis_port):
    import psycopg2
    import redis

    class H(Quiet):
        def do_GET(self):
            parts = self.path.split("/")
            if len(parts) != 3 or parts[1] != "order":
                return self.reply(404, {"error": "not found"})
            oid = int(parts[2])
            db = psycopg2.connect(host="127.0.0.1", port=pg_port, user="postgres", dbname="app", sslmode="disable")
            db.autocommit = True
            cur = db.cursor()
            cur.execute("SELECT id, item FROM orders WHERE id = %s", (oid,))
            row = cur.fetchone()
            db.close()
            r = redis.Redis(host="127.0.0.1", port=redis_port)
            stock = r.get("stock:%d" % oid)
            r.close()
            if row is None:
                return self.reply(500, {"error": "no such order"})
            self.reply(200, {"id": row[0], "item": row[1], "stock": (stock or b"").decode()})

    serve(port, H)


def serve(port, handler):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    print("ready", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    role = sys.argv[1]
    if role == "frontend":
        frontend(int(sys.argv[2]), int(sys.argv[3]))
    else:
        backend(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
