//! Signed multi-component security-response bundles: build, read, install
//! all-or-nothing, remove back to the baseline, recover after a crash.
//!
//! * [`BundleBuilder`] makes a signed bundle from a baseline tree and a new tree.
//! * [`Bundle::open`] checks limits, verifies the ed25519 signature against
//!   the caller's trusted [`PublicKey`]s before parsing the manifest, checks
//!   every path ([`BundlePath`]) and every payload.
//! * [`Installer`] installs a bundle on a root directory, removes it, reports
//!   the status and recovers an interrupted operation.
//!
//! The format is in `docs/FORMAT.md` ("Bundle format v1"); the commit protocol
//! and its crash analysis in the `install` module and `docs/GUARANTEES.md`.

#[cfg(feature = "diff")]
mod build;
// `pub(crate)` for the fuzz checks (`crate::fuzzing`).
pub(crate) mod install;
mod keys;
mod path;
pub(crate) mod state;
#[cfg(all(test, feature = "diff"))]
mod tests;
pub(crate) mod wire;

use std::path::{Path, PathBuf};

use crate::atomic::fs::RealFs;
use crate::error::Error;
use crate::hash::Sha256Digest;
use crate::limits::Limits;
use crate::source::Source;

#[cfg(feature = "diff")]
pub use build::BundleBuilder;
pub use keys::{PublicKey, SecretKey};
pub use path::BundlePath;
pub use wire::{Bundle, Component, ComponentKind, FileVersion, Manifest};

use install::Config;

/// Limits for reading untrusted bundles, checked before anything is allocated.
///
/// # Examples
///
/// ```
/// let limits = deltaswap::BundleLimits::default().max_components(10);
/// # let _ = limits;
/// ```
#[derive(Clone, Debug)]
pub struct BundleLimits {
    pub(crate) max_manifest_len: u64,
    pub(crate) max_components: u64,
    pub(crate) max_payload_len: u64,
}

impl Default for BundleLimits {
    /// Manifest up to 16 MiB (about 100,000 components with long paths),
    /// 100,000 components, payloads up to 16 GiB in total.
    fn default() -> BundleLimits {
        BundleLimits {
            max_manifest_len: 16 << 20,
            max_components: 100_000,
            max_payload_len: 16 << 30,
        }
    }
}

impl BundleLimits {
    /// The largest manifest accepted (it is read into memory to verify its
    /// signature). Default 16 MiB.
    ///
    /// ```
    /// use deltaswap::{Bundle, BundleBuilder, BundleLimits, Error, SecretKey};
    /// # let old = tempfile::tempdir()?; let new = tempfile::tempdir()?;
    /// std::fs::write(new.path().join("a.so"), b"first added file")?;
    /// std::fs::write(new.path().join("b.so"), b"second added file")?;
    /// let key = SecretKey::generate()?;
    /// let bytes = BundleBuilder::new("26.3 (a)", "26.3", 1).build(old.path(), new.path(), &key)?;
    /// let limits = BundleLimits::default().max_manifest_len(64);
    /// let err = Bundle::open_with_limits(&bytes[..], &[key.public_key()], &limits).unwrap_err();
    /// assert!(matches!(err, Error::LimitExceeded { what: "bundle manifest length", .. }));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn max_manifest_len(mut self, bytes: u64) -> BundleLimits {
        self.max_manifest_len = bytes;
        self
    }
    /// The most components accepted. Default 100,000.
    ///
    /// ```
    /// use deltaswap::{Bundle, BundleBuilder, BundleLimits, Error, SecretKey};
    /// # let old = tempfile::tempdir()?; let new = tempfile::tempdir()?;
    /// std::fs::write(new.path().join("a.so"), b"first added file")?;
    /// std::fs::write(new.path().join("b.so"), b"second added file")?;
    /// let key = SecretKey::generate()?;
    /// let bytes = BundleBuilder::new("26.3 (a)", "26.3", 1).build(old.path(), new.path(), &key)?;
    /// let limits = BundleLimits::default().max_components(1);
    /// let err = Bundle::open_with_limits(&bytes[..], &[key.public_key()], &limits).unwrap_err();
    /// assert!(matches!(err, Error::LimitExceeded { what: "bundle component count", .. }));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn max_components(mut self, n: u64) -> BundleLimits {
        self.max_components = n;
        self
    }
    /// The largest payload section accepted. Default 16 GiB.
    ///
    /// ```
    /// use deltaswap::{Bundle, BundleBuilder, BundleLimits, Error, SecretKey};
    /// # let old = tempfile::tempdir()?; let new = tempfile::tempdir()?;
    /// std::fs::write(new.path().join("a.so"), b"first added file")?;
    /// std::fs::write(new.path().join("b.so"), b"second added file")?;
    /// let key = SecretKey::generate()?;
    /// let bytes = BundleBuilder::new("26.3 (a)", "26.3", 1).build(old.path(), new.path(), &key)?;
    /// let limits = BundleLimits::default().max_payload_len(16);
    /// let err = Bundle::open_with_limits(&bytes[..], &[key.public_key()], &limits).unwrap_err();
    /// assert!(matches!(err, Error::LimitExceeded { what: "bundle payload section length", .. }));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn max_payload_len(mut self, bytes: u64) -> BundleLimits {
        self.max_payload_len = bytes;
        self
    }
}

