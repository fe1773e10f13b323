//! SHA-256 digests and hashing adapters.

use std::fmt;
use std::io::{self, Write};

use sha2::{Digest, Sha256};

/// A SHA-256 digest, shown as 64 lowercase hex digits.
///
/// # Examples
///
/// ```
/// let d = deltaswap::Sha256Digest::of(b"abc");
/// assert!(d.to_string().starts_with("ba7816bf"));
/// assert_eq!(d.to_string().parse::<deltaswap::Sha256Digest>().unwrap(), d);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    /// Digest of a byte slice.
    pub fn of(data: &[u8]) -> Sha256Digest {
        Sha256Digest(Sha256::digest(data).into())
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Digest({self})")
    }
}

/// The error of parsing a [`Sha256Digest`] from text.
///
/// # Examples
///
/// ```
/// let err = "not hex".parse::<deltaswap::Sha256Digest>().unwrap_err();
/// assert_eq!(err.to_string(), "not a SHA-256 digest: expected 64 hex digits");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a SHA-256 digest: expected 64 hex digits")]
pub struct ParseDigestError(());

impl std::str::FromStr for Sha256Digest {
    type Err = ParseDigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return Err(ParseDigestError(()));
        }
        let mut out = [0u8; 32];
        for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            let hi = hex_val(pair.first().copied()).ok_or(ParseDigestError(()))?;
            let lo = hex_val(pair.get(1).copied()).ok_or(ParseDigestError(()))?;
            *o = (hi << 4) | lo;
        }
        Ok(Sha256Digest(out))
    }
}

fn hex_val(c: Option<u8>) -> Option<u8> {
    match c? {
        c @ b'0'..=b'9' => Some(c - b'0'),
        c @ b'a'..=b'f' => Some(c - b'a' + 10),
        c @ b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// A running SHA-256 with a byte count.
#[derive(Clone, Default)]
pub(crate) struct Hasher {
    inner: Sha256,
    len: u64,
}

impl Hasher {
    pub(crate) fn new() -> Hasher {
        Hasher::default()
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        self.inner.update(data);
        // usize -> u64 cannot truncate on supported targets
        self.len = self.len.saturating_add(data.len() as u64);
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    pub(crate) fn finish(self) -> Sha256Digest {
        Sha256Digest(self.inner.finalize().into())
    }
}

/// A writer that hashes and counts what passes through it.
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Hasher::new(),
        }
    }

    pub(crate) fn finish(self) -> (W, Hasher) {
        (self.inner, self.hasher)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(buf.get(..n).unwrap_or(buf));
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
