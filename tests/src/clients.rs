//! Client programs the tests run against real servers.

/// Keep-alive HTTP/1.1 client: `conns` connections in threads, `per_conn` requests each, every
/// request to its own path `/r/<conn>-<n>` so a span can only match its own request.
pub const KEEPALIVE_PATH_CLIENT: &str = r#"
import http.client, sys, threading
port, conns, per_conn = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
bad = []
def run(c):
    h = http.client.HTTPConnection("127.0.0.1", port)
    for n in range(per_conn):
        path = "/r/%d-%d" % (c, n)
        h.request("GET", path)
        r = h.getresponse()
        body = r.read().decode()
        if r.status != 200 or body != path:
            bad.append((path, r.status, body))
ts = [threading.Thread(target=run, args=(c,)) for c in range(conns)]
for t in ts: t.start()
for t in ts: t.join()
print("bad", len(bad))
sys.exit(1 if bad else 0)
"#;
