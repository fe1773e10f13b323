//! Bundle format v1: header, manifest, signature, payloads (see
//! `docs/FORMAT.md`, "Bundle format v1").
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::collections::BTreeSet;
use std::io::{self, Read};

use crate::error::{Error, FormatError, FormatErrorKind};
use crate::hash::{Hasher, Sha256Digest};
use crate::source::Source;

use super::keys::{hex, PublicKey, SecretKey};
use super::path::{BundlePath, MAX_PATH_LEN};
use super::BundleLimits;

/// First bytes of every bundle.
pub(crate) const MAGIC: [u8; 8] = *b"DSBUNDLE";
/// The bundle format version this build reads and writes.
pub(crate) const VERSION: u8 = 1;
/// Fixed header length.
pub(crate) const HEADER_LEN: usize = 32;
/// Ed25519 signature length.
pub(crate) const SIG_LEN: usize = 64;
/// Domain separation for the signed message, so that a bundle signature can
/// never be mistaken for a signature over anything else.
const SIG_CONTEXT: &[u8] = b"deltaswap bundle v1\0";
/// Most source versions one component may carry deltas from.
pub(crate) const MAX_SOURCES: u8 = 8;
/// Smallest encoded component (path length, kind, mode, one version, payload
/// count), to bound the component count by the manifest length.
const MIN_COMPONENT_LEN: u64 = 2 + 1 + 4 + 40 + 1;

const KIND_PATCH: u8 = 1;
const KIND_ADD: u8 = 2;
const KIND_REMOVE: u8 = 3;

/// A file version: length and SHA-256.
///
/// # Examples
///
/// ```
/// let v = deltaswap::FileVersion::of(b"hello");
/// assert_eq!(v.len(), 5);
/// assert_eq!(v.sha256(), deltaswap::Sha256Digest::of(b"hello"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileVersion {
    pub(crate) len: u64,
    pub(crate) sha256: Sha256Digest,
}

impl FileVersion {
    /// The version of the given bytes.
    pub fn of(data: &[u8]) -> FileVersion {
        FileVersion {
            len: data.len() as u64,
            sha256: Sha256Digest::of(data),
        }
    }

    /// Length in bytes.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u64 {
        self.len
    }

    /// SHA-256 of the content.
    pub fn sha256(&self) -> Sha256Digest {
        self.sha256
    }
}

/// What a component does.
///
/// # Examples
///
/// ```
/// assert_eq!(deltaswap::ComponentKind::Patch.to_string(), "patch");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ComponentKind {
    /// An existing file is patched (by a delta from one of its known versions).
    Patch,
    /// A new file is added (full content, compressed).
    Add,
    /// A file is removed.
    Remove,
}

impl std::fmt::Display for ComponentKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ComponentKind::Patch => "patch",
            ComponentKind::Add => "add",
            ComponentKind::Remove => "remove",
        })
    }
}

/// Where one payload (a deltaswap patch) lies in the bundle and what it applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Payload {
    /// The file version the patch applies to (the empty file for a full payload).
    pub(crate) from: FileVersion,
    /// Offset from the start of the payload section.
    pub(crate) offset: u64,
    pub(crate) len: u64,
    pub(crate) sha256: Sha256Digest,
}

/// One component of a bundle, as the signed manifest describes it.
///
/// # Examples
///
/// ```
/// # use deltaswap::{BundleBuilder, SecretKey, ComponentKind, Bundle};
/// # let old = tempfile::tempdir()?; let new = tempfile::tempdir()?;
/// std::fs::write(old.path().join("lib.so"), b"v1")?;
/// std::fs::write(new.path().join("lib.so"), b"v2")?;
/// let key = SecretKey::generate()?;
/// let bytes = BundleBuilder::new("26.3 (a)", "26.3", 1).build(old.path(), new.path(), &key)?;
/// let bundle = Bundle::open(bytes, &[key.public_key()])?;
/// let c = &bundle.manifest().components()[0];
/// assert_eq!(c.path().to_string(), "lib.so");
/// assert_eq!(c.kind(), ComponentKind::Patch);
/// assert_eq!(c.target().map(|v| v.len()), Some(2));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Component {
    pub(crate) path: BundlePath,
    pub(crate) kind: ComponentKind,
    pub(crate) mode: u32,
    pub(crate) baseline: Option<FileVersion>,
    pub(crate) target: Option<FileVersion>,
    pub(crate) payloads: Vec<Payload>,
}

