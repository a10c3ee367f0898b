//! Arbitrary bytes, cut into chunks and directions by the input itself, through the Postgres driver:
//! must never panic, and parse-level calls must respect the Partial/consumed contract.
#![no_main]

use agent_protocols::driver::Driver;
use agent_protocols::postgres::Postgres;
use agent_protocols::{Dir, Parsed, ParserConfig, Protocol};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Direct parse calls on the raw input, both directions.
    for dir in [Dir::Request, Dir::Response] {
        let _ = Postgres::detect(dir, data);
        let _ = Postgres::find_boundary(dir, data, 0);
        let mut st = Default::default();
        if let Ok(Parsed::Frame { consumed, .. } | Parsed::Skip { consumed }) =
            Postgres::parse(dir, data, &mut st)
        {
            assert!(consumed > 0, "progress");
        }
    }
    // Driver replay: each control byte picks direction, chunk length and truncation.
    let cfg = ParserConfig {
        keep_raw_query: true,
        ..ParserConfig::default()
    };
    let mut d = Driver::<Postgres>::new(&cfg);
    let mut rest = data;
    let mut t = 0u64;
    while let Some((&ctl, tail)) = rest.split_first() {
        let len = usize::from(ctl & 0x3f).min(tail.len());
        let (chunk, next) = tail.split_at(len);
        let dir = if ctl & 0x80 == 0 {
            Dir::Request
        } else {
            Dir::Response
        };
        // Bit 6: the capture lost a tail as long as the chunk.
        let total = if ctl & 0x40 != 0 {
            2 * len as u64
        } else {
            len as u64
        };
        t += 10;
        let _ = d.feed(dir, chunk, total, t, t + 5);
        rest = next;
    }
    let _ = d.close();
});
