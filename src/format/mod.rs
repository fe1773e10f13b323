//! Patch format v1: constants, header and segment descriptors.
//!
//! The byte-by-byte specification is `docs/FORMAT.md`; this module is its only
//! implementation. Reading goes through [`PatchInput`], which counts bytes so that
//! every error names the offset where it was found, and through [`SliceReader`]
//! for decoded streams. Neither ever indexes or allocates from an unchecked value.

mod header;
mod varint;

pub use header::PatchHeader;
pub(crate) use header::{
    read_segment_header, write_segment_header, write_stream_desc, Codec, ModelParams,
    SegmentHeader, StreamDesc, CONTROL, DELTA_BYTES, DELTA_LENS, LITERALS, STREAMS, STREAM_NAMES,
    ZERO_RUNS,
};
pub(crate) use varint::{
    put_varint, zigzag_decode, zigzag_encode, PatchInput, SliceReader, TakeCounted,
};

/// The four bytes every deltaswap patch starts with.
pub(crate) const MAGIC: [u8; 4] = *b"DSWP";
/// The format version this build writes and reads.
pub(crate) const VERSION: u8 = 1;
/// Transform id meaning "no pre-processing".
pub(crate) const TRANSFORM_NONE: u8 = 0;
/// Transform id of the x86 branch targets in literal bytes (`src/transform.rs`).
pub(crate) const TRANSFORM_X86: u8 = 1;
/// The most decoded control and delta bytes the writer puts in one segment.
pub(crate) const WRITER_SEGMENT_BUDGET: usize = 8 << 20;
/// The largest zstd window log the writer uses for the streamed literal data.
pub(crate) const WRITER_WINDOW_LOG: u32 = 23;
