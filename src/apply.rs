//! Streaming, verified apply.
//!
//! The patch is read once, front to back, through `Read`; the old file is read by
//! random access through [`Source`]; the new file is written through `Write` in
//! fixed-size pieces. Memory is bounded by [`Limits`] whatever the file sizes:
//! one copy buffer, one segment's decoded control and delta streams, and one zstd
//! window for the literal stream.
//!
//! Every number taken from the patch is checked before use: lengths against the
//! bytes still to produce, copy ranges against the old file, stream lengths
//! against the limits, so no input can make apply panic, allocate beyond the
//! limits or read outside the old file.

use std::io::{self, BufReader, Read, Write};

use crate::error::{Error, FormatErrorKind, Subject};
use crate::format::{
    hex_digits, read_segment_header, zigzag_decode, Codec, EditKind, EditList, PatchHeader,
    PatchInput, SliceReader, StreamDesc, TakeCounted, CONTROL, DELTA_BYTES, DELTA_LENS,
    HEX_SOURCES, LITERALS, MAX_LITERAL_EDIT, STREAMS, STREAM_NAMES, TRANSFORM_A64_LITERALS,
    TRANSFORM_X86, ZERO_RUNS,
};
use crate::hash::{Hasher, HashingWriter, PipedHashingWriter, Sha256Digest, PIPE_MIN};
use crate::limits::Limits;
use crate::refs::{RefMap, MAPPED};
use crate::source::Source;

/// Size of the copy buffer: the unit in which old data is read and new data written.
const COPY_BUF: usize = 256 << 10;

/// Proof that a patch was applied and its result checked: the new file's length
/// and SHA-256, equal to the ones the patch header declares.
///
/// Only apply creates it, so a value of this type means "verified".
///
/// # Examples
///
/// ```
/// let (old, new) = (b"version 1".to_vec(), b"version 2".to_vec());
/// let patch = deltaswap::diff(&old, &new)?;
/// let mut out = Vec::new();
/// let verified = deltaswap::PatchReader::new(&patch[..])?.apply_to(&old, &mut out)?;
/// assert_eq!(verified.len(), new.len() as u64);
/// assert_eq!(verified.sha256(), deltaswap::Sha256Digest::of(&new));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "the result is only verified if you act on this value"]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verified {
    len: u64,
    sha256: Sha256Digest,
}

impl Verified {
    /// Length of the new file.
    pub fn len(&self) -> u64 {
        self.len
    }
    /// True when the new file is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// SHA-256 of the new file.
    pub fn sha256(&self) -> Sha256Digest {
        self.sha256
    }
}

/// A patch whose header has been read and checked against the limits, ready to
/// apply to an old file.
///
/// # Examples
///
/// ```
/// use deltaswap::PatchReader;
/// let old = b"the quick brown fox jumps over the lazy dog".to_vec();
/// let new = b"the quick brown cat jumps over the lazy dog!".to_vec();
/// let patch = deltaswap::diff(&old, &new)?;
///
/// let reader = PatchReader::new(&patch[..])?;
/// let mut out = Vec::new();
/// let verified = reader.apply_to(&old[..], &mut out)?;
/// assert_eq!(out, new);
/// assert_eq!(verified.sha256(), deltaswap::Sha256Digest::of(&new));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct PatchReader<R> {
    input: PatchInput<R>,
    header: PatchHeader,
    limits: Limits,
    /// The reference map of transforms 2 and 4, and its stored length.
    refs: Option<(RefMap, u64)>,
}

impl<R> std::fmt::Debug for PatchReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatchReader")
            .field("header", &self.header)
            .field("offset", &self.input.offset())
            .finish_non_exhaustive()
    }
}

impl<R: Read> PatchReader<R> {
    /// Reads the header with the default [`Limits`].
    ///
    /// # Errors
    ///
    /// A malformed header is [`Error::Format`]; a declared new length over the
    /// limit is [`Error::LimitExceeded`].
    ///
    /// # Panics
    ///
    /// Never, for any input.
    pub fn new(patch: R) -> Result<PatchReader<R>, Error> {
        PatchReader::with_limits(patch, Limits::default())
    }

    /// Reads the header with the given limits.
    pub fn with_limits(patch: R, limits: Limits) -> Result<PatchReader<R>, Error> {
        let mut input = PatchInput::new(patch);
        let header = PatchHeader::read(&mut input)?;
        if header.new_len > limits.max_output_len {
            return Err(Error::LimitExceeded {
                what: "target length",
                actual: header.new_len,
                limit: limits.max_output_len,
            });
        }
        let refs = if header.transform & MAPPED != 0 {
            Some(read_ref_map(&mut input, header.old_len)?)
        } else {
            None
        };
        Ok(PatchReader {
            input,
            header,
            limits,
            refs,
        })
    }

    /// The header: sizes and digests of the old and new files.
    pub fn header(&self) -> &PatchHeader {
        &self.header
    }

    /// Checks `old` against the header (length, then SHA-256) and, only if it
    /// matches, streams the new file into `out`. The result's length and SHA-256
    /// are checked before this returns `Ok`.
    ///
    /// Nothing is written to `out` unless the old file matches. If an error occurs
    /// later, `out` holds a partial, unverified result that the caller must discard
    /// (the atomic file functions of this crate do that for you).
    ///
    /// A result of 4 MiB or more is hashed on a second thread while it is
    /// written (when the machine has more than one core): `out` itself is
    /// only ever written from the calling thread, and the thread ends before
    /// this returns.
    ///
    /// # Errors
    ///
    /// [`Error::SizeMismatch`] / [`Error::HashMismatch`] with [`Subject::Source`] for a
    /// wrong old file; [`Error::Format`] for a malformed patch;
    /// [`Error::LimitExceeded`]; [`Error::HashMismatch`] with [`Subject::Target`] if the
    /// result does not match; [`Error::Io`] for read or write failures.
    ///
    /// # Panics
    ///
    /// Never, for any patch bytes.
    pub fn apply_to<S: Source + ?Sized, W: Write>(
        self,
        old: &S,
        out: W,
    ) -> Result<Verified, Error> {
        verify_source(old, &self.header)?;
        self.apply_unverified_source(old, out)
    }

