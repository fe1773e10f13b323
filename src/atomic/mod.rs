//! Atomic, crash-safe patching of one installed file.
//!
//! [`patch_in_place`] turns the file at a path into the new version a patch
//! describes, such that at every instant — including a crash or power cut at
//! any point — the path names either the complete old version or the complete
//! new one. The old inode is never written, so processes that have it open or
//! mapped keep running on the old version. [`recover`] removes what an
//! interrupted patch left beside the file.
//!
//! The protocol, the crash analysis and what it assumes of the file system are
//! in `docs/GUARANTEES.md`.

pub(crate) mod fs;
pub(crate) mod protocol;
// The in-memory model and the fault wrapper also serve the fuzz checks
// (`crate::fuzzing`, feature `fuzzing`); the test suites stay test-only.
#[cfg(any(all(test, feature = "diff"), feature = "fuzzing"))]
pub(crate) mod tests;

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::hash::Sha256Digest;
use crate::limits::Limits;

use self::fs::RealFs;
use self::protocol::Knobs;

/// How [`patch_in_place`] behaves. The default refuses symbolic links and
/// files with several hard links, keeps no rollback copy, and waits for another
/// patcher of the same file to finish.
///
/// # Examples
///
/// ```
/// use deltaswap::PatchOptions;
/// let opts = PatchOptions::new()
///     .keep_old("/var/lib/agent/rollback/libfoo.so")
///     .wait_for_lock(false);
/// assert_eq!(opts.kept_old_path(), Some(std::path::Path::new("/var/lib/agent/rollback/libfoo.so")));
/// ```
#[derive(Clone, Debug)]
pub struct PatchOptions {
    follow_symlinks: bool,
    allow_hard_links: bool,
    keep_old: Option<PathBuf>,
    wait_for_lock: bool,
    limits: Limits,
}

impl Default for PatchOptions {
    fn default() -> PatchOptions {
        PatchOptions {
            follow_symlinks: false,
            allow_hard_links: false,
            keep_old: None,
            wait_for_lock: true,
            limits: Limits::default(),
        }
    }
}

impl PatchOptions {
    /// The defaults (see the type's documentation).
    pub fn new() -> PatchOptions {
        PatchOptions::default()
    }

    /// When the path is a symbolic link, patch the file it resolves to instead
    /// of refusing with [`Error::Symlink`]. The link itself is left as it is.
    /// Default: `false`.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let real = dir.path().join("libfoo.so.1.0");
    /// let link = dir.path().join("libfoo.so");
    /// std::fs::write(&real, b"version 1.0")?;
    /// std::os::unix::fs::symlink(&real, &link)?;
    /// let patch = deltaswap::diff(b"version 1.0", b"version 1.1")?;
    /// let opts = deltaswap::PatchOptions::new().follow_symlinks(true);
    /// deltaswap::patch_in_place(&link, &patch[..], &opts)?;
    /// assert_eq!(std::fs::read(&real)?, b"version 1.1");
    /// assert!(std::fs::symlink_metadata(&link)?.file_type().is_symlink());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn follow_symlinks(mut self, yes: bool) -> PatchOptions {
        self.follow_symlinks = yes;
        self
    }

    /// Patch a file that has more than one hard link instead of refusing with
    /// [`Error::HardLinks`]. Only the patched name gets the new version: the
    /// other links keep naming the old inode, which is unchanged. Default: `false`.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("tool");
    /// let other = dir.path().join("tool-alias");
    /// std::fs::write(&path, b"tool 1")?;
    /// std::fs::hard_link(&path, &other)?;
    /// let patch = deltaswap::diff(b"tool 1", b"tool 2")?;
    /// let opts = deltaswap::PatchOptions::new().allow_hard_links(true);
    /// deltaswap::patch_in_place(&path, &patch[..], &opts)?;
    /// assert_eq!(std::fs::read(&path)?, b"tool 2");
    /// assert_eq!(std::fs::read(&other)?, b"tool 1"); // the other link is not patched
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn allow_hard_links(mut self, yes: bool) -> PatchOptions {
        self.allow_hard_links = yes;
        self
    }

    /// Keep the old version, as it was (same inode), at `path` after the swap:
    /// the rollback copy. `path` must be on the same file system as the file;
    /// an existing file there is replaced. Default: no copy is kept.
    ///
    /// The copy is named and made durable just before the swap, so a crash
    /// can never leave the new version in place without it. A patch that
    /// fails after that point leaves the file unchanged and `path` a second
    /// name of it; running the patch again then works (that name is not
    /// counted as another hard link). `path` must not be the file itself
    /// (docs/GUARANTEES.md, "The rollback copy").
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("libfoo.so");
    /// let old = dir.path().join("libfoo.so.rollback");
    /// std::fs::write(&path, b"libfoo 1.0")?;
    /// let patch = deltaswap::diff(b"libfoo 1.0", b"libfoo 1.1")?;
    /// let opts = deltaswap::PatchOptions::new().keep_old(&old);
    /// let outcome = deltaswap::patch_in_place(&path, &patch[..], &opts)?;
    /// assert_eq!(outcome.kept_old(), Some(old.as_path()));
    /// assert_eq!(std::fs::read(&old)?, b"libfoo 1.0");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn keep_old(mut self, path: impl Into<PathBuf>) -> PatchOptions {
        self.keep_old = Some(path.into());
        self
    }

    /// The rollback path set with [`PatchOptions::keep_old`].
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(deltaswap::PatchOptions::new().kept_old_path(), None);
    /// ```
    pub fn kept_old_path(&self) -> Option<&Path> {
        self.keep_old.as_deref()
    }

    /// When another process is patching the same file, wait for it to finish
    /// (`true`, the default), or fail at once with [`Error::Locked`] (`false`).
    ///
    /// After waiting, the file is examined afresh: if the other patcher
    /// installed the same new version, the call reports
    /// [`SwapMethod::AlreadyApplied`].
    ///
    /// # Examples
    ///
    /// ```
    /// let opts = deltaswap::PatchOptions::new().wait_for_lock(false);
    /// # let _ = opts;
    /// ```
    pub fn wait_for_lock(mut self, yes: bool) -> PatchOptions {
        self.wait_for_lock = yes;
        self
    }

    /// The limits for reading the patch. Default: [`Limits::default`].
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("f");
    /// std::fs::write(&path, b"small")?;
    /// let patch = deltaswap::diff(b"small", &[7u8; 10_000])?;
    /// let opts = deltaswap::PatchOptions::new()
    ///     .limits(deltaswap::Limits::default().max_output_len(4096));
    /// let err = deltaswap::patch_in_place(&path, &patch[..], &opts).unwrap_err();
    /// assert!(matches!(err, deltaswap::Error::LimitExceeded { .. }));
    /// assert_eq!(std::fs::read(&path)?, b"small");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn limits(mut self, limits: Limits) -> PatchOptions {
        self.limits = limits;
        self
    }
}

