//! SHA-256 digests and hashing adapters.

use std::fmt;
use std::io::{self, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::{Scope, ScopedJoinHandle};

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

/// New files at least this long are hashed on a second thread while they are
/// written ([`PipedHashingWriter`]). Below it, starting a thread costs more
/// than it saves.
pub(crate) const PIPE_MIN: u64 = 4 << 20;

/// Bytes handed to the hashing thread at a time.
const PIPE_CHUNK: usize = 256 << 10;

/// Chunks that may wait for the hashing thread. With the chunk being filled
/// and the one being hashed, at most [`PIPE_CHUNKS`] chunks exist.
const PIPE_DEPTH: usize = 2;

/// The most chunks a writer allocates (1 MiB), whatever the file's size: the
/// one being filled, [`PIPE_DEPTH`] queued and the one being hashed. When
/// all exist and none has come back, the writer waits for the hashing
/// thread to return one. (Until 2026-11-30 it allocated a fresh chunk
/// whenever none had come back yet, and returned chunks piled up in the
/// spare queue: `tests/bounded_memory.rs` saw 1.56 and 2.25 MiB instead of
/// 1.31 now and then.)
const PIPE_CHUNKS: usize = PIPE_DEPTH + 2;

/// A writer that writes through to `inner` on the caller's thread and hashes
/// the same bytes on a second one, so that SHA-256 of the new file runs
/// beside the decoding instead of after each write (inline, the old and
/// new files' hashes were 45% of libnode's apply). The bytes are copied once into chunks of
/// [`PIPE_CHUNK`]; full chunks go to the hashing thread through a channel
/// [`PIPE_DEPTH`] deep, and come back empty to be filled again.
pub(crate) struct PipedHashingWriter<'scope, W> {
    inner: W,
    chunk: Vec<u8>,
    to_hasher: Option<SyncSender<Vec<u8>>>,
    spares: Receiver<Vec<u8>>,
    /// Chunks allocated so far, at most [`PIPE_CHUNKS`].
    chunks: usize,
    /// Last, so that it is dropped after `to_hasher`: the channel is closed
    /// by then, and the thread's loop ends.
    thread: Joined<'scope>,
}

/// The hashing thread, joined when dropped. A writer dropped without
/// [`PipedHashingWriter::finish`] (an apply that failed part-way) thus still
/// waits until the thread has exited, its thread-local state torn down, so
/// that no thread of the call outlives it. (The scope would only wait for
/// the thread's closure to return; LeakSanitizer caught the thread's
/// runtime allocations still live after an apply returned, docs/SECURITY.md.)
struct Joined<'scope>(Option<ScopedJoinHandle<'scope, Hasher>>);

impl Drop for Joined<'_> {
    fn drop(&mut self) {
        if let Some(thread) = self.0.take() {
            let _ = thread.join();
        }
    }
}

impl<'scope, W: Write> PipedHashingWriter<'scope, W> {
    /// Starts the hashing thread in `scope`. If the thread cannot be started,
    /// gives `inner` back so that the caller can hash inline.
    pub(crate) fn start<'env>(scope: &'scope Scope<'scope, 'env>, inner: W) -> Result<Self, W> {
        let (to_hasher, queued) = sync_channel::<Vec<u8>>(PIPE_DEPTH);
        // Room for every chunk but the one being filled: returning one
        // never fails for want of room, so no chunk is lost.
        let (give_back, spares) = sync_channel::<Vec<u8>>(PIPE_CHUNKS);
        let spawned = std::thread::Builder::new()
            .name("deltaswap-hash".into())
            .spawn_scoped(scope, move || {
                let mut hasher = Hasher::new();
                for chunk in queued {
                    hasher.update(&chunk);
                    // The queue has room for every chunk; it fails only
                    // when the writer is gone, and the chunk is freed here.
                    let _ = give_back.try_send(chunk);
                }
                hasher
            });
        match spawned {
            Ok(thread) => Ok(PipedHashingWriter {
                inner,
                chunk: Vec::with_capacity(PIPE_CHUNK),
                to_hasher: Some(to_hasher),
                spares,
                chunks: 1,
                thread: Joined(Some(thread)),
            }),
            Err(_) => Err(inner),
        }
    }

    /// Sends the chunk being filled to the hashing thread.
    fn send(&mut self) -> io::Result<()> {
        let full = std::mem::take(&mut self.chunk);
        let stopped = || io::Error::other("the hashing thread stopped");
        self.to_hasher
            .as_ref()
            .ok_or_else(stopped)?
            .send(full)
            .map_err(|_| stopped())?;
        // A chunk the hashing thread has given back; else a new one while
        // fewer than `PIPE_CHUNKS` exist; else wait for one to come back.
        self.chunk = match self.spares.try_recv() {
            Ok(spare) => spare,
            Err(_) if self.chunks < PIPE_CHUNKS => {
                self.chunks += 1;
                Vec::with_capacity(PIPE_CHUNK)
            }
            Err(_) => self.spares.recv().map_err(|_| stopped())?,
        };
        self.chunk.clear();
        Ok(())
    }

    /// Hands the last bytes to the hashing thread and waits for its result.
    pub(crate) fn finish(mut self) -> io::Result<(W, Hasher)> {
        if !self.chunk.is_empty() {
            self.send()?;
        }
        // Closing the channel ends the thread's loop.
        drop(self.to_hasher.take());
        let hasher = self
            .thread
            .0
            .take()
            .ok_or_else(|| io::Error::other("the hashing thread was already joined"))?
            .join()
            .map_err(|_| io::Error::other("the hashing thread panicked"))?;
        Ok((self.inner, hasher))
    }
}