    /// The same as [`PatchReader::apply_to`] without hashing the old file first, for
    /// callers that have just verified it themselves. The result is still checked.
    pub(crate) fn apply_unverified_source<S: Source + ?Sized, W: Write>(
        mut self,
        old: &S,
        out: W,
    ) -> Result<Verified, Error> {
        let header = self.header.clone();
        let old_len = old.len();
        if old_len != header.old_len {
            return Err(Error::SizeMismatch {
                subject: Subject::Source,
                expected: header.old_len,
                found: old_len,
            });
        }
        let mut state = ApplyState {
            old,
            old_len,
            old_pos: 0,
            buf: vec![0u8; COPY_BUF],
            model_left: self.limits.max_model_len,
            new_pos: 0,
            literals: if header.transform & TRANSFORM_X86 != 0 {
                Some(crate::transform::Literals::X86)
            } else if header.transform & TRANSFORM_A64_LITERALS != 0 {
                Some(crate::transform::Literals::A64)
            } else {
                None
            },
            refs: self.refs.take().map(|(map, _)| map),
            kinds: header.transform & MAPPED,
            win: Vec::new(),
        };
        let new_len = header.new_len;
        let edits = header.edits;
        let mut write_all = |out: &mut dyn Write| -> Result<(), Error> {
            if edits {
                apply_edits(&mut self.input, &mut state, new_len, out)?;
                self.input.expect_end()?;
                return out.flush().map_err(Error::io("writing the new file"));
            }
            let mut produced: u64 = 0;
            while produced < new_len {
                let remaining = new_len.saturating_sub(produced);
                let n = apply_segment(&mut self.input, &self.limits, &mut state, remaining, out)?;
                produced = produced.saturating_add(n);
            }
            self.input.expect_end()?;
            out.flush().map_err(Error::io("writing the new file"))
        };
        let hasher = if new_len >= pipe_min() && more_than_one_core() {
            // The new file's SHA-256 is computed on a second thread as it is
            // written (see `PipedHashingWriter`).
            std::thread::scope(|scope| match PipedHashingWriter::start(scope, out) {
                Ok(mut piped) => {
                    #[cfg(feature = "fuzzing")]
                    crate::fuzzing::count_piped();
                    write_all(&mut piped)?;
                    let (_, hasher) = piped.finish().map_err(Error::io("hashing the new file"))?;
                    Ok::<_, Error>(hasher)
                }
                Err(out) => hash_inline(out, write_all),
            })?
        } else {
            hash_inline(out, write_all)?
        };
        finish_target(hasher, &header)
    }
}

/// Runs `write_all` through a writer that hashes on the calling thread.
fn hash_inline<W: Write>(
    out: W,
    write_all: impl FnOnce(&mut dyn Write) -> Result<(), Error>,
) -> Result<Hasher, Error> {
    let mut out = HashingWriter::new(out);
    write_all(&mut out)?;
    Ok(out.finish().1)
}

/// Results at least this long are hashed on a second thread: [`PIPE_MIN`],
/// or any length inside `fuzzing::always_piped`.
fn pipe_min() -> u64 {
    #[cfg(feature = "fuzzing")]
    if crate::fuzzing::piped_always() {
        return 0;
    }
    PIPE_MIN
}

/// Whether a second thread can run beside this one.
fn more_than_one_core() -> bool {
    std::thread::available_parallelism().is_ok_and(|n| n.get() > 1)
}

/// Checks the old file's length and SHA-256 against the header.
pub(crate) fn verify_source<S: Source + ?Sized>(
    old: &S,
    header: &PatchHeader,
) -> Result<(), Error> {
    let found = old.len();
    if found != header.old_len {
        return Err(Error::SizeMismatch {
            subject: Subject::Source,
            expected: header.old_len,
            found,
        });
    }
    let digest = hash_source(old)?;
    if digest != header.old_sha256 {
        return Err(Error::HashMismatch {
            subject: Subject::Source,
            expected: header.old_sha256,
            found: digest,
        });
    }
    Ok(())
}

/// SHA-256 of a whole source.
pub(crate) fn hash_source<S: Source + ?Sized>(src: &S) -> Result<Sha256Digest, Error> {
    let mut hasher = Hasher::new();
    if let Some(slice) = src.as_slice() {
        hasher.update(slice);
        return Ok(hasher.finish());
    }
    let len = src.len();
    let mut buf = vec![0u8; COPY_BUF];
    let mut pos = 0u64;
    while pos < len {
        let n = usize::try_from(len.saturating_sub(pos))
            .unwrap_or(usize::MAX)
            .min(COPY_BUF);
        let chunk = buf.get_mut(..n).ok_or(Error::Bug("copy buffer size"))?;
        src.read_at(pos, chunk)
            .map_err(Error::io("reading the old file"))?;
        hasher.update(chunk);
        pos = pos.saturating_add(n as u64);
    }
    Ok(hasher.finish())
}

fn finish_target(hasher: Hasher, header: &PatchHeader) -> Result<Verified, Error> {
    let len = hasher.len();
    if len != header.new_len {
        return Err(Error::Bug("output length differs from the segments' total"));
    }
    let sha256 = hasher.finish();
    if sha256 != header.new_sha256 {
        return Err(Error::HashMismatch {
            subject: Subject::Target,
            expected: header.new_sha256,
            found: sha256,
        });
    }
    Ok(Verified { len, sha256 })
}

struct ApplyState<'a, S: ?Sized> {
    old: &'a S,
    old_len: u64,
    old_pos: u64,
    buf: Vec<u8>,
    /// Deltas the delta model may still decode ([`Limits::max_model_len`]).
    model_left: u64,
    /// New-file position of the next byte written.
    new_pos: u64,
    /// The transform literal bytes went through, 1 or 16 (`src/transform.rs`).
    literals: Option<crate::transform::Literals>,
    /// The map of transforms 2 and 4: copied old bytes are predicted
    /// through it (`src/refs.rs`), with the site kinds `kinds`.
    refs: Option<RefMap>,
    kinds: u8,
    /// The old bytes around a copied chunk, for transforms 2 and 4.
    win: Vec<u8>,
}

/// What a segment adds to the bytes it copies from the old file.
enum Deltas<'a> {
    /// Run layout: run lengths and changed bytes, decoded in memory.
    Runs(RunDeltas<'a>),
    /// Plain layout: one delta per copied byte, decoded as it is consumed.
    Plain(PlainDeltas<'a>),
}

impl Deltas<'_> {
    /// Adds the deltas of the next `buf.len()` copied bytes to `buf`.
    fn apply(&mut self, buf: &mut [u8]) -> Result<(), Error> {
        match self {
            Deltas::Runs(d) => d.apply(buf),
            Deltas::Plain(d) => d.apply(buf),
        }
    }

    /// Checks that the segment's copies consumed every delta.
    fn finish(self) -> Result<(), Error> {
        match self {
            Deltas::Runs(d) => d.finish(),
            Deltas::Plain(d) => d.finish(),
        }
    }
}

