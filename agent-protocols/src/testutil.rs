//! Helpers shared by the parser tests.

use crate::{Dir, Parsed, Protocol};

/// Every strict prefix of one complete message must parse as `Partial` (never a frame, never an
/// error), and the whole message must parse as a frame consuming exactly its length.
pub fn assert_prefixes_partial<P: Protocol>(dir: Dir, msg: &[u8], fresh: impl Fn() -> P::State) {
    for cut in 0..msg.len() {
        let mut st = fresh();
        match P::parse(dir, &msg[..cut], &mut st) {
            Ok(Parsed::Partial) => {}
            other => panic!("prefix of {cut}/{} bytes gave {other:?}", msg.len()),
        }
    }
    let mut st = fresh();
    match P::parse(dir, msg, &mut st) {
        Ok(Parsed::Frame { consumed, .. }) | Ok(Parsed::Skip { consumed }) => {
            assert_eq!(consumed, msg.len(), "whole message consumed")
        }
        other => panic!("whole message gave {other:?}"),
    }
}
