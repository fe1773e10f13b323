//! Shared code of the deltaswap fuzz targets.
//!
//! * `checks`: the properties each target asserts (also replayed by the main
//!   crate's `tests/fuzz_regressions.rs`).
//! * `bundle`: an independent bundle writer and reader (from docs/FORMAT.md)
//!   and the fuzzing-only signing key; `bundle_check`: the `bundle_open` target.
//! * `structured`: the `arbitrary` model behind `apply_structured`.
//! * `naive`: the oracle applier of the codec tests (`tests/codec/naive.rs`),
//!   written from docs/FORMAT.md alone (it decodes codecs 3 and 5 with the
//!   crate's `deltaswap::model_codec::decode_deltas_with`).
//! * `bundle_inputs`: the bundle targets' inputs, decoded into
//!   `deltaswap::fuzzing`'s checkers (also replayed by
//!   `tests/fuzz_regressions_bundle.rs`).
//! * `heap`: a counting global allocator, so that heap use over the budget is a
//!   finding.

#[path = "../../tests/codec/naive.rs"]
#[allow(dead_code, clippy::all)]
pub mod naive;

pub mod bundle;
pub mod bundle_check;
pub mod bundle_inputs;
pub mod checks;
pub mod heap;
pub mod structured;

#[global_allocator]
static ALLOC: heap::Counting = heap::Counting;