/// Installs, removes and recovers bundles on a root directory.
///
/// The state (installed bundle, highest sequence number seen, baseline copies
/// of the changed components, the intent journal) lives in `ROOT/.deltaswap/`
/// unless [`Installer::state_dir`] says otherwise; it must be on the root's
/// file system.
///
/// # Examples
///
/// ```
/// use deltaswap::{Bundle, BundleBuilder, Installer, SecretKey};
/// # let old = tempfile::tempdir()?; let new = tempfile::tempdir()?; let root = tempfile::tempdir()?;
/// std::fs::write(old.path().join("libjsc.so"), b"jsc 26.3")?;
/// std::fs::write(new.path().join("libjsc.so"), b"jsc 26.3 fixed")?;
/// std::fs::write(root.path().join("libjsc.so"), b"jsc 26.3")?;
/// let key = SecretKey::generate()?;
/// let bytes = BundleBuilder::new("26.3 (a)", "26.3", 1).build(old.path(), new.path(), &key)?;
/// let bundle = Bundle::open(bytes, &[key.public_key()])?;
///
/// let installer = Installer::new(root.path());
/// installer.install(&bundle)?;
/// assert_eq!(std::fs::read(root.path().join("libjsc.so"))?, b"jsc 26.3 fixed");
/// assert_eq!(installer.status()?.installed_label(), Some("26.3 (a)"));
///
/// installer.remove()?;
/// assert_eq!(std::fs::read(root.path().join("libjsc.so"))?, b"jsc 26.3");
/// // The same bundle is never accepted again (anti-replay).
/// assert!(matches!(installer.install(&bundle), Err(deltaswap::Error::Downgrade { .. })));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct Installer {
    cfg: Config,
}

impl Installer {
    /// An installer for the tree under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Installer {
        Installer {
            cfg: Config {
                root: root.into(),
                state_dir: None,
                limits: Limits::default(),
                expect_baseline: None,
                mutant: install::Mutant::None,
            },
        }
    }

    /// Keeps the state in `dir` instead of `ROOT/.deltaswap` (created if
    /// missing; its parent must exist; same file system as the root).
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Installer {
        self.cfg.state_dir = Some(dir.into());
        self
    }

    /// The limits for applying payloads. Default [`Limits::default`].
    pub fn limits(mut self, limits: Limits) -> Installer {
        self.cfg.limits = limits;
        self
    }

    /// Refuses bundles for any other baseline id (by default the baseline is
    /// learnt from the first bundle installed and enforced from then on).
    pub fn expect_baseline(mut self, id: impl Into<String>) -> Installer {
        self.cfg.expect_baseline = Some(id.into());
        self
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.cfg.root
    }

    /// Installs `bundle`, all or nothing. Over an installed bundle, every
    /// component is patched from its retained baseline copy (or, when the
    /// bundle carries one, by a delta from the installed version), and the
    /// components the old bundle changed but the new one does not go back to
    /// the baseline. An interrupted earlier operation on the same bundle is
    /// finished first.
    ///
    /// # Errors
    ///
    /// Refusals, nothing touched: [`Error::Downgrade`] (sequence not above
    /// the highest seen), [`Error::WrongBaseline`], [`Error::ComponentModified`]
    /// (a component is not the version expected), [`Error::ForeignJournal`],
    /// [`Error::Symlink`] (a symbolic link on a component's path),
    /// [`Error::NotRegularFile`], [`Error::PayloadMismatch`], [`Error::Locked`]
    /// (another operation held the state directory's lock for more than
    /// about 100 ms).
    /// Failures before the commit point leave every component unchanged
    /// ([`Error::File`], [`Error::NoSpace`], ...). [`Error::DurabilityUnknown`]:
    /// the commit point was passed; run [`Installer::recover`].
    ///
    /// # Panics
    ///
    /// Never, for any bundle.
    pub fn install<S: Source>(&self, bundle: &Bundle<S>) -> Result<InstallReport, Error> {
        install::run_with(&RealFs, &self.cfg, Some(bundle))
    }

    /// Returns every component the installed bundle changed to the baseline,
    /// all or nothing. With nothing installed it does nothing. The highest
    /// sequence number seen is kept, so removed bundles cannot be reinstalled.
    ///
    /// # Errors
    ///
    /// As [`Installer::install`].
    ///
    /// # Examples
    ///
    /// ```
    /// # let root = tempfile::tempdir()?;
    /// let report = deltaswap::Installer::new(root.path()).remove()?;
    /// assert_eq!(report.changed(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn remove(&self) -> Result<InstallReport, Error> {
        install::run_with::<_, Vec<u8>>(&RealFs, &self.cfg, None)
    }

    /// Finishes or undoes an operation interrupted by a crash. Call it at
    /// startup.
    ///
    /// # Errors
    ///
    /// [`Error::File`], [`Error::StateCorrupt`], [`Error::Locked`].
    ///
    /// # Examples
    ///
    /// ```
    /// # let root = tempfile::tempdir()?;
    /// let r = deltaswap::Installer::new(root.path()).recover()?;
    /// assert_eq!(r, deltaswap::Recovery::Nothing);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recover(&self) -> Result<Recovery, Error> {
        install::recover_with(&RealFs, &self.cfg)
    }

    /// The install state.
    ///
    /// # Errors
    ///
    /// [`Error::File`], [`Error::StateCorrupt`], [`Error::Locked`].
    ///
    /// # Examples
    ///
    /// ```
    /// # let root = tempfile::tempdir()?;
    /// let s = deltaswap::Installer::new(root.path()).status()?;
    /// assert_eq!(s.installed_label(), None);
    /// assert_eq!(s.highest_sequence(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn status(&self) -> Result<Status, Error> {
        install::status_with(&RealFs, &self.cfg)
    }
}

