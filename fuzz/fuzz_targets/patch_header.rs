//! The header parser and `inspect` on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| deltaswap_fuzz::checks::check_header(data));
