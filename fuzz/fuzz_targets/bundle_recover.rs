//! Hostile install-state and journal files, then recover / status / install /
//! remove: no panic, no `Error::Bug`, nothing outside the root and the state
//! directory touched, heap bounded (see `deltaswap::fuzzing::bundle_recover`,
//! `fuzz/src/bundle_inputs.rs`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| deltaswap_fuzz::bundle_inputs::check_recover(data));
