//! Listening TCP ports from /proc/net/tcp{,6}: recovers the role of connections that existed
//! before the agent started (a local port that is listening means we are the server).

use std::collections::HashSet;
use std::io::BufRead;
use std::time::{Duration, Instant};

pub struct ListeningPorts {
    ports: HashSet<u16>,
    read_at: Option<Instant>,
    max_age: Duration,
    ephemeral: Option<(u16, u16)>,
}

/// What the tables say about who accepted a connection that predates the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inferred {
    Server,
    Client,
    Unknown,
}

impl Default for ListeningPorts {
    fn default() -> Self {
        Self {
            ports: HashSet::new(),
            read_at: None,
            max_age: Duration::from_secs(1),
            ephemeral: read_ephemeral_range(),
        }
    }
}

impl ListeningPorts {
    pub fn is_listening(&mut self, port: u16) -> bool {
        if self.read_at.is_none_or(|t| t.elapsed() > self.max_age) {
            self.refresh();
        }
        if !self.ports.contains(&port)
            && self
                .read_at
                .is_some_and(|t| t.elapsed() > Duration::from_millis(50))
        {
            // A listener may have appeared since the last read: one cheap re-read settles it.
            self.refresh();
        }
        self.ports.contains(&port)
    }

    /// The role of a connection seen first through data: a listening local port means this
    /// side accepted it; a listening remote port means it connected. When the tables cannot
    /// tell (neither listens), an ephemeral local port against a fixed remote port means a
    /// client. Otherwise the traffic decides later.
    pub fn infer(&mut self, local: u16, remote: u16) -> Inferred {
        // A connection whose local port is a listening port was accepted there (a client's
        // local port is ephemeral). Checked first and alone: the remote port, not listening
        // here, would re-read the tables (a prefork server such as PostgreSQL makes each new
        // backend rediscover its inherited socket, hundreds a second under churn).
        if self.is_listening(local) {
            return Inferred::Server;
        }
        if self.is_listening(remote) {
            return Inferred::Client;
        }
        let Some((lo, hi)) = self.ephemeral else {
            return Inferred::Unknown;
        };
        let eph = |p: u16| (lo..=hi).contains(&p);
        match (eph(local), eph(remote)) {
            (true, false) => Inferred::Client,
            (false, true) => Inferred::Server,
            _ => Inferred::Unknown,
        }
    }

    fn refresh(&mut self) {
        self.ports.clear();
        for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
            if let Ok(file) = std::fs::File::open(f) {
                self.ports
                    .extend(listening_rows(std::io::BufReader::new(file).lines()));
            }
        }
        self.read_at = Some(Instant::now());
    }
}

fn read_ephemeral_range() -> Option<(u16, u16)> {
    let s = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = s.split_whitespace().map(|v| v.parse::<u16>().ok());
    Some((it.next()??, it.next()??))
}

/// Ports in state 0A (LISTEN) of a /proc/net/tcp table.
pub fn parse_listening(text: &str) -> impl Iterator<Item = u16> + '_ {
    listening_rows(text.lines().map(|l| Ok::<_, std::io::Error>(l.to_string())))
}

/// The listening ports among `lines` of a /proc/net/tcp table (header first). The kernel
/// lists every listening socket before any other, so the rows stop being read at the first
/// one in another state: the table also holds every established and TIME_WAIT socket, which
/// under connection churn (thousands of them) the kernel formats only when read. Reading them
/// all took the agent 15-25 % of a core at 300 new connections/s.
fn listening_rows<S: AsRef<str>>(
    lines: impl Iterator<Item = std::io::Result<S>>,
) -> impl Iterator<Item = u16> {
    lines
        .skip(1)
        .map_while(Result::ok)
        .map_while(|l| {
            let l = l.as_ref();
            let mut cols = l.split_whitespace();
            let local = cols.nth(1)?;
            let state = cols.nth(1)?;
            if state != "0A" {
                return None;
            }
            let port = local.rsplit(':').next()?;
            Some(u16::from_str_radix(port, 16).ok())
        })
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listen_rows_only() {
        let t = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n   1: 0100007F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1\n";
        let v: Vec<u16> = parse_listening(t).collect();
        assert_eq!(v, vec![8080]);
    }

    #[test]
    fn stops_at_the_first_row_that_is_not_listening() {
        let row = |sl: u32, port: u16, st: &str| {
            format!(
                "   {sl}: 0100007F:{port:04X} 0100007F:9C40 {st} 00000000:00000000 00:00000000 00000000     0        0 {sl} 1 0 20 4 30 10 -1\n"
            )
        };
        let mut t = String::from("  sl  local_address rem_address   st ...\n");
        t.push_str(&row(0, 8080, "0A"));
        t.push_str(&row(1, 5432, "0A"));
        t.push_str(&row(2, 40000, "06"));
        // Not a listener the kernel would list after the others; never reached.
        t.push_str(&row(3, 6379, "0A"));
        let v: Vec<u16> = parse_listening(&t).collect();
        assert_eq!(v, vec![8080, 5432]);
    }

    #[test]
    fn the_live_table_lists_listeners_first() {
        // What the early stop relies on, checked against this kernel: open a listener and a
        // connection, then read the whole table.
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let _c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let text = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
        let states: Vec<bool> = text
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().nth(3).map(|s| s == "0A"))
            .collect();
        let first_other = states
            .iter()
            .position(|listen| !listen)
            .unwrap_or(states.len());
        assert!(states[first_other..].iter().all(|listen| !listen), "{text}");
        assert!(parse_listening(&text).any(|p| p == port));
        let mut lp = ListeningPorts::default();
        assert!(lp.is_listening(port));
    }
}
