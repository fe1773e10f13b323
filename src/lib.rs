//! deltaswap computes compact binary deltas between versions of a system
//! component and applies them with verification.
//!
//! * [`diff`] / [`DiffOptions`]: old + new → patch (feature `diff`, on by default).
//! * [`apply`] / [`PatchReader`]: old + patch → new, streaming, bounded memory,
//!   with the old file's and the result's SHA-256 checked.
//! * [`patch_in_place`] / [`recover`]: patch an installed file atomically and
//!   crash-safely (old or new version at every instant, never a mix), keeping
//!   its owner, mode and extended attributes. See `docs/GUARANTEES.md`.
//! * [`BundleBuilder`] / [`Bundle`] / [`Installer`]: signed multi-file bundles
//!   installed all or nothing under a root directory, removable back to the
//!   baseline, with anti-replay and crash recovery.
//!
//! The `deltaswap` command-line tool (feature `cli`) does all of this from a
//! shell; `deltaswap demo` is a one-minute tour.
//!
//! # Diff and apply in memory
//!
//! [`diff`] makes a patch; [`apply`] checks that the old bytes are the ones the
//! patch was made for, rebuilds the new bytes and checks their SHA-256.
//!
//! ```
//! let old = b"libfoo 1.0: the quick brown fox".to_vec();
//! let new = b"libfoo 1.1: the quick brown fox jumps".to_vec();
//! let patch = deltaswap::diff(&old, &new)?;
//! assert_eq!(deltaswap::apply(&old, &patch)?, new);
//!
//! // A patch is refused for any other old file.
//! let err = deltaswap::apply(b"libbar 2.0", &patch).unwrap_err();
//! assert!(err.is_rejected_input());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Streaming apply, file to file
//!
//! [`PatchReader`] reads the patch from any [`std::io::Read`] and writes the
//! result to any [`std::io::Write`] in bounded memory; the old file is read
//! through a [`Source`] such as a [`MappedFile`]. The header tells the sizes
//! and hashes before any work is done.
//!
//! ```
//! use std::fs::File;
//! use std::io::BufReader;
//! # let dir = tempfile::tempdir()?;
//! # let old_path = dir.path().join("libfoo.so.1");
//! # let patch_path = dir.path().join("foo.patch");
//! # let old: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
//! # let mut new = old.clone();
//! # new[500] = 7;
//! # std::fs::write(&old_path, &old)?;
//! # std::fs::write(&patch_path, deltaswap::diff(&old, &new)?)?;
//! let old_file = deltaswap::MappedFile::open(&old_path)?;
//! let reader = deltaswap::PatchReader::new(BufReader::new(File::open(&patch_path)?))?;
//! println!("will write {} bytes", reader.header().new_len());
//!
//! let mut out = Vec::new(); // or a File
//! let verified = reader.apply_to(&old_file, &mut out)?;
//! assert_eq!(verified.len(), out.len() as u64);
//! # assert_eq!(out, new);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Patch an installed file in place, and recover after a crash
//!
//! [`patch_in_place`] writes the new version beside the file, verifies and
//! syncs it, then swaps it in with one rename: the file is the old or the new
//! version at every instant. After a crash, [`recover`] on the directory
//! removes what an interrupted patch left behind.
//!
//! ```
//! # let dir = tempfile::tempdir()?;
//! let lib = dir.path().join("libfoo.so");
//! std::fs::write(&lib, b"libfoo 1.0 code code code")?;
//! let patch = deltaswap::diff(b"libfoo 1.0 code code code", b"libfoo 1.1 code code code fixed")?;
//!
//! let opts = deltaswap::PatchOptions::new().keep_old(dir.path().join("libfoo.so.old"));
//! let outcome = deltaswap::patch_in_place(&lib, &patch[..], &opts)?;
//! assert_eq!(std::fs::read(&lib)?, b"libfoo 1.1 code code code fixed");
//! assert_eq!(outcome.kept_old(), Some(dir.path().join("libfoo.so.old").as_path()));
//!
//! // Applying it again is a no-op: the file is already the new version.
//! deltaswap::patch_in_place(&lib, &patch[..], &opts)?;
//!
//! // At boot, or after a crash: remove leftovers of interrupted patches.
//! let report = deltaswap::recover(dir.path())?;
//! assert!(report.removed().is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Signed bundles: create, open, install, remove
//!
//! A [`BundleBuilder`] compares a baseline tree with a new tree and signs the
//! result with a [`SecretKey`]. [`Bundle::open`] verifies the signature
//! against the trusted [`PublicKey`]s before reading anything else. An
//! [`Installer`] installs it all or nothing under a root directory, and
//! removes it back to the baseline.
//!
//! ```
//! use deltaswap::{Bundle, BundleBuilder, Installer, SecretKey};
//! # let (old, new, root) = (tempfile::tempdir()?, tempfile::tempdir()?, tempfile::tempdir()?);
//! std::fs::write(old.path().join("libjsc.so"), b"jsc 26.3")?;
//! std::fs::write(new.path().join("libjsc.so"), b"jsc 26.3 fixed")?;
//! std::fs::write(root.path().join("libjsc.so"), b"jsc 26.3")?;
//!
//! // Vendor side: a key pair, then a signed bundle (label, baseline id, sequence).
//! let key = SecretKey::generate()?;
//! let bytes = BundleBuilder::new("26.3 (a)", "26.3", 1).build(old.path(), new.path(), &key)?;
//!
//! // Device side: only bundles signed by a trusted key are opened.
//! let bundle = Bundle::open(bytes, &[key.public_key()])?;
//! assert_eq!(bundle.manifest().label(), "26.3 (a)");
//!
//! let installer = Installer::new(root.path());
//! installer.install(&bundle)?;
//! assert_eq!(std::fs::read(root.path().join("libjsc.so"))?, b"jsc 26.3 fixed");
//! assert_eq!(installer.status()?.installed_label(), Some("26.3 (a)"));
//!
//! installer.remove()?;
//! assert_eq!(std::fs::read(root.path().join("libjsc.so"))?, b"jsc 26.3");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Errors
//!
//! Every function returns [`Error`]. [`Error::is_rejected_input`] separates a
//! refused input (wrong old file, malformed patch, untrusted bundle) from a
//! failure of the machine (I/O, disk full); the CLI maps them to exit
//! statuses 2 and 3.
//!
//! # Untrusted input
//!
//! Patches are untrusted. Reading one never panics, never allocates from a
//! declared size before checking it against [`Limits`], and never reads outside
//! the old file. See `docs/FORMAT.md` and `docs/SECURITY.md`.
#![deny(missing_docs)]
#![deny(unsafe_code)]
#![warn(unreachable_pub)]
// Without the `diff` feature the writer side of the formats (encoders, signing)
// is compiled but unused; it stays so that one code base serves both builds.
#![cfg_attr(not(feature = "diff"), allow(dead_code, unused_imports))]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod apply;
mod atomic;
mod bundle;
#[cfg(feature = "diff")]
mod diff;
mod error;
mod format;
/// Not part of the API: the bundle fuzz checks (feature `fuzzing`, for the
/// fuzz targets and their replay tests only; no semver promise).
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod hash;
mod limits;
mod mmap;
mod model;
mod refs;
/// Not part of the API: the delta model's coder, for tests that build patches
/// by hand and for the fuzz targets (no semver promise).
#[doc(hidden)]
pub mod model_codec {
    pub use crate::model::{decode_deltas, decode_deltas_with, DecodedDeltas};
    #[cfg(feature = "diff")]
    pub use crate::model::{encode_deltas, encode_deltas_with};
}
mod source;
mod transform;

/// A seeded xorshift64 generator for the unit tests' inputs.
#[cfg(test)]
pub(crate) fn test_rng(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

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
