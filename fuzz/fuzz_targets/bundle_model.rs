//! The bundle installer as a state machine: install / remove / recover /
//! power cut at operation k / I/O error at operation k, on the in-memory
//! file-system model, checked after every step against an abstract model
//! (see `deltaswap::fuzzing::bundle_model`, `fuzz/src/bundle_inputs.rs`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| deltaswap_fuzz::bundle_inputs::check_model(data));
