//! Arbitrary bytes through the Postgres parser (see `tracewire_fuzz::exercise`).
#![no_main]

use agent_protocols::postgres::Postgres;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tracewire_fuzz::exercise::<Postgres>(data, &tracewire_fuzz::tight_config());
});
