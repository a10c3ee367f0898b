//! HTTP/2 parser fuzzing: the input is cut into chunks for both directions (a control byte per
//! chunk: direction, length, whether the capture kept all of it), optionally after a real
//! connection preface so HPACK decoding and stream assembly are reached, and fed through the
//! generic driver; detection and resync run on every chunk too.
#![no_main]

use agent_protocols::driver::Driver;
use agent_protocols::http2::{Http2, PREFACE};
use agent_protocols::{Dir, ParserConfig, Protocol};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let mut d = Driver::<Http2>::new(&ParserConfig::default());
    if mode & 1 != 0 {
        d.feed(Dir::Request, PREFACE, PREFACE.len() as u64, 0, 1);
    }
    let mut t = 2;
    while let Some((&ctl, tail)) = rest.split_first() {
        let dir = if ctl & 1 == 0 {
            Dir::Request
        } else {
            Dir::Response
        };
        let len = usize::from(ctl >> 2).max(1).min(tail.len());
        let (chunk, next) = tail.split_at(len);
        rest = next;
        let total = if ctl & 2 != 0 {
            len as u64 * 3
        } else {
            len as u64
        };
        let _ = Http2::detect(dir, chunk);
        let _ = Http2::find_boundary(dir, chunk, 0);
        for r in d.feed(dir, chunk, total, t, t + 1) {
            assert!(r.start_ns <= r.end_ns, "{r:?}");
        }
        t += 2;
    }
    let _ = d.close();
});
