//! Tests of the atomic patcher: an in-memory live/durable model, a fault and
//! power-cut wrapper for any [`Fs`](super::fs::Fs), and the test suites.

pub(crate) mod faulty;
pub(crate) mod model;

mod enumerate;
pub(crate) mod powercut;
mod real;