/// The delta runs of a segment: alternating zero runs (bytes copied unchanged)
/// and delta runs (bytes added to the old bytes), over all copy ranges of the
/// segment laid end to end.
struct RunDeltas<'a> {
    runs: SliceReader<'a>,
    lens: SliceReader<'a>,
    bytes: SliceReader<'a>,
    zeros_left: u64,
    deltas_left: u64,
}

impl RunDeltas<'_> {
    /// Adds the delta stream to `buf` (old bytes in, new bytes out).
    fn apply(&mut self, buf: &mut [u8]) -> Result<(), Error> {
        let mut i = 0usize;
        while i < buf.len() {
            if self.zeros_left == 0 && self.deltas_left == 0 {
                self.zeros_left = self.runs.read_varint()?;
                self.deltas_left = self.lens.read_varint()?;
                if self.zeros_left == 0 && self.deltas_left == 0 {
                    return Err(self.runs.err(FormatErrorKind::EmptyOperation));
                }
            }
            let left = buf.len().saturating_sub(i);
            if self.zeros_left > 0 {
                let k = usize::try_from(self.zeros_left)
                    .unwrap_or(usize::MAX)
                    .min(left);
                i = i.saturating_add(k);
                self.zeros_left = self.zeros_left.saturating_sub(k as u64);
                continue;
            }
            let k = usize::try_from(self.deltas_left)
                .unwrap_or(usize::MAX)
                .min(left);
            let add = self.bytes.take(k)?;
            let end = i.saturating_add(k);
            let dst = buf
                .get_mut(i..end)
                .ok_or(Error::Bug("delta run past buffer"))?;
            for (o, d) in dst.iter_mut().zip(add) {
                *o = o.wrapping_add(*d);
            }
            i = end;
            self.deltas_left = self.deltas_left.saturating_sub(k as u64);
        }
        Ok(())
    }

    fn finish(&self) -> Result<(), Error> {
        if self.zeros_left != 0 || self.deltas_left != 0 || !self.runs.is_empty() {
            return Err(self.runs.err(FormatErrorKind::StreamTrailing));
        }
        if !self.lens.is_empty() {
            return Err(self.lens.err(FormatErrorKind::StreamTrailing));
        }
        if !self.bytes.is_empty() {
            return Err(self.bytes.err(FormatErrorKind::StreamTrailing));
        }
        Ok(())
    }
}

/// Reads the stored bytes of a stream that is decoded later, as it is consumed.
fn read_stored<R: Read>(
    input: &mut PatchInput<R>,
    desc: &StreamDesc,
    what: &'static str,
) -> Result<Vec<u8>, Error> {
    // The stored length was checked against the segment buffer limit by the caller.
    let stored = usize::try_from(desc.stored_len)
        .map_err(|_| input.err(what, FormatErrorKind::OutOfRange))?;
    let mut v = vec![0u8; stored];
    input.read_exact(&mut v, what)?;
    Ok(v)
}

/// The deltas of a plain-layout segment: one byte per copied byte, decoded
/// from the stored bytes held in memory, a buffer at a time.
struct PlainDeltas<'a> {
    dec: PlainDecoder<'a>,
    /// Decoded bytes not yet consumed by a copy.
    left: u64,
    scratch: Vec<u8>,
    at: u64,
}

enum PlainDecoder<'a> {
    Raw(&'a [u8]),
    Zstd(Box<zstd::stream::read::Decoder<'static, &'a [u8]>>),
    Model {
        model: crate::model::StreamModel,
        coded: crate::model::Decoder<'a>,
    },
}

impl<'a> PlainDeltas<'a> {
    const WHAT: &'static str = "delta-byte stream";

    fn new(
        stored: &'a [u8],
        desc: &StreamDesc,
        at: u64,
        limits: &Limits,
    ) -> Result<PlainDeltas<'a>, Error> {
        let bad = |kind| Error::Format(crate::error::FormatError::new(at, Self::WHAT, kind));
        let dec = match desc.codec {
            Codec::Raw => PlainDecoder::Raw(stored),
            Codec::Zstd => {
                let mut dec = zstd::stream::read::Decoder::with_buffer(stored)
                    .map_err(|_| bad(FormatErrorKind::BadCompression))?
                    .single_frame();
                dec.window_log_max(limits.max_window_log)
                    .map_err(|_| bad(FormatErrorKind::BadCompression))?;
                PlainDecoder::Zstd(Box::new(dec))
            }
            Codec::Model | Codec::BlockModel => {
                let params = desc
                    .model
                    .ok_or(Error::Bug("model stream without parameters"))?;
                let window_log = u32::from(params.window_log);
                if window_log > limits.max_window_log {
                    return Err(Error::LimitExceeded {
                        what: "delta model window (log2)",
                        actual: u64::from(window_log),
                        limit: u64::from(limits.max_window_log),
                    });
                }
                PlainDecoder::Model {
                    model: crate::model::StreamModel::new(
                        desc.raw_len,
                        window_log,
                        desc.codec == Codec::BlockModel,
                    ),
                    coded: crate::model::Decoder::new(stored),
                }
            }
            // The segment reader admits LZMA for the literal stream only.
            Codec::Lzma => return Err(bad(FormatErrorKind::UnknownCodec(Codec::Lzma as u8))),
        };
        Ok(PlainDeltas {
            dec,
            left: desc.raw_len,
            scratch: Vec::new(),
            at,
        })
    }

    fn err(&self, kind: FormatErrorKind) -> Error {
        Error::Format(crate::error::FormatError::new(self.at, Self::WHAT, kind))
    }

    /// Decodes exactly `out.len()` bytes (the caller checked they are declared).
    fn fill(&mut self, out: &mut [u8]) -> Result<(), Error> {
        let at = self.at;
        let bad = || {
            Error::Format(crate::error::FormatError::new(
                at,
                Self::WHAT,
                FormatErrorKind::BadCompression,
            ))
        };
        match &mut self.dec {
            PlainDecoder::Raw(rest) => {
                let n = out.len();
                let (head, tail) = rest.split_at_checked(n).ok_or(Error::Bug("raw deltas"))?;
                out.copy_from_slice(head);
                *rest = tail;
            }
            PlainDecoder::Zstd(dec) => {
                read_literal(dec.as_mut(), out).map_err(|_| bad())?;
            }
            PlainDecoder::Model { .. } => return Err(Error::Bug("model deltas are not buffered")),
        }
        Ok(())
    }

    fn apply(&mut self, buf: &mut [u8]) -> Result<(), Error> {
        let n = buf.len();
        if n as u64 > self.left {
            return Err(self.err(FormatErrorKind::StreamUnderrun));
        }
        if let PlainDecoder::Model { model, coded } = &mut self.dec {
            // The model predicts each delta from the old byte it is added to.
            model.apply(coded, buf);
            if coded.overran() {
                return Err(self.err(FormatErrorKind::BadCompression));
            }
            self.left = self.left.saturating_sub(n as u64);
            return Ok(());
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        if scratch.len() < n {
            scratch.resize(n, 0);
        }
        let add = scratch.get_mut(..n).ok_or(Error::Bug("delta buffer"))?;
        let filled = self.fill(add);
        for (o, d) in buf.iter_mut().zip(add.iter()) {
            *o = o.wrapping_add(*d);
        }
        self.scratch = scratch;
        filled?;
        self.left = self.left.saturating_sub(n as u64);
        Ok(())
    }

    fn finish(self) -> Result<(), Error> {
        let trailing = self.err(FormatErrorKind::StreamTrailing);
        let corrupt = self.err(FormatErrorKind::BadCompression);
        if self.left != 0 {
            return Err(trailing);
        }
        // The coded data must end exactly with the declared bytes.
        let mut probe = [0u8; 1];
        let at_end = match self.dec {
            PlainDecoder::Raw(rest) => rest.is_empty(),
            PlainDecoder::Zstd(mut dec) => match dec.read(&mut probe) {
                Ok(0) => dec.finish().is_empty(),
                Ok(_) => false,
                Err(_) => return Err(corrupt),
            },
            PlainDecoder::Model { coded, .. } => {
                if coded.at_end() && !coded.ends_canonically() {
                    return Err(corrupt);
                }
                coded.at_end()
            }
        };
        if at_end {
            Ok(())
        } else {
            Err(trailing)
        }
    }
}

