//! Codec tests: a naive oracle applier, round-trips, malformed patches.
//!
//! * `builder`: writes patches field by field from docs/FORMAT.md.
//! * `naive`: the in-memory oracle applier, also from docs/FORMAT.md.
//! * `roundtrip`: diff → apply (streaming and oracle) on generated inputs.
//! * `malformed`: truncations, header fields, segment corruptions, wrong files.
//! * `oracle`: the oracle and the streaming applier agree on crafted and mutated patches.

mod builder;
mod malformed;
mod naive;
mod oracle;
mod roundtrip;

use std::cell::Cell;
use std::io::{self, Read, Write};

use deltaswap::{Error, PatchReader, Source, Verified};

/// An old file that offers only `read_at` (no `as_slice`), and fails the test if
/// apply ever reads outside it.
pub struct ReadAtOnly<'a> {
    data: &'a [u8],
    reads: Cell<u64>,
}

impl<'a> ReadAtOnly<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        ReadAtOnly {
            data,
            reads: Cell::new(0),
        }
    }
}

impl Source for ReadAtOnly<'_> {
    fn len(&self) -> u64 {
        self.data.len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .expect("offset overflow");
        assert!(
            end <= self.data.len() as u64,
            "apply read old[{offset}..{end}] outside an old file of {} bytes",
            self.data.len()
        );
        buf.copy_from_slice(&self.data[offset as usize..end as usize]);
        self.reads.set(self.reads.get() + 1);
        Ok(())
    }
}

/// A writer that takes one byte per call and counts calls.
#[derive(Default)]
pub struct OneByteWriter {
    pub data: Vec<u8>,
    pub calls: usize,
}

impl Write for OneByteWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.calls += 1;
        match buf.first() {
            Some(b) => {
                self.data.push(*b);
                Ok(1)
            }
            None => Ok(0),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A patch reader that hands out 1 to 4 bytes per call and, when `interrupt` is
/// set, an `Interrupted` error every fifth call.
pub struct TrickleReader<'a> {
    data: &'a [u8],
    pos: usize,
    calls: usize,
    interrupt: bool,
}

impl<'a> TrickleReader<'a> {
    pub fn new(data: &'a [u8], interrupt: bool) -> Self {
        TrickleReader {
            data,
            pos: 0,
            calls: 0,
            interrupt,
        }
    }
}

impl Read for TrickleReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.calls += 1;
        if self.interrupt && self.calls % 5 == 0 {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "try again"));
        }
        let n = (self.calls % 4 + 1)
            .min(buf.len())
            .min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The streaming applier at its most awkward: the patch trickles in, the old
/// file is `read_at` only, the output is taken one byte at a time. Returns the
/// result and what was written (also on error).
pub fn stream_apply(
    old: &[u8],
    patch: &[u8],
    interrupt: bool,
) -> (Result<Verified, Error>, Vec<u8>) {
    let src = ReadAtOnly::new(old);
    let mut w = OneByteWriter::default();
    let res = PatchReader::new(TrickleReader::new(patch, interrupt))
        .and_then(|r| r.apply_to(&src, &mut w));
    (res, w.data)
}

/// Applies with every applier (slice apply, streaming with and without
/// interruptions) and the oracle; asserts they agree; returns the streaming
/// result.
pub fn apply_all(old: &[u8], patch: &[u8]) -> Result<Vec<u8>, Error> {
    let oracle = naive::apply(old, patch);
    let slice = deltaswap::apply(old, patch);
    let (streamed, written) = stream_apply(old, patch, false);
    let (interrupted, written_i) = stream_apply(old, patch, true);
    match (&oracle, &slice) {
        (Ok(a), Ok(b)) => assert!(a == b, "oracle and apply() outputs differ"),
        (Err(_), Err(_)) => {}
        _ => panic!(
            "oracle and apply() disagree: oracle {:?}, apply {:?}",
            oracle.as_ref().map(Vec::len),
            slice.as_ref().map(Vec::len)
        ),
    }
    match (&slice, &streamed, &interrupted) {
        (Ok(out), Ok(v), Ok(vi)) => {
            assert!(written == *out, "streaming output differs from apply()");
            assert!(written_i == *out, "interrupted streaming output differs");
            assert_eq!(v.len(), out.len() as u64);
            assert_eq!(v.sha256(), deltaswap::Sha256Digest::of(out));
            assert_eq!(vi, v);
        }
        (Err(a), Err(b), Err(c)) => {
            assert_eq!(
                a.format_kind(),
                b.format_kind(),
                "apply() and streaming give different errors: {a:?} / {b:?}"
            );
            assert_eq!(b.format_kind(), c.format_kind(), "{b:?} / {c:?}");
            assert_eq!(
                std::mem::discriminant(a),
                std::mem::discriminant(b),
                "{a:?} / {b:?}"
            );
        }
        _ => panic!("appliers disagree: {slice:?} / {streamed:?} / {interrupted:?}"),
    }
    slice
}
