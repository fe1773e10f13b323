//! Input split into an old file and a patch (see `checks::check_any_old`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: deltaswap_fuzz::checks::warm_up_threads(),
    |data: &[u8]| deltaswap_fuzz::checks::check_any_old(data)
);