/// Reads one in-memory stream (control or delta) of a segment.
fn read_buffered_stream<R: Read>(
    input: &mut PatchInput<R>,
    desc: &StreamDesc,
    what: &'static str,
) -> Result<Vec<u8>, Error> {
    if desc.raw_len == 0 {
        return Ok(Vec::new());
    }
    // Lengths were checked against the segment buffer limit by the caller.
    let raw_len =
        usize::try_from(desc.raw_len).map_err(|_| input.err(what, FormatErrorKind::OutOfRange))?;
    match desc.codec {
        Codec::Raw => {
            let mut v = vec![0u8; raw_len];
            input.read_exact(&mut v, what)?;
            Ok(v)
        }
        // The reader admits the model only for plain delta bytes, which are
        // not buffered, and LZMA only for literals, which are streamed.
        Codec::Model | Codec::BlockModel | Codec::Lzma => {
            Err(input.err(what, FormatErrorKind::UnknownCodec(desc.codec as u8)))
        }
        Codec::Zstd => {
            let stored = usize::try_from(desc.stored_len)
                .map_err(|_| input.err(what, FormatErrorKind::OutOfRange))?;
            let mut packed = vec![0u8; stored];
            let at = input.offset();
            input.read_exact(&mut packed, what)?;
            let mut out = vec![0u8; raw_len];
            let bad = || {
                Error::Format(crate::error::FormatError::new(
                    at,
                    what,
                    FormatErrorKind::BadCompression,
                ))
            };
            // Exactly one frame, filling exactly raw_len bytes.
            match zstd::zstd_safe::find_frame_compressed_size(&packed) {
                Ok(n) if n == packed.len() => {}
                _ => return Err(bad()),
            }
            let mut dec = zstd::bulk::Decompressor::new().map_err(|_| bad())?;
            let n = dec
                .decompress_to_buffer(&packed, &mut out[..])
                .map_err(|_| bad())?;
            if n != raw_len {
                return Err(bad());
            }
            Ok(out)
        }
    }
}

/// Reads the reference map of transforms 2 and 4, which follows the header: a stream
/// descriptor (codec 0 or 1) and its payload, at most
/// [`MAP_MAX_RAW`](crate::refs::MAP_MAX_RAW) bytes decoded and stored.
/// Returns the map and its stored length.
fn read_ref_map<R: Read>(input: &mut PatchInput<R>, old_len: u64) -> Result<(RefMap, u64), Error> {
    const WHAT: &str = "reference map";
    let raw_len = input.read_varint(WHAT)?;
    if raw_len == 0 {
        return Ok((RefMap::decode(&[], input.offset(), old_len)?, 0));
    }
    let codec = match input.read_u8(WHAT)? {
        0 => Codec::Raw,
        1 => Codec::Zstd,
        other => return Err(input.err(WHAT, FormatErrorKind::UnknownCodec(other))),
    };
    let stored_len = match codec {
        Codec::Raw => raw_len,
        _ => match input.read_varint(WHAT)? {
            0 => return Err(input.err(WHAT, FormatErrorKind::OutOfRange)),
            n => n,
        },
    };
    let limit = crate::refs::MAP_MAX_RAW;
    if raw_len > limit || stored_len > limit {
        return Err(Error::LimitExceeded {
            what: WHAT,
            actual: raw_len.max(stored_len),
            limit,
        });
    }
    let desc = StreamDesc {
        raw_len,
        codec,
        stored_len,
        model: None,
        lzma: None,
    };
    let at = input.offset();
    let bytes = read_buffered_stream(input, &desc, WHAT)?;
    Ok((RefMap::decode(&bytes, at, old_len)?, stored_len))
}

/// Reads `chunk.len()` old bytes at `pos` into `chunk` as transforms 2 and 4
/// (`kinds`) predict them for a copy to new position `new_pos`, reading the
/// few old bytes around them into `win`.
#[allow(clippy::too_many_arguments)]
fn predict_chunk<S: Source + ?Sized>(
    map: &RefMap,
    kinds: u8,
    old: &S,
    old_len: u64,
    win: &mut Vec<u8>,
    chunk: &mut [u8],
    pos: u64,
    new_pos: u64,
) -> Result<(), Error> {
    use crate::refs::{LOOK_AHEAD, LOOK_BEHIND};
    let win_at = pos.saturating_sub(LOOK_BEHIND);
    let end = pos.saturating_add(chunk.len() as u64);
    let win_end = end.saturating_add(LOOK_AHEAD).min(old_len).max(end);
    let len = usize::try_from(win_end - win_at).map_err(|_| Error::Bug("window length"))?;
    win.resize(len, 0);
    old.read_at(win_at, win)
        .map_err(Error::io("reading the old file"))?;
    let from = usize::try_from(pos - win_at).unwrap_or(0);
    let src = win
        .get(from..from.saturating_add(chunk.len()))
        .ok_or(Error::Bug("window bounds"))?;
    chunk.copy_from_slice(src);
    // Positions are below 2^63 in any file; a shift that does not fit makes
    // no prediction, as in the writer.
    if let (Ok(n), Ok(o)) = (i64::try_from(new_pos), i64::try_from(pos)) {
        let window = crate::refs::OldWindow {
            bytes: win,
            at: win_at,
            old_len,
        };
        map.predict(kinds, window, chunk, pos, n - o);
    }
    Ok(())
}

