//! Tests of the atomic patcher: an in-memory live/durable model, a fault and
//! power-cut wrapper for any [`Fs`](super::fs::Fs), and the test suites.

pub(crate) mod faulty;
pub(crate) mod model;

#[cfg(test)]
mod enumerate;
#[cfg(test)]
pub(crate) mod powercut;
#[cfg(test)]
mod real;

#[cfg(test)]
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Orders the real-file-system tests of this crate: a child process forked
/// by one test's thread holds copies of every descriptor open in the process
/// at that moment until it execs (close-on-exec), so a `flock` another test
/// released still looks held (a refused lock, a busy leftover). Tests that
/// start processes take it for writing, tests that lock files for reading.
#[cfg(test)]
static SPAWN: RwLock<()> = RwLock::new(());

/// For a test that starts child processes (`mount`, `xfs_io`).
#[cfg(test)]
pub(crate) fn spawning() -> RwLockWriteGuard<'static, ()> {
    SPAWN.write().unwrap_or_else(|e| e.into_inner())
}

/// For a test that takes `flock` locks on the real file system.
#[cfg(test)]
pub(crate) fn locking() -> RwLockReadGuard<'static, ()> {
    SPAWN.read().unwrap_or_else(|e| e.into_inner())
}
