//! Listening TCP ports from /proc/net/tcp{,6}: recovers the role of connections that existed
//! before the agent started (a local port that is listening means we are the server).

use std::collections::HashSet;
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
    /// tell (both or neither listen), an ephemeral local port against a fixed remote port
    /// means a client. Otherwise the traffic decides later.
    pub fn infer(&mut self, local: u16, remote: u16) -> Inferred {
        match (self.is_listening(local), self.is_listening(remote)) {
            (true, false) => return Inferred::Server,
            (false, true) => return Inferred::Client,
            _ => {}
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
            if let Ok(text) = std::fs::read_to_string(f) {
                self.ports.extend(parse_listening(&text));
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
    text.lines().skip(1).filter_map(|l| {
        let mut cols = l.split_whitespace();
        let local = cols.nth(1)?;
        let state = cols.nth(1)?;
        if state != "0A" {
            return None;
        }
        let port = local.rsplit(':').next()?;
        u16::from_str_radix(port, 16).ok()
    })
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
}
