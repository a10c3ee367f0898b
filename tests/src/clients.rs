//! Client programs the tests run against real servers, and the traced server they share.

use std::process::Command;

use crate::agent::{Agent, StatsFile};
use crate::env::PYTHON;
use crate::otlp_receiver::OtlpReceiver;
use crate::servers::Nginx;

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

/// nginx answering `/r/<anything>` with its path, traced by an agent that exports over
/// OTLP/gRPC to a receiver and writes its final counters to a stats file.
pub struct TracedPathServer {
    pub agent: Agent,
    pub rx: OtlpReceiver,
    pub nginx: Nginx,
    stats: StatsFile,
    _rt: tokio::runtime::Runtime,
}

impl TracedPathServer {
    /// Start the three, with `extra` flags for `tracewire run`.
    pub fn start(extra: &[&str]) -> TracedPathServer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let rx = rt.block_on(OtlpReceiver::start());
        let nginx = Nginx::start("location /r/ { return 200 \"$uri\"; }");
        let stats = StatsFile::new();
        let endpoint = rx.grpc_endpoint();
        let port = nginx.port.to_string();
        let mut args = vec![
            "run",
            "--endpoint",
            &endpoint,
            "--protocol",
            "grpc",
            "--port",
            &port,
            "--stats-file",
            stats.arg(),
        ];
        args.extend_from_slice(extra);
        let agent = Agent::start(&args, &[], "tracing via");
        TracedPathServer {
            agent,
            rx,
            nginx,
            stats,
            _rt: rt,
        }
    }

    /// Run [`KEEPALIVE_PATH_CLIENT`] against nginx; every response must be its own path.
    pub fn run_client(&self, conns: usize, per_conn: usize) {
        let st = Command::new(PYTHON)
            .arg("-c")
            .arg(KEEPALIVE_PATH_CLIENT)
            .args([
                self.nginx.port.to_string(),
                conns.to_string(),
                per_conn.to_string(),
            ])
            .status()
            .expect("client");
        assert!(st.success(), "the traced client saw a wrong response");
    }

    /// Stop the agent (it flushes) and return its final counters.
    pub fn stop_agent(&mut self) -> serde_json::Value {
        self.agent.terminate();
        self.stats.read()
    }
}