impl Component {
    /// The root-relative path.
    pub fn path(&self) -> &BundlePath {
        &self.path
    }
    /// Patch, add or remove.
    pub fn kind(&self) -> ComponentKind {
        self.kind
    }
    /// Permission bits of the new version (`0o7777` mask; 0 for a removal).
    pub fn mode(&self) -> u32 {
        self.mode
    }
    /// The baseline version (`None` for an added file).
    pub fn baseline(&self) -> Option<FileVersion> {
        self.baseline
    }
    /// The new version (`None` for a removal).
    pub fn target(&self) -> Option<FileVersion> {
        self.target
    }
    /// The versions this component carries a delta from (empty for add and remove).
    pub fn sources(&self) -> Vec<FileVersion> {
        match self.kind {
            ComponentKind::Patch => self.payloads.iter().map(|p| p.from).collect(),
            _ => Vec::new(),
        }
    }
    /// Total payload bytes.
    pub fn payload_len(&self) -> u64 {
        self.payloads
            .iter()
            .fold(0u64, |a, p| a.saturating_add(p.len))
    }
}

/// The signed description of a bundle.
///
/// # Examples
///
/// ```
/// # use deltaswap::{BundleBuilder, SecretKey, Bundle};
/// # let old = tempfile::tempdir()?; let new = tempfile::tempdir()?;
/// # std::fs::write(new.path().join("added"), b"new file")?;
/// # let key = SecretKey::generate()?;
/// let bytes = BundleBuilder::new("26.3 (a)", "26.3", 7).created(1_700_000_000)
///     .build(old.path(), new.path(), &key)?;
/// let m = Bundle::open(bytes, &[key.public_key()])?.manifest().clone();
/// assert_eq!((m.label(), m.baseline(), m.sequence(), m.created()), ("26.3 (a)", "26.3", 7, 1_700_000_000));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub(crate) label: String,
    pub(crate) baseline: String,
    pub(crate) sequence: u64,
    pub(crate) created: u64,
    pub(crate) components: Vec<Component>,
}

impl Manifest {
    /// Human label, for example "26.3 (a)".
    pub fn label(&self) -> &str {
        &self.label
    }
    /// The baseline id the bundle applies to, for example "26.3".
    pub fn baseline(&self) -> &str {
        &self.baseline
    }
    /// The sequence number (anti-downgrade).
    pub fn sequence(&self) -> u64 {
        self.sequence
    }
    /// Creation time, seconds since the Unix epoch (informational).
    pub fn created(&self) -> u64 {
        self.created
    }
    /// The components, sorted by path.
    pub fn components(&self) -> &[Component] {
        &self.components
    }
}

/// A bundle whose signature verified against a trusted key and whose payloads
/// all match the signed manifest.
///
/// # Examples
///
/// A flipped bit anywhere is refused:
///
/// ```
/// # use deltaswap::{BundleBuilder, SecretKey, Bundle};
/// # let old = tempfile::tempdir()?; let new = tempfile::tempdir()?;
/// # std::fs::write(new.path().join("f"), b"content")?;
/// let key = SecretKey::generate()?;
/// let mut bytes = BundleBuilder::new("a", "base", 1).build(old.path(), new.path(), &key)?;
/// assert!(Bundle::open(bytes.clone(), &[key.public_key()]).is_ok());
/// let last = bytes.len() - 1;
/// bytes[last] ^= 1;
/// assert!(Bundle::open(bytes, &[key.public_key()]).unwrap_err().is_rejected_input());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Bundle<S> {
    pub(crate) source: S,
    pub(crate) manifest: Manifest,
    pub(crate) id: Sha256Digest,
    pub(crate) payload_start: u64,
    pub(crate) key_id: [u8; 8],
    pub(crate) verified: bool,
}

