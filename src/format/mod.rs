//! Patch format v1: constants, header and segment descriptors.
//!
//! The byte-by-byte specification is `docs/FORMAT.md`; this module is its only
//! implementation. Reading goes through [`PatchInput`], which counts bytes so that
//! every error names the offset where it was found, and through [`SliceReader`]
//! for decoded streams. Neither ever indexes or allocates from an unchecked value.

mod edits;
mod header;
mod varint;

#[cfg(feature = "diff")]
pub(crate) use edits::hex_byte;
pub(crate) use edits::{hex_digits, EditHead, EditKind, EditList, HEX_SOURCES, MAX_LITERAL_EDIT};
pub use header::PatchHeader;
pub(crate) use header::{
    read_segment_header, write_segment_header, write_stream_desc, Codec, LzmaParams, ModelParams,
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
/// Transform bit of the x86 branch targets in literal bytes (transform 1,
/// `src/transform.rs`).
pub(crate) const TRANSFORM_X86: u8 = 1;
/// Transform bit of the x86 references predicted in copied bytes (transform
/// 2, `src/refs.rs`): a reference map follows the header.
pub(crate) const TRANSFORM_REFS: u8 = 2;
/// Transform bit of the absolute pointers predicted in copied bytes
/// (transform 4, `src/refs.rs`): a reference map follows the header.
pub(crate) const TRANSFORM_POINTERS: u8 = 4;
/// Transform bit of the AArch64 branches predicted in copied bytes
/// (transform 8, `src/refs.rs`): a reference map follows the header.
pub(crate) const TRANSFORM_A64: u8 = 8;
/// Transform bit of the AArch64 branch targets and pages in literal bytes
/// (transform 16, `src/transform.rs`); never with [`TRANSFORM_X86`].
pub(crate) const TRANSFORM_A64_LITERALS: u8 = 16;
/// Every transform bit this build knows.
pub(crate) const TRANSFORMS_KNOWN: u8 =
    TRANSFORM_X86 | TRANSFORM_REFS | TRANSFORM_POINTERS | TRANSFORM_A64 | TRANSFORM_A64_LITERALS;
/// The most decoded control and delta bytes the writer puts in one segment.
pub(crate) const WRITER_SEGMENT_BUDGET: usize = 8 << 20;
/// The largest zstd window log the writer uses for the streamed literal data.
pub(crate) const WRITER_WINDOW_LOG: u32 = 23;