/// Copies `old[from..to]` to `out` unchanged, through the copy buffer.
fn copy_old<S: Source + ?Sized, W: Write + ?Sized>(
    st: &mut ApplyState<'_, S>,
    from: u64,
    to: u64,
    out: &mut W,
) -> Result<(), Error> {
    let mut pos = from;
    while pos < to {
        let n = usize::try_from(to.saturating_sub(pos))
            .unwrap_or(usize::MAX)
            .min(COPY_BUF);
        let chunk = st.buf.get_mut(..n).ok_or(Error::Bug("copy buffer size"))?;
        st.old
            .read_at(pos, chunk)
            .map_err(Error::io("reading the old file"))?;
        out.write_all(chunk)
            .map_err(Error::io("writing the new file"))?;
        pos = pos.saturating_add(n as u64);
    }
    Ok(())
}

/// Applies the body of a patch in the edit layout (docs/FORMAT.md, "Edit
/// layout"): the old file, `new_len` bytes like the new one, with the
/// edits' bytes in place of its own. Holds the last [`HEX_SOURCES`] literal
/// edits (at most [`MAX_LITERAL_EDIT`] bytes each) for the hex edits that
/// follow them.
fn apply_edits<R: Read, S: Source + ?Sized, W: Write + ?Sized>(
    input: &mut PatchInput<R>,
    st: &mut ApplyState<'_, S>,
    new_len: u64,
    out: &mut W,
) -> Result<(), Error> {
    let mut list = EditList::start(input, new_len)?;
    // The last HEX_SOURCES literal edits, one slot each (16 KiB).
    let mut ring = vec![0u8; HEX_SOURCES * MAX_LITERAL_EDIT];
    let mut pos = 0u64;
    while let Some((head, start)) = list.next(input)? {
        copy_old(st, pos, start, out)?;
        match head.kind {
            EditKind::Literal => {
                // At most MAX_LITERAL_EDIT: `EditHead::read` checked it, and
                // `next` has given it the newest slot.
                let len = usize::try_from(head.len).unwrap_or(usize::MAX);
                let at = list
                    .recent()
                    .slot(0)
                    .ok_or(Error::Bug("literal edit without a slot"))?
                    * MAX_LITERAL_EDIT;
                let bytes = ring
                    .get_mut(at..at.saturating_add(len))
                    .ok_or(Error::Bug("literal edit over its slot"))?;
                input.read_exact(bytes, "literal edit")?;
                out.write_all(bytes)
                    .map_err(Error::io("writing the new file"))?;
            }
            EditKind::Hex { back, from } => {
                // Inside that literal edit: `EditHead::read` checked it.
                let at = list
                    .recent()
                    .slot(back)
                    .ok_or(Error::Bug("hex edit without a source"))?
                    * MAX_LITERAL_EDIT;
                let first = at.saturating_add(from);
                let source = usize::try_from(head.len / 2)
                    .ok()
                    .and_then(|n| ring.get(first..first.checked_add(n)?))
                    .ok_or(Error::Bug("hex edit outside its literal edit"))?;
                let digits = st
                    .buf
                    .get_mut(..source.len().saturating_mul(2))
                    .ok_or(Error::Bug("copy buffer size"))?;
                hex_digits(source, digits);
                out.write_all(digits)
                    .map_err(Error::io("writing the new file"))?;
            }
        }
        pos = start.saturating_add(head.len);
    }
    copy_old(st, pos, new_len, out)
}

