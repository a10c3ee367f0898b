//! Arbitrary bytes through the Redis parser (see `tracewire_fuzz::exercise`).
#![no_main]

use agent_protocols::redis::Redis;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tracewire_fuzz::exercise::<Redis>(data, &tracewire_fuzz::tight_config());
});