/// How the new version was put in place.
///
/// # Examples
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// let lib = dir.path().join("libfoo.so");
/// std::fs::write(&lib, b"version 1")?;
/// let patch = deltaswap::diff(b"version 1", b"version 2")?;
/// let opts = deltaswap::PatchOptions::new();
/// let first = deltaswap::patch_in_place(&lib, &patch[..], &opts)?;
/// assert_ne!(first.method(), deltaswap::SwapMethod::AlreadyApplied);
/// let again = deltaswap::patch_in_place(&lib, &patch[..], &opts)?;
/// assert_eq!(again.method(), deltaswap::SwapMethod::AlreadyApplied);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SwapMethod {
    /// `renameat2(RENAME_EXCHANGE)`: the name and the old inode were swapped in
    /// one step.
    Exchanged,
    /// Plain `rename`, on a file system that refuses exchange.
    Renamed,
    /// The file already was the new version (an earlier run finished, or
    /// crashed after its swap); it was made durable and left alone.
    AlreadyApplied,
}

/// What [`patch_in_place`] did.
///
/// # Examples
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// # let path = dir.path().join("f");
/// std::fs::write(&path, b"one")?;
/// let patch = deltaswap::diff(b"one", b"two")?;
/// let opts = deltaswap::PatchOptions::new();
/// let first = deltaswap::patch_in_place(&path, &patch[..], &opts)?;
/// assert_eq!(first.sha256(), deltaswap::Sha256Digest::of(b"two"));
/// let again = deltaswap::patch_in_place(&path, &patch[..], &opts)?;
/// assert_eq!(again.method(), deltaswap::SwapMethod::AlreadyApplied);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatchOutcome {
    len: u64,
    sha256: Sha256Digest,
    method: SwapMethod,
    kept_old: Option<PathBuf>,
}

impl PatchOutcome {
    /// Length of the new version now at the path.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when the new version is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// SHA-256 of the new version, checked while it was written.
    pub fn sha256(&self) -> Sha256Digest {
        self.sha256
    }

    /// How the new version was put in place.
    pub fn method(&self) -> SwapMethod {
        self.method
    }

    /// Where the old version was kept, if [`PatchOptions::keep_old`] was set
    /// and there was an old version to keep.
    pub fn kept_old(&self) -> Option<&Path> {
        self.kept_old.as_deref()
    }
}

/// What [`recover`] found.
///
/// # Examples
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// let report = deltaswap::recover(dir.path())?;
/// assert!(report.removed().is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    removed: Vec<PathBuf>,
    busy: Vec<PathBuf>,
    skipped: Vec<PathBuf>,
}

