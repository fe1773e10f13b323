//! The patch header and the per-segment stream descriptors.

use std::io::Read;

use super::edits::FLAG_EDITS;
use super::varint::{put_varint, PatchInput};
use super::{MAGIC, TRANSFORMS_KNOWN, TRANSFORM_A64_LITERALS, TRANSFORM_X86, VERSION};
use crate::error::{Error, FormatErrorKind};
use crate::hash::Sha256Digest;

/// What a patch says about itself: the sizes and SHA-256 digests of the old file
/// it applies to and the new file it produces.
///
/// # Examples
///
/// ```
/// let patch = deltaswap::diff(b"old contents", b"new contents")?;
/// let reader = deltaswap::PatchReader::new(&patch[..])?;
/// let h = reader.header();
/// assert_eq!(h.old_len(), 12);
/// assert_eq!(h.new_sha256(), deltaswap::Sha256Digest::of(b"new contents"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatchHeader {
    pub(crate) version: u8,
    pub(crate) old_len: u64,
    pub(crate) new_len: u64,
    pub(crate) old_sha256: Sha256Digest,
    pub(crate) new_sha256: Sha256Digest,
    /// The pre-processing transforms, one bit each (`TRANSFORM_X86`,
    /// `TRANSFORM_REFS`, `TRANSFORM_POINTERS`, `TRANSFORM_A64`,
    /// `TRANSFORM_A64_LITERALS`).
    pub(crate) transform: u8,
    /// Flag bit 0: the body is an edit list (`super::edits`), not segments.
    pub(crate) edits: bool,
    /// Bytes the header occupies in the patch.
    pub(crate) encoded_len: u64,
}

impl PatchHeader {
    /// The format version of the patch.
    pub fn version(&self) -> u8 {
        self.version
    }
    /// Length of the old file the patch applies to.
    pub fn old_len(&self) -> u64 {
        self.old_len
    }
    /// Length of the new file the patch produces.
    pub fn new_len(&self) -> u64 {
        self.new_len
    }
    /// SHA-256 of the old file.
    pub fn old_sha256(&self) -> Sha256Digest {
        self.old_sha256
    }
    /// SHA-256 of the new file.
    pub fn new_sha256(&self) -> Sha256Digest {
        self.new_sha256
    }
    /// The pre-processing transforms the patch uses, one bit each
    /// (docs/FORMAT.md): 1 for x86 branch targets made absolute in literal
    /// bytes, 2 for x86 references predicted in copied bytes, 4 for
    /// pointers predicted in copied bytes, 8 for AArch64 branches and page
    /// addresses predicted in copied bytes, 16 for AArch64 branch targets
    /// and pages made absolute in literal bytes; 0 for none.
    pub fn transform(&self) -> u8 {
        self.transform
    }

    pub(crate) fn encode(
        old_len: u64,
        new_len: u64,
        old_sha256: &Sha256Digest,
        new_sha256: &Sha256Digest,
        transform: u8,
        edits: bool,
        out: &mut Vec<u8>,
    ) {
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(if edits { FLAG_EDITS } else { 0 });
        out.push(transform);
        out.push(0); // reserved
        put_varint(out, old_len);
        // An edit list keeps the old length: it is not written twice.
        if !edits {
            put_varint(out, new_len);
        }
        out.extend_from_slice(old_sha256.as_bytes());
        out.extend_from_slice(new_sha256.as_bytes());
    }

    /// Reads and validates the header. Everything after it is untouched.
    pub(crate) fn read<R: Read>(input: &mut PatchInput<R>) -> Result<PatchHeader, Error> {
        let magic: [u8; 4] = input.read_array("magic")?;
        if magic != MAGIC {
            return Err(input.err("magic", FormatErrorKind::BadMagic));
        }
        let version = input.read_u8("format version")?;
        if version != VERSION {
            return Err(input.err(
                "format version",
                FormatErrorKind::UnsupportedVersion {
                    found: version,
                    supported: VERSION,
                },
            ));
        }
        let flags = input.read_u8("flags")?;
        if flags & !FLAG_EDITS != 0 {
            return Err(input.err("flags", FormatErrorKind::UnknownFlags(flags)));
        }
        let edits = flags & FLAG_EDITS != 0;
        let transform = input.read_u8("transform")?;
        // The two literal transforms exclude each other; an edit list has none.
        let both_literals = TRANSFORM_X86 | TRANSFORM_A64_LITERALS;
        if transform & !TRANSFORMS_KNOWN != 0
            || transform & both_literals == both_literals
            || (edits && transform != 0)
        {
            return Err(input.err("transform", FormatErrorKind::UnknownTransform(transform)));
        }
        if input.read_u8("reserved byte")? != 0 {
            return Err(input.err("reserved byte", FormatErrorKind::Reserved));
        }
        let old_len = input.read_varint("old length")?;
        let new_len = if edits {
            old_len
        } else {
            input.read_varint("new length")?
        };
        let old_sha256 = Sha256Digest(input.read_array("old SHA-256")?);
        let new_sha256 = Sha256Digest(input.read_array("new SHA-256")?);
        Ok(PatchHeader {
            version,
            old_len,
            new_len,
            old_sha256,
            new_sha256,
            transform,
            edits,
            encoded_len: input.offset(),
        })
    }
}

