//! The crate's error type.
//!
//! One public enum, [`Error`], names what failed and where. Malformed input is a
//! [`FormatError`] carrying the byte offset in the patch and a [`FormatErrorKind`]
//! so that callers (and tests) can match on the precise reason.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::hash::Sha256Digest;

/// Everything that can go wrong in deltaswap.
///
/// Errors are grouped so that a caller can act on them:
/// [`Error::is_rejected_input`] is true when the input (patch, source file, bundle)
/// was refused, and false for I/O failures of the machine itself.
///
/// # Examples
///
/// ```
/// let err = deltaswap::apply(b"not the source", b"not a patch").unwrap_err();
/// assert!(err.is_rejected_input());
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The patch bytes are not a valid deltaswap patch.
    #[error("malformed patch: {0}")]
    Format(#[from] FormatError),
    /// A declared size or count is over a configured [`Limits`](crate::Limits) value.
    #[error("{what} is {actual}, over the configured limit of {limit}")]
    LimitExceeded {
        /// What was too large.
        what: &'static str,
        /// The declared or observed value.
        actual: u64,
        /// The limit in force.
        limit: u64,
    },
    /// A file's length is not the one the patch was made for.
    #[error("{subject} size mismatch: the patch expects {expected} bytes, found {found}")]
    SizeMismatch {
        /// Which file.
        subject: Subject,
        /// The length recorded in the patch.
        expected: u64,
        /// The length found.
        found: u64,
    },
    /// A file's SHA-256 is not the one the patch was made for.
    #[error("{subject} SHA-256 mismatch: expected {expected}, found {found}")]
    HashMismatch {
        /// Which file.
        subject: Subject,
        /// The digest recorded in the patch.
        expected: Sha256Digest,
        /// The digest computed.
        found: Sha256Digest,
    },
    /// The input is too large for this build (for example an old file over 2^40 bytes).
    #[error("{what} of {actual} bytes is not supported (maximum {max})")]
    Unsupported {
        /// What was out of range.
        what: &'static str,
        /// The value found.
        actual: u64,
        /// The maximum supported.
        max: u64,
    },
    /// An I/O error while reading or writing a stream.
    #[error("I/O error while {context}")]
    Io {
        /// What deltaswap was doing.
        context: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// An I/O error on a named file.
    #[error("I/O error on {}: {context}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What deltaswap was doing with it.
        context: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// An internal invariant was violated; this is a bug in deltaswap, please report it.
    #[error("internal invariant violated: {0}; please report a bug")]
    Bug(&'static str),
    /// The file to patch is a symbolic link and the caller did not ask to follow it.
    #[error("{} is a symbolic link; refusing to patch through it", path.display())]
    Symlink {
        /// The link.
        path: PathBuf,
    },
    /// The file to patch is not a regular file (a directory, FIFO, socket or device).
    #[error("{} is {kind}, not a regular file", path.display())]
    NotRegularFile {
        /// The file.
        path: PathBuf,
        /// What it is, for example "a directory".
        kind: &'static str,
    },
    /// The file to patch has more than one hard link and the caller did not opt in.
    ///
    /// Patching replaces one name only; the other links would keep the old version.
    #[error("{} has {links} hard links; patching would leave the other links at the old version", path.display())]
    HardLinks {
        /// The file.
        path: PathBuf,
        /// Its link count.
        links: u64,
    },
    /// The file system holding the file has too little free space for the new version.
    #[error("not enough free space beside {} for the new version ({needed} bytes): {}", path.display(), NoSpaceDetail(*available))]
    NoSpace {
        /// The file being patched.
        path: PathBuf,
        /// Bytes the new version needs.
        needed: u64,
        /// Bytes available when checked up front, or `None` when the file system
        /// reported itself full while the new version was being written.
        available: Option<u64>,
    },
    /// The file system holding the file is mounted read-only.
    #[error("{} is on a read-only file system", path.display())]
    ReadOnly {
        /// The file.
        path: PathBuf,
    },
    /// Another process is patching the same file (its lock is held) and the
    /// caller asked not to wait.
    #[error("{} is being patched by another process (its lock is held)", path.display())]
    Locked {
        /// The file.
        path: PathBuf,
    },
    /// The file was replaced or changed by someone else while it was being patched;
    /// nothing was committed.
    #[error("{} changed while it was being patched; nothing was replaced", path.display())]
    Changed {
        /// The file.
        path: PathBuf,
    },
    /// The new version is in place, but a step after the swap failed, so it is
    /// not known whether the change survives a power loss. Never a success:
    /// check the file and run [`recover`](crate::recover) on its directory.
    #[error("{} now holds the new version, but {operation} failed: durability unknown", path.display())]
    DurabilityUnknown {
        /// The patched file.
        path: PathBuf,
        /// The step that failed, for example "fsync of the directory".
        operation: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The bytes are not a valid deltaswap bundle (bad magic, truncated,
    /// trailing bytes, a field out of range).
    #[error("malformed bundle: {0}")]
    BundleFormat(FormatError),
    /// The bundle is signed by a key that is not among the trusted keys.
    #[error("bundle is signed by key {key_id}, which is not trusted")]
    UntrustedKey {
        /// The signer's key id (first 8 bytes of SHA-256 of the public key, hex).
        key_id: String,
    },
    /// The bundle's signature does not verify: the header or manifest was
    /// changed after signing, or the signature is damaged.
    #[error("bundle signature does not verify (key {key_id})")]
    BadSignature {
        /// The key id the bundle names.
        key_id: String,
    },
    /// A payload's length or SHA-256 is not the one the signed manifest binds
    /// (a damaged bundle, or a payload spliced in from another bundle).
    #[error("payload of component {component} does not match the signed manifest")]
    PayloadMismatch {
        /// The component's path.
        component: String,
    },
    /// A bundle path could escape the root or names a reserved entry.
    #[error("bundle path {path:?} is unsafe: {reason}")]
    UnsafePath {
        /// The path as found (lossy UTF-8).
        path: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// Two components name the same path (or names differing only in ASCII case).
    #[error("bundle lists {path:?} more than once")]
    DuplicatePath {
        /// The path.
        path: String,
    },
    /// The bundle is for a different baseline than the installed system.
    #[error("bundle is for baseline {bundle:?}, but the system is at baseline {system:?}")]
    WrongBaseline {
        /// The bundle's baseline id.
        bundle: String,
        /// The system's baseline id.
        system: String,
    },
    /// The bundle's sequence number is not above the highest one installed
    /// before (a replayed or older bundle).
    #[error("bundle sequence {sequence} is not above the highest seen ({highest}); refusing a replay or downgrade")]
    Downgrade {
        /// The bundle's sequence number.
        sequence: u64,
        /// The highest sequence number seen on this system.
        highest: u64,
    },
    /// An installed component is not the version the bundle or the install
    /// state expects: it was changed locally (or is missing, or appeared).
    #[error("component {path} was changed locally: expected {expected}, found {found}")]
    ComponentModified {
        /// The component's path.
        path: String,
        /// What was expected ("absent" or a SHA-256).
        expected: String,
        /// What was found.
        found: String,
    },
    /// An interrupted install or remove left a journal for a different bundle;
    /// run recovery first.
    #[error("an interrupted operation for another bundle ({journal}) must be recovered first")]
    ForeignJournal {
        /// The bundle id recorded in the journal.
        journal: Sha256Digest,
    },
    /// The install state or journal under the state directory is damaged.
    #[error("install state {} is damaged: {reason}", path.display())]
    StateCorrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
}

impl Error {
    /// True when the error means "this input was refused" (malformed patch, wrong
    /// source file, over a limit), false for I/O failures and bugs.
    pub fn is_rejected_input(&self) -> bool {
        matches!(
            self,
            Error::Format(_)
                | Error::LimitExceeded { .. }
                | Error::SizeMismatch { .. }
                | Error::HashMismatch { .. }
                | Error::Unsupported { .. }
                | Error::Symlink { .. }
                | Error::NotRegularFile { .. }
                | Error::HardLinks { .. }
                | Error::BundleFormat(_)
                | Error::UntrustedKey { .. }
                | Error::BadSignature { .. }
                | Error::PayloadMismatch { .. }
                | Error::UnsafePath { .. }
                | Error::DuplicatePath { .. }
                | Error::WrongBaseline { .. }
                | Error::Downgrade { .. }
                | Error::ComponentModified { .. }
                | Error::ForeignJournal { .. }
        )
    }

    /// True when the new version was swapped in before the error occurred
    /// ([`Error::DurabilityUnknown`]): the file is the new version, but it may
    /// not survive a power loss.
    ///
    /// # Examples
    ///
    /// ```
    /// let err = deltaswap::apply(b"old", b"not a patch").unwrap_err();
    /// assert!(!err.is_committed());
    /// ```
    pub fn is_committed(&self) -> bool {
        matches!(self, Error::DurabilityUnknown { .. })
    }

    /// The [`FormatErrorKind`] if this is a malformed-patch error.
    pub fn format_kind(&self) -> Option<FormatErrorKind> {
        match self {
            Error::Format(f) => Some(f.kind()),
            _ => None,
        }
    }

    pub(crate) fn io(context: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Io { context, source }
    }

    #[allow(dead_code)]
    pub(crate) fn file(
        path: impl Into<PathBuf>,
        context: &'static str,
    ) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::File {
            path,
            context,
            source,
        }
    }
}

/// The end of [`Error::NoSpace`]'s message.
struct NoSpaceDetail(Option<u64>);

impl fmt::Display for NoSpaceDetail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(a) => write!(f, "{a} bytes available"),
            None => f.write_str("the file system filled up while it was written"),
        }
    }
}

/// Which file a size or hash check was about.
///
/// # Examples
///
/// ```
/// let patch = deltaswap::diff(b"version 1", b"version 2")?;
/// match deltaswap::apply(b"version 0!", &patch) {
///     Err(deltaswap::Error::SizeMismatch { subject, .. })
///     | Err(deltaswap::Error::HashMismatch { subject, .. }) => {
///         assert_eq!(subject, deltaswap::Subject::Source)
///     }
///     other => panic!("unexpected {other:?}"),
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Subject {
    /// The old file, the patch's source.
    Source,
    /// The new file, the patch's result.
    Target,
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Subject::Source => "source",
            Subject::Target => "target",
        })
    }
}