/// What [`Installer::install`] or [`Installer::remove`] did.
///
/// # Examples
///
/// ```
/// # let root = tempfile::tempdir()?;
/// let r = deltaswap::Installer::new(root.path()).remove()?;
/// assert!(r.already_done());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallReport {
    label: String,
    sequence: u64,
    changed: usize,
    already: bool,
}

impl InstallReport {
    /// The bundle's label (installed, or removed).
    pub fn label(&self) -> &str {
        &self.label
    }
    /// The bundle's sequence number.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }
    /// How many files were replaced, added or removed.
    pub fn changed(&self) -> usize {
        self.changed
    }
    /// True when there was nothing to do (bundle already installed, or
    /// nothing to remove).
    pub fn already_done(&self) -> bool {
        self.already
    }
}

/// What [`Installer::recover`] did.
///
/// # Examples
///
/// ```
/// # let root = tempfile::tempdir()?;
/// let r = deltaswap::Installer::new(root.path()).recover()?;
/// assert_eq!(r, deltaswap::Recovery::Nothing);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Recovery {
    /// No interrupted operation.
    Nothing,
    /// An operation interrupted before its commit point was undone: every
    /// component is at its old version.
    RolledBack,
    /// An operation interrupted after its commit point was finished: every
    /// component is at its new version.
    Completed,
}

/// The install state, from [`Installer::status`].
///
/// # Examples
///
/// ```
/// # let root = tempfile::tempdir()?;
/// let status = deltaswap::Installer::new(root.path()).status()?;
/// assert_eq!(status.installed_label(), None); // nothing installed: the baseline
/// assert_eq!(status.highest_sequence(), 0);
/// assert!(!status.recovery_pending());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct Status {
    state: state::State,
    journal: bool,
}

impl Status {
    /// The installed bundle's label.
    pub fn installed_label(&self) -> Option<&str> {
        self.state.installed.as_ref().map(|i| i.label.as_str())
    }
    /// The installed bundle's sequence number.
    pub fn installed_sequence(&self) -> Option<u64> {
        self.state.installed.as_ref().map(|i| i.sequence)
    }
    /// The installed bundle's id ([`Bundle::id`]).
    pub fn installed_id(&self) -> Option<Sha256Digest> {
        self.state.installed.as_ref().map(|i| i.id)
    }
    /// The components the installed bundle changed, with their version
    /// before the first install (the baseline, or the earlier patch level a
    /// device was imaged at; what [`Installer::remove`] restores) and their
    /// installed version (`None`: absent).
    pub fn components(&self) -> Vec<(String, Option<FileVersion>, Option<FileVersion>)> {
        self.state
            .installed
            .iter()
            .flat_map(|i| i.entries.iter())
            .map(|e| (e.path.to_string(), e.base, e.cur))
            .collect()
    }
    /// The highest sequence number ever installed (0: none).
    pub fn highest_sequence(&self) -> u64 {
        self.state.highest
    }
    /// The system's baseline id, once a bundle has been installed.
    pub fn baseline(&self) -> Option<&str> {
        Some(self.state.baseline.as_str()).filter(|s| !s.is_empty())
    }
    /// True when an interrupted operation awaits [`Installer::recover`].
    pub fn recovery_pending(&self) -> bool {
        self.journal
    }
}
