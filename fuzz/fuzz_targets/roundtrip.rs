//! diff → apply must reproduce the new file (small inputs; see
//! `checks::check_roundtrip` for how the bytes are read).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: deltaswap_fuzz::checks::warm_up_threads(), |data: &[u8]| {
    if data.len() <= 64 << 10 {
        deltaswap_fuzz::checks::check_roundtrip(data);
    }
});
