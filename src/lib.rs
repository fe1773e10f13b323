//! deltaswap computes compact binary deltas between versions of a system
//! component and applies them with verification.
//!
//! * [`diff`] / [`DiffOptions`]: old + new → patch (feature `diff`, on by default).
//! * [`apply`] / [`PatchReader`]: old + patch → new, streaming, bounded memory,
//!   with the old file's and the result's SHA-256 checked.
//! * [`patch_in_place`] / [`recover`]: patch an installed file atomically and
//!   crash-safely (old or new version at every instant, never a mix), keeping
//!   its owner, mode and extended attributes. See `docs/GUARANTEES.md`.
//!
//! # Example
//!
//! ```
//! let old = b"libfoo 1.0: the quick brown fox".to_vec();
//! let new = b"libfoo 1.1: the quick brown fox jumps".to_vec();
//! let patch = deltaswap::diff(&old, &new)?;
//! assert_eq!(deltaswap::apply(&old, &patch)?, new);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Untrusted input
//!
//! Patches are untrusted. Reading one never panics, never allocates from a
//! declared size before checking it against [`Limits`], and never reads outside
//! the old file. See `docs/FORMAT.md` and `docs/SECURITY.md`.
#![deny(missing_docs)]
#![deny(unsafe_code)]
#![warn(unreachable_pub)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod apply;
mod atomic;
mod bundle;
#[cfg(feature = "diff")]
mod diff;
mod error;
mod format;
mod hash;
mod limits;
mod mmap;
mod source;

// The public interface is:
pub use apply::{apply, apply_with_limits, inspect, PatchInfo, PatchReader, Verified};
pub use atomic::{patch_in_place, recover, PatchOptions, PatchOutcome, RecoveryReport, SwapMethod};
#[cfg(feature = "diff")]
pub use bundle::BundleBuilder;
pub use bundle::{
    Bundle, BundleLimits, BundlePath, Component, ComponentKind, FileVersion, InstallReport,
    Installer, Manifest, PublicKey, Recovery, SecretKey, Status,
};
#[cfg(feature = "diff")]
pub use diff::{diff, DiffOptions};
pub use error::{Error, FormatError, FormatErrorKind, Subject};
pub use format::PatchHeader;
pub use hash::{ParseDigestError, Sha256Digest};
pub use limits::Limits;
pub use mmap::MappedFile;
pub use source::Source;
