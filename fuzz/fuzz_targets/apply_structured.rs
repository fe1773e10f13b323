//! `arbitrary`-derived operations encoded into a well-formed patch.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|inp: deltaswap_fuzz::structured::Input| deltaswap_fuzz::structured::check(&inp));