/// A malformed patch: what was wrong and at which byte of the patch it was found.
///
/// # Examples
///
/// ```
/// use deltaswap::FormatErrorKind;
/// let err = deltaswap::apply(b"", b"XXXX....").unwrap_err();
/// assert_eq!(err.format_kind(), Some(FormatErrorKind::BadMagic));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} ({what}) at byte {offset}")]
pub struct FormatError {
    offset: u64,
    what: &'static str,
    kind: FormatErrorKind,
}

impl FormatError {
    pub(crate) fn new(offset: u64, what: &'static str, kind: FormatErrorKind) -> FormatError {
        FormatError { offset, what, kind }
    }

    /// The byte offset in the patch where the problem was detected.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The field or structure being read.
    pub fn what(&self) -> &'static str {
        self.what
    }

    /// The reason.
    pub fn kind(&self) -> FormatErrorKind {
        self.kind
    }
}

/// Why a patch was malformed.
///
/// # Examples
///
/// ```
/// let err = deltaswap::apply(b"old", b"PK\x03\x04 a zip file").unwrap_err();
/// assert_eq!(err.format_kind(), Some(deltaswap::FormatErrorKind::BadMagic));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatErrorKind {
    /// The first bytes are not the deltaswap magic.
    #[error("not a deltaswap patch (bad magic)")]
    BadMagic,
    /// The format version is not one this build reads.
    #[error("format version {found} is not supported (this build reads version {supported})")]
    UnsupportedVersion {
        /// The version in the patch.
        found: u8,
        /// The version this build reads.
        supported: u8,
    },
    /// A flag bit that this version does not define is set.
    #[error("unknown flags {0:#04x}")]
    UnknownFlags(u8),
    /// The patch asks for a pre-processing transform this build does not implement.
    #[error("unknown transform {0}")]
    UnknownTransform(u8),
    /// A stream uses a codec this build does not implement.
    #[error("unknown stream codec {0}")]
    UnknownCodec(u8),
    /// A reserved byte is not zero.
    #[error("reserved field is not zero")]
    Reserved,
    /// The patch ended before the field was complete.
    #[error("truncated")]
    Truncated,
    /// A variable-length integer is longer than 10 bytes, overflows 64 bits, or is not minimal.
    #[error("invalid variable-length integer")]
    BadVarint,
    /// Arithmetic on declared values overflowed.
    #[error("arithmetic overflow")]
    Overflow,
    /// A value lies outside the range its field allows.
    #[error("value out of range")]
    OutOfRange,
    /// A copy would read outside the old file.
    #[error("copy reads outside the source")]
    SourceOutOfBounds,
    /// The operations would produce more bytes than the header declares.
    #[error("output longer than declared")]
    OutputOverrun,
    /// The operations produce fewer bytes than the header declares.
    #[error("output shorter than declared")]
    OutputUnderrun,
    /// An operation produces no output (a zero-progress loop).
    #[error("operation makes no progress")]
    EmptyOperation,
    /// A stream holds fewer bytes than the operations consume.
    #[error("stream shorter than its operations need")]
    StreamUnderrun,
    /// A stream holds bytes that no operation consumes.
    #[error("unused bytes at the end of a stream")]
    StreamTrailing,
    /// A compressed stream does not decode, or decodes to a length other than declared.
    #[error("compressed stream is corrupt")]
    BadCompression,
    /// Bytes follow the last segment.
    #[error("trailing bytes after the patch")]
    TrailingBytes,
}
