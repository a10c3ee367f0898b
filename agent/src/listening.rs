//! Listening TCP ports from /proc/net/tcp{,6}: recovers the role of connections that existed
//! before the agent started (a local port that is listening means we are the server).

use std::collections::HashSet;
use std::time::{Duration, Instant};

pub struct ListeningPorts {
    ports: HashSet<u16>,
    read_at: Option<Instant>,
    max_age: Duration,
}

impl Default for ListeningPorts {
    fn default() -> Self {
        Self {
            ports: HashSet::new(),
            read_at: None,
            max_age: Duration::from_secs(1),
        }
    }
}

impl ListeningPorts {
    pub fn is_listening(&mut self, port: u16) -> bool {
        if self.read_at.is_none_or(|t| t.elapsed() > self.max_age) {
            self.refresh();
        }
        self.ports.contains(&port)
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