/// How a stream's bytes are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Codec {
    Raw = 0,
    Zstd = 1,
    /// The delta model (`src/model.rs`), only for the delta bytes of a
    /// segment in plain layout. Id 2 is not defined (development builds used
    /// it for raw LZMA) and reads as an unknown codec.
    Model = 3,
    /// Raw LZMA (no header, no end marker), only for the literal stream;
    /// its descriptor carries the properties and the dictionary size.
    Lzma = 4,
    /// The delta model with zero blocks (docs/MODEL.md, "Zero blocks"):
    /// where codec 3 may be, with the same parameters.
    BlockModel = 5,
}

impl Codec {
    /// Codec 3 or 5: one of the delta model's.
    pub(crate) fn is_model(self) -> bool {
        matches!(self, Codec::Model | Codec::BlockModel)
    }
}

/// The parameters of an LZMA literal stream, as its descriptor carries them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LzmaParams {
    /// The LZMA properties byte, `(pb * 5 + lp) * 9 + lc`.
    pub(crate) props: u8,
    /// log2 of the dictionary size.
    pub(crate) dict_log: u8,
}

impl LzmaParams {
    /// Smallest dictionary a descriptor may name: 2^12 bytes.
    pub(crate) const MIN_DICT_LOG: u8 = 12;
    /// Largest dictionary a descriptor may name: 2^30 bytes (a reader's
    /// [`Limits`](crate::Limits) usually allows far less).
    pub(crate) const MAX_DICT_LOG: u8 = 30;

    /// `(lc, lp, pb)` from the properties byte, when they are in the range
    /// the format admits: `lc + lp <= 4` and `pb <= 4` (the LZMA2 rule,
    /// which bounds the literal coder's tables to 24 KiB).
    pub(crate) fn lc_lp_pb(self) -> Option<(u32, u32, u32)> {
        let p = u32::from(self.props);
        let (lc, lp, pb) = (p % 9, (p / 9) % 5, p / 45);
        (lc + lp <= 4 && pb <= 4).then_some((lc, lp, pb))
    }

    /// The largest dictionary a stream of `raw_len` bytes may name: the
    /// smallest power of two that holds it, at least [`Self::MIN_DICT_LOG`]
    /// (a larger one decodes the same, so allowing it would give one stream
    /// several encodings).
    pub(crate) fn dict_log_cap(raw_len: u64) -> u8 {
        holding_log(raw_len).max(Self::MIN_DICT_LOG)
    }
}

/// log2 of the smallest power of two that is at least `len` (0 for 0 and 1).
fn holding_log(len: u64) -> u8 {
    // At most 64: a u64 has 64 bits.
    (u64::BITS - len.saturating_sub(1).leading_zeros()) as u8
}

/// The parameters of a delta-model stream, as its descriptor carries them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ModelParams {
    /// log2 of the match model's history window.
    pub(crate) window_log: u8,
}

impl ModelParams {
    /// Smallest window a descriptor may name: 2^10 bytes.
    pub(crate) const MIN_WINDOW_LOG: u8 = 10;
    /// Largest window a descriptor may name: 2^30 bytes (a reader's
    /// [`Limits`](crate::Limits) usually allows far less).
    pub(crate) const MAX_WINDOW_LOG: u8 = 30;

    /// The largest window a stream of `raw_len` deltas may name: the
    /// smallest power of two that holds the stream, at least
    /// [`Self::MIN_WINDOW_LOG`]. A larger window gives the model the same
    /// history, so allowing it would give one stream several encodings.
    pub(crate) fn window_log_cap(raw_len: u64) -> u8 {
        holding_log(raw_len).max(Self::MIN_WINDOW_LOG)
    }
}

/// One stream of a segment: its decoded length, codec and stored length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StreamDesc {
    pub(crate) raw_len: u64,
    pub(crate) codec: Codec,
    pub(crate) stored_len: u64,
    /// Present for [`Codec::Model`] and [`Codec::BlockModel`] only.
    pub(crate) model: Option<ModelParams>,
    /// Present for [`Codec::Lzma`] only.
    pub(crate) lzma: Option<LzmaParams>,
}

impl StreamDesc {
    /// An absent (empty) stream.
    pub(crate) const EMPTY: StreamDesc = StreamDesc {
        raw_len: 0,
        codec: Codec::Raw,
        stored_len: 0,
        model: None,
        lzma: None,
    };
}