impl<S: Source> Bundle<S> {
    /// Reads and verifies a bundle with the default [`BundleLimits`].
    ///
    /// # Errors
    ///
    /// See [`Bundle::open_with_limits`].
    pub fn open(source: S, trusted: &[PublicKey]) -> Result<Bundle<S>, Error> {
        Bundle::open_with_limits(source, trusted, &BundleLimits::default())
    }

    /// Reads the header, checks the declared lengths against `limits` and the
    /// bundle's actual length, verifies the signature over header and manifest
    /// against `trusted` (before parsing the manifest), parses the manifest
    /// (paths checked, duplicates refused), and checks every payload's length
    /// and SHA-256.
    ///
    /// # Errors
    ///
    /// [`Error::BundleFormat`], [`Error::LimitExceeded`],
    /// [`Error::UntrustedKey`], [`Error::BadSignature`],
    /// [`Error::UnsafePath`], [`Error::DuplicatePath`],
    /// [`Error::PayloadMismatch`], [`Error::Io`].
    ///
    /// # Panics
    ///
    /// Never, for any input.
    ///
    /// # Examples
    ///
    /// ```
    /// let limits = deltaswap::BundleLimits::default().max_manifest_len(16);
    /// let err = deltaswap::Bundle::open_with_limits(&b"DSBUNDLE\x01\0\0\0\xff\xff\0\0"[..], &[], &limits).unwrap_err();
    /// assert!(err.is_rejected_input());
    /// ```
    pub fn open_with_limits(
        source: S,
        trusted: &[PublicKey],
        limits: &BundleLimits,
    ) -> Result<Bundle<S>, Error> {
        Bundle::read(source, Some(trusted), limits)
    }

    /// Reads a bundle WITHOUT checking its signature, for inspection only
    /// (`deltaswap bundle inspect`): limits, format, paths and payloads are
    /// checked as by [`Bundle::open`]. [`Installer::install`](crate::Installer::install)
    /// accepts such a bundle only if its signature nevertheless verifies
    /// against the trusted keys given here: none, so never.
    ///
    /// # Errors
    ///
    /// As [`Bundle::open_with_limits`], without the signature errors.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(deltaswap::Bundle::open_unverified(&b"not a bundle"[..]).is_err());
    /// ```
    pub fn open_unverified(source: S) -> Result<Bundle<S>, Error> {
        Bundle::read(source, None, &BundleLimits::default())
    }