/// Applies one segment; returns the bytes it produced.
fn apply_segment<R: Read, S: Source + ?Sized, W: Write + ?Sized>(
    input: &mut PatchInput<R>,
    limits: &Limits,
    st: &mut ApplyState<'_, S>,
    remaining: u64,
    out: &mut W,
) -> Result<u64, Error> {
    let seg_at = input.offset();
    let seg = read_segment_header(input)?;
    if seg.new_len > remaining {
        return Err(input.err("segment length", FormatErrorKind::OutputOverrun));
    }
    let lit_d = seg.streams[LITERALS];
    // Decoded and stored sizes of the buffered streams, checked before allocating.
    // In plain layout the delta bytes are decoded as they are consumed: only
    // their stored bytes are held.
    let plain = seg.is_plain();
    let mut buffered: u64 = 0;
    for (k, d) in seg.streams.iter().enumerate().take(LITERALS) {
        let held = if plain && k == DELTA_BYTES {
            Some(d.stored_len)
        } else if d.codec == Codec::Raw {
            Some(d.raw_len)
        } else {
            d.raw_len.checked_add(d.stored_len)
        };
        buffered = held
            .and_then(|h| buffered.checked_add(h))
            .ok_or_else(|| input.err("segment streams", FormatErrorKind::Overflow))?;
    }
    if buffered > limits.max_segment_buffer {
        return Err(Error::LimitExceeded {
            what: "segment control and delta streams",
            actual: buffered,
            limit: limits.max_segment_buffer,
        });
    }
    if lit_d.raw_len > seg.new_len {
        return Err(input.err("literal stream", FormatErrorKind::OutOfRange));
    }
    // Plain deltas: one per copied byte, so never more than the segment's length.
    if plain && seg.streams[DELTA_BYTES].raw_len > seg.new_len {
        return Err(input.err(STREAM_NAMES[DELTA_BYTES], FormatErrorKind::OutOfRange));
    }
    // The model decodes far slower per byte than the other codecs: its deltas
    // have their own budget for the whole patch.
    let model = seg.streams[DELTA_BYTES];
    if plain && model.codec.is_model() {
        st.model_left =
            st.model_left
                .checked_sub(model.raw_len)
                .ok_or_else(|| Error::LimitExceeded {
                    what: "delta-model deltas",
                    actual: limits
                        .max_model_len
                        .saturating_sub(st.model_left)
                        .saturating_add(model.raw_len),
                    limit: limits.max_model_len,
                })?;
    }
    let mut bufs: [Vec<u8>; LITERALS] = Default::default();
    let mut plain_at = 0;
    for (i, buf) in bufs.iter_mut().enumerate() {
        let desc = seg.streams.get(i).ok_or(Error::Bug("stream index"))?;
        let what = STREAM_NAMES.get(i).copied().unwrap_or("stream");
        *buf = if plain && i == DELTA_BYTES {
            plain_at = input.offset();
            read_stored(input, desc, what)?
        } else {
            read_buffered_stream(input, desc, what)?
        };
    }
    let [ctrl_buf, runs_buf, lens_buf, bytes_buf] = &bufs;

    let mut ctrl = SliceReader::new(ctrl_buf, seg_at, STREAM_NAMES[CONTROL]);
    let mut deltas = if plain {
        let desc = seg.streams[DELTA_BYTES];
        Deltas::Plain(PlainDeltas::new(bytes_buf, &desc, plain_at, limits)?)
    } else {
        Deltas::Runs(RunDeltas {
            runs: SliceReader::new(runs_buf, seg_at, STREAM_NAMES[ZERO_RUNS]),
            lens: SliceReader::new(lens_buf, seg_at, STREAM_NAMES[DELTA_LENS]),
            bytes: SliceReader::new(bytes_buf, seg_at, STREAM_NAMES[DELTA_BYTES]),
            zeros_left: 0,
            deltas_left: 0,
        })
    };

    let lit_at = input.offset();
    let lit_err = |kind| {
        Error::Format(crate::error::FormatError::new(
            lit_at,
            "literal stream",
            kind,
        ))
    };
    let mut literal = match lit_d.codec {
        _ if lit_d.raw_len == 0 => Literal::Empty,
        // The segment reader admits the model only for plain delta bytes.
        Codec::Model | Codec::BlockModel => {
            return Err(lit_err(FormatErrorKind::UnknownCodec(lit_d.codec as u8)))
        }
        Codec::Raw => Literal::Raw(input.by_ref_take(lit_d.stored_len)),
        Codec::Zstd => {
            let take = input.by_ref_take(lit_d.stored_len);
            let mut dec =
                zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(64 << 10, take))
                    .map_err(|_| lit_err(FormatErrorKind::BadCompression))?
                    .single_frame();
            dec.window_log_max(limits.max_window_log)
                .map_err(|_| lit_err(FormatErrorKind::BadCompression))?;
            Literal::Zstd(dec)
        }
        Codec::Lzma => {
            let params = lit_d
                .lzma
                .ok_or(Error::Bug("LZMA stream without parameters"))?;
            let dict_log = u32::from(params.dict_log);
            if dict_log > limits.max_window_log {
                return Err(Error::LimitExceeded {
                    what: "LZMA dictionary of the literal stream (log2)",
                    actual: u64::from(dict_log),
                    limit: u64::from(limits.max_window_log),
                });
            }
            let (lc, lp, pb) = params
                .lc_lp_pb()
                .ok_or(Error::Bug("LZMA properties out of range"))?;
            let take = input.by_ref_take(lit_d.stored_len);
            // The decoder reads its first five bytes here; a stream that
            // cannot start (too short, or a first byte other than zero) is
            // refused as damaged.
            let dec =
                lzma_rust2::LzmaReader::new(take, lit_d.raw_len, lc, lp, pb, 1 << dict_log, None)
                    .map_err(|_| lit_err(FormatErrorKind::BadCompression))?;
            Literal::Lzma(Box::new(dec))
        }
    };

    let mut seg_left = seg.new_len;
    let mut lit_left = lit_d.raw_len;
    while seg_left > 0 {
        let add_len = ctrl.read_varint()?;
        let lit_len = ctrl.read_varint()?;
        let seek = zigzag_decode(ctrl.read_varint()?);
        if add_len == 0 && lit_len == 0 {
            return Err(ctrl.err(FormatErrorKind::EmptyOperation));
        }
        let op_len = add_len
            .checked_add(lit_len)
            .ok_or_else(|| ctrl.err(FormatErrorKind::Overflow))?;
        if op_len > seg_left {
            return Err(ctrl.err(FormatErrorKind::OutputOverrun));
        }
        if lit_len > lit_left {
            return Err(ctrl.err(FormatErrorKind::StreamUnderrun));
        }
        let copy_end = st
            .old_pos
            .checked_add(add_len)
            .ok_or_else(|| ctrl.err(FormatErrorKind::Overflow))?;
        if copy_end > st.old_len {
            return Err(ctrl.err(FormatErrorKind::SourceOutOfBounds));
        }
        // Copy with deltas.
        let mut pos = st.old_pos;
        while pos < copy_end {
            let n = usize::try_from(copy_end.saturating_sub(pos))
                .unwrap_or(usize::MAX)
                .min(COPY_BUF);
            let chunk = st.buf.get_mut(..n).ok_or(Error::Bug("copy buffer size"))?;
            match &st.refs {
                None => st
                    .old
                    .read_at(pos, chunk)
                    .map_err(Error::io("reading the old file"))?,
                Some(map) => predict_chunk(
                    map,
                    st.kinds,
                    st.old,
                    st.old_len,
                    &mut st.win,
                    chunk,
                    pos,
                    st.new_pos,
                )?,
            }
            deltas.apply(chunk)?;
            out.write_all(chunk)
                .map_err(Error::io("writing the new file"))?;
            pos = pos.saturating_add(n as u64);
            st.new_pos = st.new_pos.saturating_add(n as u64);
        }
        // Literal bytes. With transform 1, the last few bytes of a buffer may
        // begin a branch whose displacement the next read completes: they are
        // kept at the front of the buffer (`carry`, at most four) and written
        // with the next ones.
        let mut left = lit_len;
        let mut carry = 0usize;
        while left > 0 {
            let n = usize::try_from(left)
                .unwrap_or(usize::MAX)
                .min(COPY_BUF.saturating_sub(carry));
            let chunk = st
                .buf
                .get_mut(carry..carry + n)
                .ok_or(Error::Bug("copy buffer size"))?;
            if let Err(fail) = read_literal(&mut literal, chunk) {
                return Err(match fail {
                    // The patch itself ended inside the stream's stored bytes.
                    _ if literal.input_truncated() => lit_err(FormatErrorKind::Truncated),
                    LiteralFault::Short => lit_err(FormatErrorKind::StreamUnderrun),
                    LiteralFault::Corrupt => lit_err(FormatErrorKind::BadCompression),
                    LiteralFault::Io(source) => Error::Io {
                        context: "reading the patch",
                        source,
                    },
                });
            }
            left = left.saturating_sub(n as u64);
            let filled = st
                .buf
                .get_mut(..carry + n)
                .ok_or(Error::Bug("copy buffer size"))?;
            let done = if let Some(kind) = st.literals {
                crate::transform::decode_run(kind, filled, st.new_pos, left == 0)
            } else {
                filled.len()
            }
            .min(filled.len());
            let (ready, tail) = filled.split_at_mut(done);
            out.write_all(ready)
                .map_err(Error::io("writing the new file"))?;
            st.new_pos = st.new_pos.saturating_add(ready.len() as u64);
            // Unfinished bytes (never when the run is complete) to the front.
            carry = tail.len();
            filled.copy_within(done.., 0);
        }
        lit_left = lit_left.saturating_sub(lit_len);
        seg_left = seg_left.saturating_sub(op_len);
        // Move in the old file; the new position must lie within it.
        let next = i128::from(copy_end)
            .checked_add(i128::from(seek))
            .ok_or_else(|| ctrl.err(FormatErrorKind::Overflow))?;
        if next < 0 || next > i128::from(st.old_len) {
            return Err(ctrl.err(FormatErrorKind::SourceOutOfBounds));
        }
        st.old_pos =
            u64::try_from(next).map_err(|_| ctrl.err(FormatErrorKind::SourceOutOfBounds))?;
    }
    if !ctrl.is_empty() {
        return Err(ctrl.err(FormatErrorKind::StreamTrailing));
    }
    deltas.finish()?;
    if lit_left != 0 {
        return Err(lit_err(FormatErrorKind::StreamTrailing));
    }
    // The literal stream must end exactly here: no more decoded bytes, and every
    // stored byte consumed by the decoder (not merely buffered).
    let mut probe = [0u8; 1];
    match literal.read(&mut probe) {
        Ok(0) => {}
        Ok(_) => return Err(lit_err(FormatErrorKind::StreamTrailing)),
        Err(_) => return Err(lit_err(FormatErrorKind::BadCompression)),
    }
    if !literal.fully_consumed() {
        return Err(lit_err(FormatErrorKind::StreamTrailing));
    }
    Ok(seg.new_len)
}

