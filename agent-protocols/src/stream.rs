//! Protocol dispatch for one connection: detection picks a protocol, then every chunk goes to
//! that protocol's driver. An enum, not `dyn`, so the hot path is a jump table.

use crate::driver::{Driver, DriverStats};
use crate::{
    Confidence, Dir, ParserConfig, Protocol, ProtocolKind, Record, http1::Http1, http2::Http2,
    mysql::Mysql, postgres::Postgres, redis::Redis,
};

pub enum Stream {
    Http1(Driver<Http1>),
    Http2(Driver<Http2>),
    Postgres(Driver<Postgres>),
    Mysql(Driver<Mysql>),
    Redis(Driver<Redis>),
}

macro_rules! each {
    ($self:expr, $d:ident => $e:expr) => {
        match $self {
            Stream::Http1($d) => $e,
            Stream::Http2($d) => $e,
            Stream::Postgres($d) => $e,
            Stream::Mysql($d) => $e,
            Stream::Redis($d) => $e,
        }
    };
}

/// Every protocol's detector for one direction's first bytes, best first.
pub fn detect(dir: Dir, head: &[u8]) -> Vec<(ProtocolKind, Confidence)> {
    let mut v: Vec<(ProtocolKind, Confidence)> = [
        (ProtocolKind::Http2, Http2::detect(dir, head)),
        (ProtocolKind::Http1, Http1::detect(dir, head)),
        (ProtocolKind::Postgres, Postgres::detect(dir, head)),
        (ProtocolKind::Mysql, Mysql::detect(dir, head)),
        (ProtocolKind::Redis, Redis::detect(dir, head)),
    ]
    .into_iter()
    .filter(|(_, c)| *c != Confidence::No)
    .collect();
    v.sort_by_key(|x| std::cmp::Reverse(x.1));
    v
}

/// The protocol to parse with, when exactly one is certain or exactly one is plausible.
/// Anything ambiguous is left alone rather than mis-parsed.
pub fn choose(dir: Dir, head: &[u8]) -> Option<ProtocolKind> {
    let found = detect(dir, head);
    let certain: Vec<_> = found
        .iter()
        .filter(|(_, c)| *c == Confidence::Certain)
        .collect();
    match (certain.len(), found.len()) {
        (1, _) => Some(certain[0].0),
        (0, 1) => Some(found[0].0),
        _ => None,
    }
}

impl Stream {
    pub fn new(kind: ProtocolKind, cfg: &ParserConfig) -> Self {
        match kind {
            ProtocolKind::Http1 => Stream::Http1(Driver::new(cfg)),
            ProtocolKind::Http2 => Stream::Http2(Driver::new(cfg)),
            ProtocolKind::Postgres => Stream::Postgres(Driver::new(cfg)),
            ProtocolKind::Mysql => Stream::Mysql(Driver::new(cfg)),
            ProtocolKind::Redis => Stream::Redis(Driver::new(cfg)),
        }
    }

    pub fn kind(&self) -> ProtocolKind {
        match self {
            Stream::Http1(_) => ProtocolKind::Http1,
            Stream::Http2(_) => ProtocolKind::Http2,
            Stream::Postgres(_) => ProtocolKind::Postgres,
            Stream::Mysql(_) => ProtocolKind::Mysql,
            Stream::Redis(_) => ProtocolKind::Redis,
        }
    }

    pub fn feed(
        &mut self,
        dir: Dir,
        data: &[u8],
        total_len: u64,
        start_ns: u64,
        end_ns: u64,
    ) -> Vec<Record> {
        each!(self, d => d.feed(dir, data, total_len, start_ns, end_ns))
    }

    /// See [`crate::driver::Driver::exchanges_skipped`].
    pub fn exchanges_skipped(&mut self) {
        each!(self, d => d.exchanges_skipped())
    }

    /// Whether whole exchanges may be left out of the capture without corrupting what follows:
    /// true where each exchange stands alone; not HTTP/2 (HPACK state spans the connection).
    pub fn samplable(&self) -> bool {
        !matches!(self.kind(), ProtocolKind::Http2)
    }

    pub fn close(&mut self) -> Vec<Record> {
        each!(self, d => d.close())
    }

    pub fn stats(&self) -> DriverStats {
        each!(self, d => *d.stats())
    }
}