    fn read(
        source: S,
        trusted: Option<&[PublicKey]>,
        limits: &BundleLimits,
    ) -> Result<Bundle<S>, Error> {
        let total = source.len();
        let mut header = [0u8; HEADER_LEN];
        read_exact(&source, 0, &mut header, "bundle header")?;
        let mut r = Cursor::new(&header, 0);
        if r.bytes::<8>("magic")? != MAGIC {
            return Err(r.err("magic", FormatErrorKind::BadMagic));
        }
        let version = r.u8("version")?;
        if version != VERSION {
            return Err(r.err(
                "version",
                FormatErrorKind::UnsupportedVersion {
                    found: version,
                    supported: VERSION,
                },
            ));
        }
        if r.bytes::<3>("reserved")? != [0; 3] {
            return Err(r.err("reserved", FormatErrorKind::Reserved));
        }
        let manifest_len = u64::from(r.u32("manifest length")?);
        let payloads_len = r.u64("payload section length")?;
        let key_id = r.bytes::<8>("key id")?;
        if manifest_len > limits.max_manifest_len {
            return Err(Error::LimitExceeded {
                what: "bundle manifest length",
                actual: manifest_len,
                limit: limits.max_manifest_len,
            });
        }
        if payloads_len > limits.max_payload_len {
            return Err(Error::LimitExceeded {
                what: "bundle payload section length",
                actual: payloads_len,
                limit: limits.max_payload_len,
            });
        }
        let sig_at = (HEADER_LEN as u64)
            .checked_add(manifest_len)
            .ok_or_else(|| fmt_err(12, "manifest length", FormatErrorKind::Overflow))?;
        let payload_start = sig_at
            .checked_add(SIG_LEN as u64)
            .ok_or_else(|| fmt_err(12, "manifest length", FormatErrorKind::Overflow))?;
        let end = payload_start
            .checked_add(payloads_len)
            .ok_or_else(|| fmt_err(16, "payload section length", FormatErrorKind::Overflow))?;
        if total < end {
            return Err(fmt_err(total, "bundle", FormatErrorKind::Truncated));
        }
        if total > end {
            return Err(fmt_err(end, "bundle", FormatErrorKind::TrailingBytes));
        }
        let key = match trusted {
            Some(t) => Some(t.iter().find(|k| k.key_id() == key_id).ok_or_else(|| {
                Error::UntrustedKey {
                    key_id: hex(&key_id),
                }
            })?),
            None => None,
        };
        // Bounded by max_manifest_len above and by the bundle's real length.
        let mut signed = vec![0u8; HEADER_LEN];
        signed.copy_from_slice(&header);
        let manifest_usize = usize::try_from(manifest_len).map_err(|_| Error::LimitExceeded {
            what: "bundle manifest length",
            actual: manifest_len,
            limit: limits.max_manifest_len,
        })?;
        signed.resize(HEADER_LEN.saturating_add(manifest_usize), 0);
        if let Some(m) = signed.get_mut(HEADER_LEN..) {
            read_exact(&source, HEADER_LEN as u64, m, "bundle manifest")?;
        }
        let mut sig = [0u8; SIG_LEN];
        read_exact(&source, sig_at, &mut sig, "bundle signature")?;
        let mut msg = SIG_CONTEXT.to_vec();
        msg.extend_from_slice(&signed);
        if key.is_some_and(|k| !k.verify(&msg, &sig)) {
            return Err(Error::BadSignature {
                key_id: hex(&key_id),
            });
        }
        // Signed: now parse the manifest.
        let manifest = parse_manifest(signed.get(HEADER_LEN..).unwrap_or_default(), limits)?;
        let sum = manifest
            .components
            .iter()
            .flat_map(|c| c.payloads.iter())
            .try_fold(0u64, |a, p| a.checked_add(p.len))
            .ok_or_else(|| fmt_err(16, "payload lengths", FormatErrorKind::Overflow))?;
        if sum != payloads_len {
            return Err(fmt_err(
                16,
                "payload section length",
                FormatErrorKind::OutOfRange,
            ));
        }
        let bundle = Bundle {
            source,
            manifest,
            id: Sha256Digest::of(&signed),
            payload_start,
            key_id,
            verified: key.is_some(),
        };
        for c in &bundle.manifest.components {
            for p in &c.payloads {
                let mut reader = bundle.payload_reader(p);
                io::copy(&mut reader, &mut io::sink()).map_err(Error::io("reading the bundle"))?;
                reader.check(&c.path)?;
            }
        }
        Ok(bundle)
    }

    /// The signed manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The bundle id: SHA-256 of the signed header and manifest. The install
    /// journal records it.
    pub fn id(&self) -> Sha256Digest {
        self.id
    }

    /// The signer's key id (see [`PublicKey::key_id`]).
    pub fn key_id(&self) -> [u8; 8] {
        self.key_id
    }

    /// A reader of one payload that hashes what it reads.
    pub(crate) fn payload_reader(&self, p: &Payload) -> PayloadReader<'_, S> {
        PayloadReader {
            source: &self.source,
            pos: self.payload_start.saturating_add(p.offset),
            left: p.len,
            expect: p.sha256,
            hasher: Hasher::new(),
        }
    }
}

