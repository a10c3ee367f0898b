//! Arbitrary bytes through the Http1 parser (see `tracewire_fuzz::exercise`).
#![no_main]

use agent_protocols::http1::Http1;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tracewire_fuzz::exercise::<Http1>(data, &tracewire_fuzz::tight_config());
});
