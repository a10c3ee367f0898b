//! Arbitrary bytes through the Mysql parser (see `tracewire_fuzz::exercise`).
#![no_main]

use agent_protocols::mysql::Mysql;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tracewire_fuzz::exercise::<Mysql>(data, &tracewire_fuzz::tight_config());
});