/// Reads one payload from the bundle, hashing it. [`PayloadReader::check`]
/// says whether all of it was read and matched the manifest.
pub(crate) struct PayloadReader<'a, S> {
    source: &'a S,
    pos: u64,
    left: u64,
    expect: Sha256Digest,
    hasher: Hasher,
}

impl<S: Source> PayloadReader<'_, S> {
    pub(crate) fn check(self, path: &BundlePath) -> Result<(), Error> {
        if self.left != 0 || self.hasher.finish() != self.expect {
            return Err(Error::PayloadMismatch {
                component: path.to_string(),
            });
        }
        Ok(())
    }
}

impl<S: Source> Read for PayloadReader<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = usize::try_from(self.left)
            .unwrap_or(usize::MAX)
            .min(buf.len())
            .min(1 << 20);
        let chunk = match buf.get_mut(..n) {
            Some(c) if n > 0 => c,
            _ => return Ok(0),
        };
        self.source.read_at(self.pos, chunk)?;
        self.hasher.update(chunk);
        self.pos = self.pos.saturating_add(n as u64);
        self.left = self.left.saturating_sub(n as u64);
        Ok(n)
    }
}

fn read_exact<S: Source>(
    src: &S,
    at: u64,
    buf: &mut [u8],
    what: &'static str,
) -> Result<(), Error> {
    let end = at.checked_add(buf.len() as u64);
    if end.is_none_or(|e| e > src.len()) {
        return Err(fmt_err(src.len(), what, FormatErrorKind::Truncated));
    }
    src.read_at(at, buf)
        .map_err(Error::io("reading the bundle"))
}

fn fmt_err(offset: u64, what: &'static str, kind: FormatErrorKind) -> Error {
    Error::BundleFormat(FormatError::new(offset, what, kind))
}

/// A bounds-checked reader over a byte slice that names what it reads.
pub(crate) struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    /// Offset of `data` in the bundle, for error messages.
    base: u64,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(data: &'a [u8], base: u64) -> Cursor<'a> {
        Cursor { data, pos: 0, base }
    }

    pub(crate) fn err(&self, what: &'static str, kind: FormatErrorKind) -> Error {
        fmt_err(self.base.saturating_add(self.pos as u64), what, kind)
    }

    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Error> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or_else(|| self.err(what, FormatErrorKind::Overflow))?;
        let s = self
            .data
            .get(self.pos..end)
            .ok_or_else(|| self.err(what, FormatErrorKind::Truncated))?;
        self.pos = end;
        Ok(s)
    }

    pub(crate) fn bytes<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], Error> {
        let s = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, Error> {
        Ok(u8::from_le_bytes(self.bytes::<1>(what)?))
    }
    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, Error> {
        Ok(u16::from_le_bytes(self.bytes::<2>(what)?))
    }
    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, Error> {
        Ok(u32::from_le_bytes(self.bytes::<4>(what)?))
    }
    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, Error> {
        Ok(u64::from_le_bytes(self.bytes::<8>(what)?))
    }
    pub(crate) fn version(&mut self, what: &'static str) -> Result<FileVersion, Error> {
        let len = self.u64(what)?;
        let sha256 = Sha256Digest(self.bytes::<32>(what)?);
        Ok(FileVersion { len, sha256 })
    }
    pub(crate) fn text(&mut self, what: &'static str) -> Result<String, Error> {
        let n = usize::from(self.u8(what)?);
        let b = self.take(n, what)?;
        if n == 0 {
            return Err(self.err(what, FormatErrorKind::OutOfRange));
        }
        String::from_utf8(b.to_vec()).map_err(|_| self.err(what, FormatErrorKind::OutOfRange))
    }
    pub(crate) fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }
    pub(crate) fn finish(&self, what: &'static str) -> Result<(), Error> {
        if self.remaining() != 0 {
            return Err(self.err(what, FormatErrorKind::TrailingBytes));
        }
        Ok(())
    }
}

