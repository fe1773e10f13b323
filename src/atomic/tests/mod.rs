//! Tests of the atomic patcher: an in-memory live/durable model, a fault and
//! power-cut wrapper for any [`Fs`](super::fs::Fs), and the test suites.

mod faulty;
mod model;

mod enumerate;
mod powercut;
mod real;
