//! The fuzz harness shared by the per-protocol targets: arbitrary bytes through one parser,
//! first as direct `parse` calls on both directions (the Partial/consumed contract), then through
//! the generic driver with the input itself choosing each chunk's direction, length and whether
//! the capture lost as many bytes again.

use agent_protocols::driver::Driver;
use agent_protocols::{Dir, Parsed, ParserConfig, Protocol};

pub fn exercise<P: Protocol>(data: &[u8], cfg: &ParserConfig) {
    for dir in [Dir::Request, Dir::Response] {
        let _ = P::detect(dir, data);
        let _ = P::find_boundary(dir, data, 0);
        let mut st = P::State::default();
        if let Ok(Parsed::Frame { consumed, .. } | Parsed::Skip { consumed }) =
            P::parse(dir, data, &mut st)
        {
            assert!(consumed > 0, "a frame or skip makes progress");
        }
    }
    let mut d = Driver::<P>::new(cfg);
    let mut rest = data;
    let mut t = 0u64;
    while let Some((&ctl, tail)) = rest.split_first() {
        let len = usize::from(ctl >> 2).min(tail.len());
        let (chunk, next) = tail.split_at(len);
        let dir = if ctl & 1 == 0 {
            Dir::Request
        } else {
            Dir::Response
        };
        // Bit 1: the capture lost as many bytes again.
        let total = if ctl & 2 == 0 {
            len as u64
        } else {
            2 * len as u64
        };
        t += 10;
        for r in d.feed(dir, chunk, total, t, t + 5) {
            assert!(r.start_ns <= r.end_ns, "{r:?}");
        }
        rest = next;
    }
    for r in d.close() {
        assert!(r.start_ns <= r.end_ns, "{r:?}");
    }
}

/// Small caps so that buffer and queue overflows are reached too.
pub fn tight_config() -> ParserConfig {
    ParserConfig {
        max_buffer: 4096,
        max_queued_frames: 16,
        keep_raw_query: true,
        ..ParserConfig::default()
    }
}