fn parse_manifest(data: &[u8], limits: &BundleLimits) -> Result<Manifest, Error> {
    let mut r = Cursor::new(data, HEADER_LEN as u64);
    let label = r.text("label")?;
    let baseline = r.text("baseline id")?;
    let sequence = r.u64("sequence number")?;
    let created = r.u64("creation time")?;
    let count = r.u32("component count")?;
    if u64::from(count) > limits.max_components {
        return Err(Error::LimitExceeded {
            what: "bundle component count",
            actual: u64::from(count),
            limit: limits.max_components,
        });
    }
    if u64::from(count) > (r.remaining() as u64) / MIN_COMPONENT_LEN {
        return Err(r.err("component count", FormatErrorKind::Truncated));
    }
    let mut components = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    let mut seen = BTreeSet::new();
    let mut offset = 0u64;
    for _ in 0..count {
        let path_len = usize::from(r.u16("component path length")?);
        if path_len > MAX_PATH_LEN {
            return Err(r.err("component path length", FormatErrorKind::OutOfRange));
        }
        let path = BundlePath::new(r.take(path_len, "component path")?)?;
        if !seen.insert(path.folded()) {
            return Err(Error::DuplicatePath {
                path: path.to_string(),
            });
        }
        let kind = match r.u8("component kind")? {
            KIND_PATCH => ComponentKind::Patch,
            KIND_ADD => ComponentKind::Add,
            KIND_REMOVE => ComponentKind::Remove,
            _ => return Err(r.err("component kind", FormatErrorKind::OutOfRange)),
        };
        let mode = r.u32("component mode")?;
        if mode & !0o7777 != 0 || (kind == ComponentKind::Remove && mode != 0) {
            return Err(r.err("component mode", FormatErrorKind::OutOfRange));
        }
        let baseline = match kind {
            ComponentKind::Add => None,
            _ => Some(r.version("baseline version")?),
        };
        let target = match kind {
            ComponentKind::Remove => None,
            _ => Some(r.version("target version")?),
        };
        let n = r.u8("payload count")?;
        let ok = match kind {
            ComponentKind::Patch => (1..=MAX_SOURCES).contains(&n),
            ComponentKind::Add => n == 1,
            ComponentKind::Remove => n == 0,
        };
        if !ok {
            return Err(r.err("payload count", FormatErrorKind::OutOfRange));
        }
        let mut payloads = Vec::with_capacity(usize::from(n));
        let mut froms = BTreeSet::new();
        for _ in 0..n {
            let from = r.version("payload source version")?;
            let len = r.u64("payload length")?;
            let sha256 = Sha256Digest(r.bytes::<32>("payload SHA-256")?);
            if !froms.insert(from) || (kind == ComponentKind::Add && from != FileVersion::of(b"")) {
                return Err(r.err("payload source version", FormatErrorKind::OutOfRange));
            }
            payloads.push(Payload {
                from,
                offset,
                len,
                sha256,
            });
            offset = offset
                .checked_add(len)
                .ok_or_else(|| r.err("payload length", FormatErrorKind::Overflow))?;
        }
        components.push(Component {
            path,
            kind,
            mode,
            baseline,
            target,
            payloads,
        });
    }
    r.finish("manifest")?;
    check_parents(&components, &seen)?;
    Ok(Manifest {
        label,
        baseline,
        sequence,
        created,
        components,
    })
}

/// Refuses a component that is also the parent directory of another (paths
/// compared after ASCII lower-casing; `folded` holds them all): it can never
/// be installed, as its staged file and the directory would need one name,
/// and the commit could not finish (nor recovery roll it forward).
fn check_parents(components: &[Component], folded: &BTreeSet<Vec<u8>>) -> Result<(), Error> {
    for c in components {
        let path = c.path.folded();
        let mut dir = path.as_slice();
        while let Some(i) = dir.iter().rposition(|&b| b == b'/') {
            dir = dir.get(..i).unwrap_or_default();
            if folded.contains(dir) {
                return Err(Error::UnsafePath {
                    path: c.path.to_string(),
                    reason: "one of its parent directories is also a component \
                             (a file in one tree is a directory in the other)",
                });
            }
        }
    }
    Ok(())
}