/// The literal stream of a segment: absent, stored raw, one zstd frame, or
/// raw LZMA.
enum Literal<'a, R> {
    Empty,
    Raw(TakeCounted<'a, R>),
    Zstd(zstd::stream::read::Decoder<'static, BufReader<TakeCounted<'a, R>>>),
    Lzma(Box<lzma_rust2::LzmaReader<TakeCounted<'a, R>>>),
}

impl<R: Read> Read for Literal<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Literal::Empty => Ok(0),
            Literal::Raw(r) => r.read(buf),
            Literal::Zstd(d) => d.read(buf),
            Literal::Lzma(d) => d.read(buf),
        }
    }
}

impl<R: Read> Literal<'_, R> {
    /// True when the patch ended before the stream's stored bytes did.
    fn input_truncated(&self) -> bool {
        match self {
            Literal::Empty => false,
            Literal::Raw(r) => r.hit_eof(),
            Literal::Zstd(d) => d.get_ref().get_ref().hit_eof(),
            Literal::Lzma(d) => d.inner().hit_eof(),
        }
    }

    /// True when no stored byte is left: none unread and none read ahead but
    /// unused by the decoder (bytes after the zstd frame are trailing garbage).
    fn fully_consumed(self) -> bool {
        match self {
            Literal::Empty => true,
            Literal::Raw(r) => r.left() == 0,
            Literal::Zstd(d) => {
                let buffered = d.finish();
                buffered.buffer().is_empty() && buffered.get_ref().left() == 0
            }
            Literal::Lzma(d) => {
                let (take, unread) = d.into_parts();
                unread.is_empty() && take.left() == 0
            }
        }
    }
}

/// Why the literal stream could not fill a buffer.
enum LiteralFault {
    /// The stream ended before the bytes the operations need.
    Short,
    /// The zstd decoder refused the stored bytes.
    Corrupt,
    /// Reading the patch failed.
    Io(io::Error),
}

/// Fills `buf` from the literal stream.
///
/// Which of `Short` and `Corrupt` a damaged frame produces, and at which
/// operation, can depend on how much of the patch each read returns (a
/// streaming decoder emits what it has decoded before it meets the damage);
/// either way the patch is refused.
fn read_literal(r: &mut impl Read, buf: &mut [u8]) -> Result<(), LiteralFault> {
    let mut filled = 0usize;
    while filled < buf.len() {
        let dst = buf.get_mut(filled..).unwrap_or_default();
        match r.read(dst) {
            Ok(0) => return Err(LiteralFault::Short),
            Ok(n) => filled = filled.saturating_add(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(LiteralFault::Short),
            // zstd reports corrupt data as errors of kind Other.
            Err(e)
                if e.kind() == io::ErrorKind::Other || e.kind() == io::ErrorKind::InvalidData =>
            {
                return Err(LiteralFault::Corrupt)
            }
            Err(e) => return Err(LiteralFault::Io(e)),
        }
    }
    Ok(())
}

/// Applies a patch held in memory to an old file held in memory, with the default
/// [`Limits`], and returns the verified new file.
///
/// # Errors
///
/// As [`PatchReader::apply_to`].
///
/// # Examples
///
/// ```
/// let patch = deltaswap::diff(b"hello world", b"hello there world")?;
/// assert_eq!(deltaswap::apply(b"hello world", &patch)?, b"hello there world");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn apply(old: &[u8], patch: &[u8]) -> Result<Vec<u8>, Error> {
    apply_with_limits(old, patch, Limits::default())
}

/// [`apply`] with explicit limits.
///
/// # Examples
///
/// ```
/// use deltaswap::Limits;
/// let patch = deltaswap::diff(b"a", b"b")?;
/// assert_eq!(deltaswap::apply_with_limits(b"a", &patch, Limits::default())?, b"b");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn apply_with_limits(old: &[u8], patch: &[u8], limits: Limits) -> Result<Vec<u8>, Error> {
    let reader = PatchReader::with_limits(patch, limits)?;
    // Never pre-allocate more than 64 MiB from a declared size; grow beyond that.
    let cap = usize::try_from(reader.header().new_len.min(64 << 20)).unwrap_or(0);
    let mut out = Vec::with_capacity(cap);
    let _verified = reader.apply_to(old, &mut out)?;
    Ok(out)
}

/// Stream totals of a patch, as reported by [`inspect`].
///
/// # Examples
///
/// ```
/// let patch = deltaswap::diff(b"version 1", b"version 2")?;
/// let info = deltaswap::inspect(&patch[..])?;
/// assert_eq!(info.patch_len(), patch.len() as u64);
/// assert_eq!(info.header().new_len(), 9);
/// for (name, decoded, stored) in info.streams() {
///     println!("{name}: {decoded} bytes decoded, {stored} stored");
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatchInfo {
    header: PatchHeader,
    segments: u64,
    raw: [u64; STREAMS],
    stored: [u64; STREAMS],
    total_len: u64,
    refs: Option<(u64, u64)>,
    /// With the edit layout, the number of edits.
    edits: Option<u64>,
    /// Per stream, one bit per codec id its segments use.
    codecs: [u8; STREAMS],
}

