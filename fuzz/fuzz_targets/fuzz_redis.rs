//! Arbitrary bytes through the Redis parser: direct parse calls on both directions, then a driver
//! run where a control byte picks each chunk's direction, length and capture loss.
#![no_main]

use agent_protocols::driver::Driver;
use agent_protocols::redis::Redis;
use agent_protocols::{Dir, Parsed, ParserConfig, Protocol};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for dir in [Dir::Request, Dir::Response] {
        let _ = Redis::detect(dir, data);
        let _ = Redis::find_boundary(dir, data, 0);
        let mut st = <Redis as Protocol>::State::default();
        if let Ok(Parsed::Frame { consumed, .. } | Parsed::Skip { consumed }) =
            Redis::parse(dir, data, &mut st)
        {
            assert!(consumed > 0);
        }
    }
    let cfg = ParserConfig {
        max_buffer: 4096,
        max_queued_frames: 16,
        ..ParserConfig::default()
    };
    let mut d = Driver::<Redis>::new(&cfg);
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
        t += 1;
        for r in d.feed(dir, chunk, total, t, t) {
            assert!(r.start_ns <= r.end_ns);
        }
        rest = next;
    }
    let _ = d.close();
});
