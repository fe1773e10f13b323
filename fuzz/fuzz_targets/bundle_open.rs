//! Bundle parsing with signature verification, from raw bytes and from
//! `arbitrary` descriptions signed with the fuzzing-only key; accepted
//! bundles are installed on a scratch tree.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| deltaswap_fuzz::bundle_check::check(data));