impl<W: Write> Write for PipedHashingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        let mut rest = buf.get(..n).unwrap_or(buf);
        while !rest.is_empty() {
            let room = PIPE_CHUNK.saturating_sub(self.chunk.len()).min(rest.len());
            let (now, later) = rest.split_at(room);
            self.chunk.extend_from_slice(now);
            rest = later;
            if self.chunk.len() >= PIPE_CHUNK {
                self.send()?;
            }
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hashes `data` written in pieces of `sizes` (cycled) through a
    /// [`PipedHashingWriter`] whose inner writer takes at most `take` bytes a
    /// call; returns what reached the inner writer and the digest.
    fn piped(data: &[u8], sizes: &[usize], take: usize) -> (Vec<u8>, Sha256Digest, u64) {
        struct Short {
            got: Vec<u8>,
            take: usize,
        }
        impl Write for Short {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                let n = buf.len().min(self.take);
                self.got.extend_from_slice(&buf[..n]);
                Ok(n)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        std::thread::scope(|scope| {
            let inner = Short {
                got: Vec::new(),
                take,
            };
            let Ok(mut w) = PipedHashingWriter::start(scope, inner) else {
                panic!("no hashing thread");
            };
            let mut rest = data;
            for &size in sizes.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (now, later) = rest.split_at(size.min(rest.len()));
                w.write_all(now).unwrap();
                rest = later;
            }
            w.flush().unwrap();
            let (inner, hasher) = w.finish().unwrap();
            let len = hasher.len();
            (inner.got, hasher.finish(), len)
        })
    }

    #[test]
    fn piped_digest_is_the_digest_of_what_was_written() {
        let data: Vec<u8> = (0..3 * PIPE_CHUNK as u32 + 4321)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let cases: [(&[usize], usize); 6] = [
            (&[1 << 30], usize::MAX),
            (&[PIPE_CHUNK], usize::MAX),
            (&[PIPE_CHUNK - 1, 1, 2], usize::MAX),
            (&[7, 100_000, 0, 3], usize::MAX),
            (&[1 << 30], 1000),
            (&[PIPE_CHUNK + 1], PIPE_CHUNK / 3),
        ];
        for (sizes, take) in cases {
            let (got, digest, len) = piped(&data, sizes, take);
            assert!(got == data, "{sizes:?} {take}");
            assert_eq!(digest, Sha256Digest::of(&data), "{sizes:?} {take}");
            assert_eq!(len, data.len() as u64);
        }
        let (got, digest, len) = piped(&[], &[1], usize::MAX);
        assert!(got.is_empty());
        assert_eq!((digest, len), (Sha256Digest::of(b""), 0));
    }

    #[test]
    fn a_failing_writer_stops_the_pipe_without_hanging() {
        struct Fails;
        impl Write for Fails {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        std::thread::scope(|scope| {
            let Ok(mut w) = PipedHashingWriter::start(scope, Fails) else {
                panic!("no hashing thread");
            };
            assert!(w.write(&[1; 10]).is_err());
            // Dropped without finish: the channel closes and the drop joins
            // the thread.
        });
    }
}
