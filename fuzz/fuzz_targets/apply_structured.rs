//! `arbitrary`-derived operations encoded into a well-formed patch.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: deltaswap_fuzz::checks::warm_up_threads(),
    |inp: deltaswap_fuzz::structured::Input| deltaswap_fuzz::structured::check(&inp)
);