impl RecoveryReport {
    /// Leftovers of interrupted patches that were removed.
    pub fn removed(&self) -> &[PathBuf] {
        &self.removed
    }

    /// Temporary files of patches still running (locked), left alone.
    pub fn busy(&self) -> &[PathBuf] {
        &self.busy
    }

    /// Entries with the temporary prefix that deltaswap did not create (not
    /// regular files, or replaced while examined), left alone.
    pub fn skipped(&self) -> &[PathBuf] {
        &self.skipped
    }
}

/// Patches the file at `path` in place: checks it against the patch, writes
/// the new version beside it, and swaps it in atomically and durably.
///
/// The sequence: open `path` without following symbolic links and lock it
/// (`flock`); refuse a symbolic link, a non-regular file, a file with several
/// hard links, a read-only file system or too little free space; check size
/// and SHA-256 against the patch header; stream the new version into a
/// temporary file named `.deltaswap-tmp.*` in the same directory and check its
/// size and SHA-256; give it the original's owner, mode and extended
/// attributes (file capabilities, SELinux label, ACLs, `user.*`); `fsync` it;
/// swap it in with `renameat2(RENAME_EXCHANGE)` (plain `rename` where the file
/// system refuses exchange); drop or keep the old inode; `fsync` the directory.
///
/// The old inode is never written: processes running or mapping the old
/// version keep it. If the file already is the new version the call succeeds
/// with [`SwapMethod::AlreadyApplied`], so an interrupted update can simply be
/// run again.
///
/// # Errors
///
/// Refusals, with nothing touched: [`Error::Symlink`], [`Error::NotRegularFile`],
/// [`Error::HardLinks`], [`Error::SizeMismatch`] / [`Error::HashMismatch`] (the
/// file is not the patch's old version), [`Error::NoSpace`], [`Error::ReadOnly`],
/// [`Error::Locked`], [`Error::Format`] / [`Error::LimitExceeded`] (bad patch).
///
/// Failures before the swap ([`Error::File`], [`Error::NoSpace`],
/// [`Error::Changed`], a result that fails its SHA-256 check): the file is
/// unchanged and the temporary file is removed (if removing it fails too,
/// [`recover`] removes it later).
///
/// [`Error::DurabilityUnknown`]: the new version is in place, but a step after
/// the swap failed; it may not survive a power loss. This is never reported as
/// success.
///
/// # Panics
///
/// Never, for any patch bytes.
///
/// # Examples
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// let path = dir.path().join("libfoo.so");
/// std::fs::write(&path, b"libfoo 1.0: the quick brown fox")?;
/// let patch = deltaswap::diff(
///     b"libfoo 1.0: the quick brown fox",
///     b"libfoo 1.1: the quick brown fox jumps",
/// )?;
/// let outcome = deltaswap::patch_in_place(&path, &patch[..], &deltaswap::PatchOptions::new())?;
/// assert_eq!(std::fs::read(&path)?, b"libfoo 1.1: the quick brown fox jumps");
/// assert_eq!(outcome.len(), 37);
///
/// // The same patch no longer matches the old version, and nothing is touched
/// // when a patch does not match:
/// let other = deltaswap::diff(b"something else", b"x")?;
/// let err = deltaswap::patch_in_place(&path, &other[..], &deltaswap::PatchOptions::new())
///     .unwrap_err();
/// assert!(err.is_rejected_input());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn patch_in_place<R: Read>(
    path: impl AsRef<Path>,
    patch: R,
    options: &PatchOptions,
) -> Result<PatchOutcome, Error> {
    protocol::patch_with(&RealFs, path.as_ref(), patch, options, Knobs::default())
}

/// Removes what interrupted patches left in directory `dir`: regular files
/// named `.deltaswap-tmp.*` that no running patch holds locked. Call it at
/// startup, before patching files in `dir` again.
///
/// After a crash at any instant, each patched file in `dir` is its old or its
/// new version; `recover` does not change that file, it only removes the
/// leftovers (a temporary new version, or the old version's temporary name).
/// Files that other programs or the caller named (including rollback copies
/// kept with [`PatchOptions::keep_old`]) are never touched.
///
/// # Errors
///
/// [`Error::File`] naming the directory or leftover and the operation.
///
/// # Examples
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// std::fs::write(dir.path().join(".deltaswap-tmp.123.0.libfoo.so"), b"partial")?;
/// std::fs::write(dir.path().join("libfoo.so"), b"libfoo")?;
/// let report = deltaswap::recover(dir.path())?;
/// assert_eq!(report.removed().len(), 1);
/// assert!(dir.path().join("libfoo.so").exists());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn recover(dir: impl AsRef<Path>) -> Result<RecoveryReport, Error> {
    protocol::recover_with(&RealFs, dir.as_ref())
}