/// The streams of a segment, in the order their payloads follow the descriptors:
/// control, zero runs, delta lengths, delta bytes, literal bytes.
pub(crate) const STREAMS: usize = 5;
/// Index of the control stream (three varints per operation).
pub(crate) const CONTROL: usize = 0;
/// Index of the zero-run stream (bytes copied unchanged, one varint per run).
pub(crate) const ZERO_RUNS: usize = 1;
/// Index of the delta-length stream (bytes changed after each zero run).
pub(crate) const DELTA_LENS: usize = 2;
/// Index of the delta-byte stream (what is added to the old bytes).
pub(crate) const DELTA_BYTES: usize = 3;
/// Index of the literal stream (new bytes not taken from the old file).
pub(crate) const LITERALS: usize = 4;
/// Stream names, for errors and `info`.
pub(crate) const STREAM_NAMES: [&str; STREAMS] = [
    "control stream",
    "zero-run stream",
    "delta-length stream",
    "delta-byte stream",
    "literal stream",
];

/// A segment's header: how many bytes of the new file it produces, and its streams.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub(crate) new_len: u64,
    pub(crate) streams: [StreamDesc; STREAMS],
}

impl SegmentHeader {
    /// True for the plain layout: no run streams, and the delta-byte stream
    /// holds one delta per copied byte (zeros included). In the run layout the
    /// run streams are present whenever the segment copies anything, so the
    /// two layouts cannot be confused.
    pub(crate) fn is_plain(&self) -> bool {
        self.streams[ZERO_RUNS].raw_len == 0
            && self.streams[DELTA_LENS].raw_len == 0
            && self.streams[DELTA_BYTES].raw_len > 0
    }
}

pub(crate) fn write_segment_header(h: &SegmentHeader, out: &mut Vec<u8>) {
    put_varint(out, h.new_len);
    for s in &h.streams {
        write_stream_desc(s, out);
    }
}

/// One stream descriptor: `raw_len [codec [stored_len] [window_log | props dict_log]]`.
pub(crate) fn write_stream_desc(s: &StreamDesc, out: &mut Vec<u8>) {
    put_varint(out, s.raw_len);
    if s.raw_len > 0 {
        out.push(s.codec as u8);
        if s.codec != Codec::Raw {
            put_varint(out, s.stored_len);
        }
        if let Some(p) = s.model {
            out.push(p.window_log);
        }
        if let Some(p) = s.lzma {
            out.push(p.props);
            out.push(p.dict_log);
        }
    }
}

pub(crate) fn read_segment_header<R: Read>(
    input: &mut PatchInput<R>,
) -> Result<SegmentHeader, Error> {
    let new_len = input.read_varint("segment length")?;
    if new_len == 0 {
        return Err(input.err("segment length", FormatErrorKind::EmptyOperation));
    }
    let mut streams = [StreamDesc::EMPTY; STREAMS];
    for (k, (slot, what)) in streams.iter_mut().zip(STREAM_NAMES).enumerate() {
        let raw_len = input.read_varint(what)?;
        if raw_len == 0 {
            continue;
        }
        let codec = match input.read_u8(what)? {
            0 => Codec::Raw,
            1 => Codec::Zstd,
            // The model is defined for the delta-byte stream only; whether the
            // segment is in plain layout is checked once all descriptors are read.
            3 if k == DELTA_BYTES => Codec::Model,
            5 if k == DELTA_BYTES => Codec::BlockModel,
            // LZMA is defined for the literal stream only.
            4 if k == LITERALS => Codec::Lzma,
            other => return Err(input.err(what, FormatErrorKind::UnknownCodec(other))),
        };
        let stored_len = match codec {
            Codec::Raw => raw_len,
            Codec::Zstd | Codec::Model | Codec::BlockModel | Codec::Lzma => {
                let n = input.read_varint(what)?;
                if n == 0 {
                    return Err(input.err(what, FormatErrorKind::OutOfRange));
                }
                n
            }
        };
        let model = match codec {
            Codec::Model | Codec::BlockModel => {
                let params = ModelParams {
                    window_log: input.read_u8(what)?,
                };
                let ok = (ModelParams::MIN_WINDOW_LOG..=ModelParams::MAX_WINDOW_LOG)
                    .contains(&params.window_log)
                    && params.window_log <= ModelParams::window_log_cap(raw_len);
                if !ok {
                    return Err(input.err(what, FormatErrorKind::OutOfRange));
                }
                Some(params)
            }
            _ => None,
        };
        let lzma = match codec {
            Codec::Lzma => {
                let params = LzmaParams {
                    props: input.read_u8(what)?,
                    dict_log: input.read_u8(what)?,
                };
                let ok = params.lc_lp_pb().is_some()
                    && (LzmaParams::MIN_DICT_LOG..=LzmaParams::MAX_DICT_LOG)
                        .contains(&params.dict_log)
                    && params.dict_log <= LzmaParams::dict_log_cap(raw_len);
                if !ok {
                    return Err(input.err(what, FormatErrorKind::OutOfRange));
                }
                Some(params)
            }
            _ => None,
        };
        *slot = StreamDesc {
            raw_len,
            codec,
            stored_len,
            model,
            lzma,
        };
    }
    let seg = SegmentHeader { new_len, streams };
    let codec = seg.streams[DELTA_BYTES].codec;
    if codec.is_model() && !seg.is_plain() {
        let what = STREAM_NAMES[DELTA_BYTES];
        return Err(input.err(what, FormatErrorKind::UnknownCodec(codec as u8)));
    }
    Ok(seg)
}
