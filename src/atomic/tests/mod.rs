//! Tests of the atomic patcher.