/// The codecs [`PatchInfo::stream_codecs`] names, by codec id
/// (docs/FORMAT.md; id 2 is not defined).
const CODEC_NAMES: [(u8, &str); 5] = [
    (0, "raw"),
    (1, "zstd"),
    (3, "model"),
    (4, "lzma"),
    (5, "block-model"),
];

impl PatchInfo {
    /// The patch header.
    pub fn header(&self) -> &PatchHeader {
        &self.header
    }
    /// Number of segments.
    pub fn segments(&self) -> u64 {
        self.segments
    }
    /// Total size of the patch in bytes.
    pub fn patch_len(&self) -> u64 {
        self.total_len
    }
    /// With transform 2 or 4 (references in copies, docs/FORMAT.md), the
    /// reference map's breaks and stored bytes; `None` without them.
    ///
    /// ```
    /// let old: Vec<u8> = (0..4000u32).map(|i| (i * 7 % 251) as u8).collect();
    /// let patch = deltaswap::diff(&old, &old)?;
    /// let info = deltaswap::inspect(&patch[..])?;
    /// assert_eq!(info.reference_map(), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn reference_map(&self) -> Option<(u64, u64)> {
        self.refs
    }
    /// With the edit layout (docs/FORMAT.md: a new file of the old one's
    /// length, written as the few stretches that differ), the number of
    /// edits; `None` for a patch of segments. An edit-layout patch has no
    /// segments and no streams.
    ///
    /// ```
    /// let old: Vec<u8> = (0..4000u32).map(|i| (i * 7 % 251) as u8).collect();
    /// let mut new = old.clone();
    /// new[1000] ^= 0x40;
    /// let info = deltaswap::inspect(&deltaswap::diff(&old, &new)?[..])?;
    /// assert_eq!(info.edits(), Some(1));
    /// assert_eq!(info.segments(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn edits(&self) -> Option<u64> {
        self.edits
    }
    /// Per stream (control, zero runs, delta lengths, delta bytes, literals):
    /// `(name, decoded bytes, stored bytes)`.
    pub fn streams(&self) -> [(&'static str, u64, u64); STREAMS] {
        const NAMES: [&str; STREAMS] = [
            "control",
            "zero-runs",
            "delta-lengths",
            "delta-bytes",
            "literals",
        ];
        let mut out = [("", 0, 0); STREAMS];
        for (i, o) in out.iter_mut().enumerate() {
            *o = (
                NAMES.get(i).copied().unwrap_or(""),
                self.raw.get(i).copied().unwrap_or(0),
                self.stored.get(i).copied().unwrap_or(0),
            );
        }
        out
    }
    /// Per stream, in the order of [`PatchInfo::streams`], the codecs that
    /// its segments store it with (docs/FORMAT.md): `"raw"`, `"zstd"`,
    /// `"model"` (the delta model), `"lzma"` and `"block-model"` (the delta
    /// model with zero blocks), each once and in that order; none for a
    /// stream that no segment has.
    ///
    /// ```
    /// let old: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 251) as u8).collect();
    /// let mut new = old.clone();
    /// new[100] ^= 1;
    /// new.extend_from_slice(b"a literal tail");
    /// let info = deltaswap::inspect(&deltaswap::diff(&old, &new)?[..])?;
    /// let [control, .., literals] = info.stream_codecs();
    /// assert!(!control.is_empty());
    /// assert_eq!(literals, ["raw"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stream_codecs(&self) -> [Vec<&'static str>; STREAMS] {
        self.codecs.map(|bits| {
            CODEC_NAMES
                .iter()
                .filter(|(id, _)| bits & (1 << id) != 0)
                .map(|&(_, name)| name)
                .collect()
        })
    }
}

/// Reads a patch's header and segment descriptors without applying it, checking
/// its structure (not its stream contents) against the limits.
///
/// # Examples
///
/// ```
/// let patch = deltaswap::diff(b"abc", b"abd")?;
/// let info = deltaswap::inspect(&patch[..])?;
/// assert_eq!(info.header().new_len(), 3);
/// assert_eq!(info.patch_len(), patch.len() as u64);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn inspect<R: Read>(patch: R) -> Result<PatchInfo, Error> {
    let reader = PatchReader::new(patch)?;
    let PatchReader {
        mut input,
        header,
        refs,
        ..
    } = reader;
    let mut info = PatchInfo {
        header: header.clone(),
        segments: 0,
        raw: [0; STREAMS],
        stored: [0; STREAMS],
        total_len: 0,
        refs: refs.map(|(map, stored)| (map.len() as u64, stored)),
        edits: None,
        codecs: [0; STREAMS],
    };
    if header.edits {
        let mut list = EditList::start(&mut input, header.new_len)?;
        let mut scratch = [0u8; MAX_LITERAL_EDIT];
        while let Some((head, _)) = list.next(&mut input)? {
            if head.kind == EditKind::Literal {
                let len = usize::try_from(head.len).unwrap_or(usize::MAX);
                let bytes = scratch
                    .get_mut(..len)
                    .ok_or(Error::Bug("literal edit over its bound"))?;
                input.read_exact(bytes, "literal edit")?;
            }
        }
        info.edits = Some(list.count());
    }
    let mut produced = 0u64;
    while produced < header.new_len && !header.edits {
        let seg = read_segment_header(&mut input)?;
        let remaining = header.new_len.saturating_sub(produced);
        if seg.new_len > remaining {
            return Err(input.err("segment length", FormatErrorKind::OutputOverrun));
        }
        produced = produced.saturating_add(seg.new_len);
        info.segments = info.segments.saturating_add(1);
        for (i, d) in seg.streams.iter().enumerate() {
            if let Some(r) = info.raw.get_mut(i) {
                *r = r.saturating_add(d.raw_len);
            }
            if let Some(s) = info.stored.get_mut(i) {
                *s = s.saturating_add(d.stored_len);
            }
            if let Some(c) = info.codecs.get_mut(i).filter(|_| d.raw_len > 0) {
                *c |= 1 << (d.codec as u8);
            }
            let mut take = input.by_ref_take(d.stored_len);
            let n = io::copy(&mut take, &mut io::sink()).map_err(Error::io("reading the patch"))?;
            if n != d.stored_len {
                return Err(input.err("stream payload", FormatErrorKind::Truncated));
            }
        }
    }
    input.expect_end()?;
    info.total_len = input.offset();
    Ok(info)
}
