//! Arbitrary patch bytes against a fixed 4 KiB old file (the seeds carry its
//! length and SHA-256, so mutations of their bodies reach the applier).
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

static OLD: OnceLock<Vec<u8>> = OnceLock::new();

fuzz_target!(init: deltaswap_fuzz::checks::warm_up_threads(), |data: &[u8]| {
    let old = OLD.get_or_init(deltaswap_fuzz::checks::fixed_old);
    deltaswap_fuzz::checks::check_apply(old, data);
});