/// The checks a reader makes on the components' paths as a set: no two equal
/// after ASCII lower-casing, none a parent directory of another. For the
/// builder, so that it never signs a manifest the reader refuses.
pub(crate) fn check_component_paths(components: &[Component]) -> Result<(), Error> {
    let mut folded = BTreeSet::new();
    for c in components {
        if !folded.insert(c.path.folded()) {
            return Err(Error::DuplicatePath {
                path: c.path.to_string(),
            });
        }
    }
    check_parents(components, &folded)
}

/// Encodes a manifest. Components must already be sorted and checked.
pub(crate) fn encode_manifest(m: &Manifest) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    put_text(&mut out, &m.label, "label")?;
    put_text(&mut out, &m.baseline, "baseline id")?;
    out.extend_from_slice(&m.sequence.to_le_bytes());
    out.extend_from_slice(&m.created.to_le_bytes());
    let count = u32::try_from(m.components.len()).map_err(|_| Error::LimitExceeded {
        what: "bundle component count",
        actual: m.components.len() as u64,
        limit: u64::from(u32::MAX),
    })?;
    out.extend_from_slice(&count.to_le_bytes());
    for c in &m.components {
        let p = c.path.as_bytes();
        // BundlePath::new caps the length at 4096.
        out.extend_from_slice(&u16::try_from(p.len()).unwrap_or(u16::MAX).to_le_bytes());
        out.extend_from_slice(p);
        out.push(match c.kind {
            ComponentKind::Patch => KIND_PATCH,
            ComponentKind::Add => KIND_ADD,
            ComponentKind::Remove => KIND_REMOVE,
        });
        out.extend_from_slice(&c.mode.to_le_bytes());
        for v in [c.baseline, c.target].into_iter().flatten() {
            put_version(&mut out, &v);
        }
        out.push(u8::try_from(c.payloads.len()).unwrap_or(u8::MAX));
        for pl in &c.payloads {
            put_version(&mut out, &pl.from);
            out.extend_from_slice(&pl.len.to_le_bytes());
            out.extend_from_slice(pl.sha256.as_bytes());
        }
    }
    Ok(out)
}

pub(crate) fn put_version(out: &mut Vec<u8>, v: &FileVersion) {
    out.extend_from_slice(&v.len.to_le_bytes());
    out.extend_from_slice(v.sha256.as_bytes());
}

fn put_text(out: &mut Vec<u8>, s: &str, what: &'static str) -> Result<(), Error> {
    let n = u8::try_from(s.len())
        .ok()
        .filter(|&n| n > 0)
        .ok_or(Error::LimitExceeded {
            what,
            actual: s.len() as u64,
            limit: 255,
        })?;
    out.push(n);
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// Assembles a signed bundle from a manifest and its payloads (in manifest order).
pub(crate) fn assemble(
    m: &Manifest,
    payloads: &[&[u8]],
    key: &SecretKey,
) -> Result<Vec<u8>, Error> {
    let manifest = encode_manifest(m)?;
    let payloads_len = payloads
        .iter()
        .try_fold(0u64, |a, p| a.checked_add(<[u8]>::len(p) as u64))
        .ok_or(Error::Bug("payload lengths overflow"))?;
    let manifest_len = u32::try_from(manifest.len()).map_err(|_| Error::LimitExceeded {
        what: "bundle manifest length",
        actual: manifest.len() as u64,
        limit: u64::from(u32::MAX),
    })?;
    let mut out = Vec::new();
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&[0; 3]);
    out.extend_from_slice(&manifest_len.to_le_bytes());
    out.extend_from_slice(&payloads_len.to_le_bytes());
    out.extend_from_slice(&key.public_key().key_id());
    out.extend_from_slice(&manifest);
    let mut msg = SIG_CONTEXT.to_vec();
    msg.extend_from_slice(&out);
    out.extend_from_slice(&key.sign(&msg));
    for p in payloads {
        out.extend_from_slice(p);
    }
    Ok(out)
}
