//! `apply_structured`: an `arbitrary`-derived description of a patch, encoded
//! into one whose lengths, streams and (optionally) digests are right, so that
//! the fuzzer spends its time in the applier's operation loop rather than at
//! the header checks. An in-target model computes what the patch must produce
//! when it is valid; deliberate faults (raw, unclamped operations, stream
//! mutations, wrong digests) then check that every applier refuses alike.
//!
//! A segment is written in the run layout (zero runs, delta lengths, changed
//! bytes) or in the plain layout (no run streams; one delta byte per copied
//! byte, stored raw, as a zstd frame or coded with the delta model, codec 3
//! or 5, over the old bytes under the segment's copies). Faults on the delta-byte
//! stream of a plain segment hit its plain deltas; faults on stored bytes hit
//! the compressed frames and the model's coded bytes; length faults hit the
//! descriptors. Rare codec faults put the model on a stream where it is not
//! defined (`UnknownCodec(3)` or `(5)`) or write the undefined codec byte 2.
//!
//! With `edits`, the patch is in the edit layout (header flag bit 0) instead:
//! literal and hex edits placed inside the old file, or written raw, with
//! a skewed count and a forbidden transform byte as faults.

use arbitrary::Arbitrary;
use sha2::{Digest, Sha256};

/// The fuzzer's input.
#[derive(Arbitrary, Debug)]
pub struct Input {
    /// Old file length (mod 8193) and content seed.
    pub old_len: u16,
    pub old_seed: u64,
    /// Whether the old file repeats a short period (so copies with seeks make sense).
    pub old_periodic: bool,
    pub segments: Vec<Seg>,
    /// Clamp operations into range (a valid patch) or encode them raw.
    pub clamp: bool,
    /// Header digests: write the right ones (most of the time) or flip a bit.
    pub wrong_old_hash: bool,
    pub wrong_new_hash: bool,
    /// Added to the header's new length (0 keeps it right).
    pub new_len_skew: i8,
    /// Faults in a segment's streams: byte edits of the decoded bytes (before
    /// encoding) or of the stored ones, and skews of the declared lengths.
    pub stream_faults: Vec<StreamFault>,
    /// Bytes appended after the last segment.
    pub trailer: Vec<u8>,
    /// Transforms 2, 4 and 8 (references in copies): with a map of these
    /// breaks (gap, shift step), written raw after the header, `E8` calls
    /// into the old file planted every `call_every` bytes (from 8), with
    /// transform 8 AArch64 branches and `ADRP` pairs between them, and
    /// pointers into it in every fifth 8-byte word of its second half, so
    /// that predictions change bytes. `None`: none of them.
    pub refs: Option<Refs>,
    /// The edit layout: `Some` writes an edit list over the old file instead
    /// of segments (`segments`, `stream_faults`, `new_len_skew` and `refs`
    /// are then unused).
    pub edits: Option<EditList>,
}

/// An edit list (docs/FORMAT.md, "Edit layout").
#[derive(Arbitrary, Debug)]
pub struct EditList {
    pub edits: Vec<FuzzEdit>,
    /// Added to the edit count written (0 keeps it right): more than there
    /// are is `Truncated`, fewer leaves `TrailingBytes`.
    pub count_skew: i8,
    /// From 0xf0 up, a nonzero transform byte is written with the flag
    /// (`UnknownTransform`).
    pub transform: u8,
}

/// One edit. Clamped (`Input::clamp`), it is placed inside the old file: a
/// literal edit of `1 + len % 4096` pool bytes at most, or, when `hex` and a
/// literal edit came before, a hex edit of the digits of `1 + len % n` bytes
/// of literal edit `source & 3` back (modulo those held) from byte
/// `(source >> 2) % its length`; the gap is `gap` modulo the room left.
/// Unclamped, `gap`, `len`, `hex` and `source` are written as they are,
/// but for a `gap` of 0xffff, written as `2^64 - 1 - (source & 0xff)`.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct FuzzEdit {
    pub gap: u16,
    pub len: u16,
    pub hex: bool,
    pub source: u16,
}

#[derive(Arbitrary, Debug)]
pub struct Refs {
    pub breaks: Vec<(u16, i16)>,
    pub call_every: u8,
    /// Transform bits 2 (x86 displacements), 4 (pointers) and 8 (AArch64
    /// branches and page addresses): `kinds % 7` picks one of their seven
    /// combinations.
    pub kinds: u8,
}

impl Refs {
    /// The transform bits.
    pub fn bits(&self) -> u8 {
        [2, 4, 6, 8, 12, 10, 14][usize::from(self.kinds % 7)]
    }
}

#[derive(Arbitrary, Debug)]
pub struct Seg {
    pub ops: Vec<FuzzOp>,
    /// Codec per stream: false raw, true zstd.
    pub zstd: [bool; 5],
    /// Zstd level for this segment's compressed streams (odd → 3, even → 1;
    /// higher levels cost milliseconds per call and add nothing for apply).
    pub level: u8,
    /// Added to the declared segment length (0 keeps it right).
    pub seg_len_skew: i8,
    /// Run layout, or plain layout with its delta bytes raw, zstd or model-coded.
    pub layout: Layout,
    /// How the plain deltas are model-coded.
    pub model: ModelSpec,
    /// From 0xf0 up: also code stream `model_elsewhere % 5` with the model,
    /// which is refused (`UnknownCodec(3)` or `(5)`) unless it is the delta-byte stream
    /// of a plain segment (or absent). A rare fault, so that most cases get
    /// past the descriptors.
    pub model_elsewhere: u8,
    /// From 0xf8 up: write the undefined codec byte 2 (LZMA in development
    /// builds) for stream `codec2 % 5`, refused unless the stream is absent.
    pub codec2: u8,
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Runs,
    PlainRaw,
    PlainZstd,
    PlainModel,
}

/// Log2 of the largest model window the fuzzing limits accept
/// ([`crate::checks::MAX_WINDOW_LOG`]).
const FUZZ_WINDOW_LOG: u8 = crate::checks::MAX_WINDOW_LOG as u8;

#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct ModelSpec {
    /// The window the encoder codes with and the descriptor names: below
    /// 0xe0, 2^(10 + window % 11), within the fuzzing limit (2^20); from 0xe0
    /// up, 2^(21 + window % 10), over it (`LimitExceeded` under the fuzzing
    /// limits, valid under the default ones up to 2^24). Either way at most
    /// what the stream needs (the format refuses more), so the windows over
    /// the limit occur only in streams of more than 1 MiB.
    pub window: u8,
    /// From 0xf0 up, `declared` is written as the descriptor's window_log
    /// instead. Outside 10..=30, or over what the stream needs, it is
    /// `OutOfRange`; otherwise the case stays valid only if the stored bytes
    /// decode to the same deltas with it.
    pub declare: u8,
    pub declared: u8,
}

impl ModelSpec {
    /// The model's codec: 5 (zero blocks) when `declare` is odd, else 3.
    /// (Taken from a bit of an existing field, so that the saved inputs
    /// keep their meaning otherwise.)
    fn codec(&self) -> u8 {
        if self.declare & 1 == 1 {
            5
        } else {
            3
        }
    }

    /// The window the encoder uses for a stream of `len` deltas: the one
    /// chosen, or the largest the format allows for that length if less.
    fn window_log(&self, len: usize) -> u8 {
        let chosen = if self.window < 0xe0 {
            10 + self.window % 11
        } else {
            FUZZ_WINDOW_LOG + 1 + self.window % 10
        };
        chosen.min(crate::naive::window_cap(len as u64))
    }

    /// Whether a model descriptor on the delta bytes of `len` deltas is
    /// refused for its window (out of 10..=30, or larger than the stream
    /// needs), when `declare` replaces the window.
    fn declares_bad_window(&self, len: usize) -> bool {
        self.declare >= 0xf0
            && (!(10..=30).contains(&self.declared)
                || self.declared > crate::naive::window_cap(len as u64))
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct FuzzOp {
    pub copy: u16,
    pub lit: u16,
    pub seek: i32,
    /// Edits of the copied bytes: every `delta_stride`-th byte gets `delta` added.
    pub delta: u8,
    pub delta_stride: u8,
}

#[derive(Arbitrary, Debug)]
pub struct StreamFault {
    pub segment: u8,
    pub stream: u8,
    pub pos: u16,
    pub kind: FaultKind,
    /// Hit the stored (compressed) bytes rather than the decoded ones. For a
    /// raw stream the two are the same bytes.
    pub stored: bool,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum FaultKind {
    Set(u8),
    Insert(u8),
    Remove,
    TruncateHere,
    /// Flips bit `b % 8` of the byte at `pos`.
    FlipBit(u8),
    /// Appends a byte after the stream's last one (a tail).
    Append(u8),
    /// Leaves the bytes alone and adds this to the length the descriptor
    /// declares: the stored length when `stored` (for a raw stream, its only
    /// length), else the decoded length.
    SkewLen(i8),
}

const CONTROL: usize = 0;
const ZERO_RUNS: usize = 1;
const DELTA_LENS: usize = 2;
const DELTA_BYTES: usize = 3;
const LITERALS: usize = 4;

fn varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// The encoded case: the old file, the patch, and the new file the model
/// expects when the patch is meant to be valid.
pub struct Case {
    pub old: Vec<u8>,
    pub patch: Vec<u8>,
    pub expected: Option<Vec<u8>>,
    /// The refusal the patch must meet when its first fault is a codec one:
    /// `UnknownCodec(3)` or `(5)` for the model where it is not defined,
    /// `UnknownCodec(2)` for codec byte 2; in the edit layout, the refusal
    /// of its count and transform faults (see `build_edits`).
    pub expected_error: Option<deltaswap::FormatErrorKind>,
    /// Streams written with the delta model (codec 3 or 5), valid or not.
    pub model_streams: usize,
}

/// Literal bytes of the new file come from a fixed pseudo-random pool, not
/// from the input, so a large literal length costs the fuzzer nothing.
fn literal_pool() -> &'static [u8] {
    static POOL: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| crate::checks::splitmix_bytes(0x0117_e4a1, 64 << 10))
}

/// The run pairs (unchanged, changed) over a segment's copies laid end to end,
/// built as the copies are: maximal runs, as the writer makes them.
/// In plain layout it keeps one delta per copied byte instead.
#[derive(Default)]
struct Runs {
    plain: bool,
    zeros: u64,
    changed: u64,
    bytes: Vec<u8>,
    out_zeros: Vec<u8>,
    out_lens: Vec<u8>,
}

impl Runs {
    fn zeros(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        if self.plain {
            self.bytes.resize(self.bytes.len() + n as usize, 0);
            return;
        }
        if self.changed > 0 {
            self.emit();
        }
        self.zeros += n;
    }
    fn changed(&mut self, d: u8) {
        self.changed += 1;
        self.bytes.push(d);
    }
    fn emit(&mut self) {
        varint(&mut self.out_zeros, self.zeros);
        varint(&mut self.out_lens, self.changed);
        self.zeros = 0;
        self.changed = 0;
    }
    fn finish(mut self, streams: &mut [Vec<u8>; 5]) {
        if !self.plain && (self.zeros > 0 || self.changed > 0) {
            self.emit();
        }
        streams[ZERO_RUNS] = self.out_zeros;
        streams[DELTA_LENS] = self.out_lens;
        streams[DELTA_BYTES] = self.bytes;
    }
}

/// Builds the case. Output sizes stay under 1 MiB (the targets' limit) only
/// because operations are at most 64 KiB and the list is short; the targets'
/// limits decide the rest.
pub fn build(inp: &Input) -> Case {
    let old_len = usize::from(inp.old_len) % 8193;
    let mut old: Vec<u8> = if inp.old_periodic {
        let period = crate::checks::splitmix_bytes(inp.old_seed, 61);
        (0..old_len).map(|i| period[i % 61]).collect()
    } else {
        crate::checks::splitmix_bytes(inp.old_seed, old_len)
    };
    if let Some(list) = &inp.edits {
        return build_edits(inp, list, old);
    }
    let mut valid = inp.clamp && inp.stream_faults.is_empty();
    // Transform 2: calls planted in the old file, and the map's breaks.
    let mut map_bytes: Vec<u8> = Vec::new();
    let mut breaks: Option<crate::naive::Breaks> = None;
    let mut map_ok = true;
    if let Some(r) = &inp.refs {
        let every = usize::from(r.call_every).max(8);
        let mut q = 0;
        while q + 5 <= old.len() {
            let target = (q * 7919 + usize::from(r.call_every)) % old.len();
            let rel = target as i64 - (q + 5) as i64;
            old[q] = 0xE8;
            old[q + 1..q + 5].copy_from_slice(&(rel as i32).to_le_bytes());
            q += every;
        }
        if r.bits() & 8 != 0 {
            // AArch64 words at 4-aligned positions between the calls: a
            // `BL` and an `ADRP` + `LDR` pair on one register, in turn.
            let mut q = 8;
            let mut k = 0usize;
            while q + 8 <= old.len() {
                let target = (q * 7907 + k) % old.len();
                let words = if k % 2 == 0 {
                    let imm = (target as i64 - q as i64) / 4;
                    vec![0x9400_0000 | (imm as u32 & 0x03FF_FFFF)]
                } else {
                    let pages = ((target as i64 >> 12) - (q as i64 >> 12)) as u32 & 0x1F_FFFF;
                    let low = (target as u32 & 0xFFF) >> 3;
                    vec![
                        0x9000_0003 | (pages & 3) << 29 | (pages >> 2) << 5,
                        0xF940_0064 | low << 10,
                    ]
                };
                for (i, w) in words.iter().enumerate() {
                    old[q + 4 * i..q + 4 * i + 4].copy_from_slice(&w.to_le_bytes());
                }
                k += 1;
                q += (every + 8).next_multiple_of(4);
            }
        }
        let half = old.len() / 2 / 8 * 8;
        for (k, q) in (half..old.len().saturating_sub(7)).step_by(40).enumerate() {
            let target = (4096 + k * 977) as u64 % (old.len() as u64).max(1);
            old[q..q + 8].copy_from_slice(&target.to_le_bytes());
        }
        let mut b = Vec::new();
        let mut raw = Vec::new();
        let (mut at, mut shift) = (0u64, 0i128);
        for (k, &(gap, step)) in r.breaks.iter().take(64).enumerate() {
            // Some gaps of 0 after the first, and breaks past the file, are
            // faults the reader refuses.
            let gap = u64::from(gap) % (old.len() as u64 / 4 + 2);
            varint(&mut raw, gap);
            varint(&mut raw, zigzag(i64::from(step)));
            at += gap;
            shift += i128::from(step);
            if (k > 0 && gap == 0) || at >= old.len() as u64 {
                valid = false;
                map_ok = false;
            }
            b.push((at, shift));
        }
        varint(&mut map_bytes, raw.len() as u64);
        if !raw.is_empty() {
            map_bytes.push(0);
            map_bytes.extend_from_slice(&raw);
        }
        breaks = Some(b);
    }

    let mut new: Vec<u8> = Vec::new();
    let mut p: i128 = 0;
    let mut lit_counter: u64 = inp.old_seed % 4096;
    let mut total: u64 = 0;
    let mut model_streams = 0;
    let mut codec_error = None;
    let mut encoded_segments: Vec<Vec<u8>> = Vec::new();
    for (si, seg) in inp.segments.iter().take(6).enumerate() {
        let mut streams: [Vec<u8>; 5] = Default::default();
        let mut runs = Runs {
            plain: seg.layout != Layout::Runs,
            ..Runs::default()
        };
        // The old bytes under the segment's copies, laid end to end: what the
        // delta model codes the plain deltas over, as the applier will.
        let mut olds: Vec<u8> = Vec::new();
        let mut seg_len: u64 = 0;
        for o in seg.ops.iter().take(32) {
            let (copy, lit, seek) = if inp.clamp {
                // Copy within what is left of old, then a seek back into 0..=old_len.
                let left = (old.len() as i128 - p).max(0) as u64;
                let copy = u64::from(o.copy) % (left + 1);
                let lit = u64::from(o.lit % 4096);
                let (copy, lit) = if copy == 0 && lit == 0 {
                    (0, 1)
                } else {
                    (copy, lit)
                };
                let end = p + i128::from(copy);
                let target = i128::from(o.seek).rem_euclid(old.len() as i128 + 1);
                (copy, lit, (target - end) as i64)
            } else {
                // Raw values, but small enough that building the case stays cheap.
                (
                    u64::from(o.copy % 16384),
                    u64::from(o.lit % 4096),
                    i64::from(o.seek),
                )
            };
            varint(&mut streams[CONTROL], copy);
            varint(&mut streams[CONTROL], lit);
            varint(&mut streams[CONTROL], zigzag(seek));
            seg_len = seg_len.wrapping_add(copy).wrapping_add(lit);
            // The copy, with its deltas: every `stride`-th byte gets `delta`.
            let stride = u64::from(o.delta_stride);
            let in_old = usize::try_from(p)
                .ok()
                .zip(usize::try_from(p + i128::from(copy)).ok())
                .and_then(|(a, b)| old.get(a..b));
            match in_old {
                Some(src) => {
                    // The copied bytes as the reader sees them: predicted
                    // through the map with transform 2 (by the oracle's
                    // reading of FORMAT.md).
                    let src = match &breaks {
                        Some(b) if valid => {
                            let at = (p as usize, p as usize + src.len());
                            let s = new.len() as i128 - p;
                            let kinds = inp.refs.as_ref().map_or(0, Refs::bits);
                            crate::naive::predict_naive(&old, b, kinds, at.0, at.1, s)
                        }
                        _ => src.to_vec(),
                    };
                    if valid {
                        new.extend_from_slice(&src);
                    }
                    olds.extend_from_slice(&src);
                }
                None => {
                    valid = false;
                    // Never decoded: apply refuses the copy first.
                    olds.resize(olds.len() + copy as usize, 0);
                }
            }
            let copy_start = new.len().saturating_sub(copy as usize);
            if stride == 0 || o.delta == 0 {
                runs.zeros(copy);
            } else {
                let mut k = 0;
                while k < copy {
                    runs.changed(o.delta);
                    if valid {
                        let at = copy_start + k as usize;
                        new[at] = new[at].wrapping_add(o.delta);
                    }
                    let z = (stride - 1).min(copy - k - 1);
                    runs.zeros(z);
                    k += 1 + z;
                }
            }
            let pool = literal_pool();
            let mut left = lit as usize;
            while left > 0 {
                let at = (lit_counter as usize) % pool.len();
                let n = left.min(pool.len() - at);
                streams[LITERALS].extend_from_slice(&pool[at..at + n]);
                if valid {
                    new.extend_from_slice(&pool[at..at + n]);
                }
                lit_counter += n as u64;
                left -= n;
            }
            let next = p + i128::from(copy) + i128::from(seek);
            if next < 0 || next > old.len() as i128 || (copy == 0 && lit == 0) {
                valid = false;
            }
            p = next.clamp(0, old.len() as i128);
            if new.len() > 1 << 20 {
                valid = false;
                break;
            }
        }
        runs.finish(&mut streams);
        let faults: Vec<&StreamFault> = inp
            .stream_faults
            .iter()
            .filter(|f| usize::from(f.segment) % 8 == si)
            .collect();
        for f in faults.iter().filter(|f| !f.stored) {
            fault(&mut streams[usize::from(f.stream) % 5], f);
        }
        // One old byte per delta, also when a fault changed the count.
        olds.resize(streams[DELTA_BYTES].len(), 0);
        if seg.seg_len_skew != 0 {
            valid = false;
        }
        let declared = seg_len.wrapping_add_signed(i64::from(seg.seg_len_skew));
        total = total.wrapping_add(declared);
        if declared == 0 {
            valid = false;
        }
        let level = if seg.level & 1 == 1 { 3 } else { 1 };
        let mut codecs = seg
            .zstd
            .map(|z| if z { Enc::Zstd(level) } else { Enc::Raw });
        // The layout the applier will see: plain needs a delta-byte stream and
        // no run streams (a fault may have changed either).
        let plain = streams[ZERO_RUNS].is_empty()
            && streams[DELTA_LENS].is_empty()
            && !streams[DELTA_BYTES].is_empty();
        match seg.layout {
            Layout::Runs => {}
            Layout::PlainRaw => codecs[DELTA_BYTES] = Enc::Raw,
            Layout::PlainZstd => codecs[DELTA_BYTES] = Enc::Zstd(level),
            Layout::PlainModel => codecs[DELTA_BYTES] = Enc::Model,
        }
        // Compressed literals with the level's second bit: LZMA instead of zstd.
        if seg.zstd[LITERALS] && seg.level & 2 == 2 {
            codecs[LITERALS] = Enc::Lzma;
        }
        // Everything before this segment's codec faults is right: the reader
        // meets them first.
        let sound = valid;
        if seg.model_elsewhere >= 0xf0 {
            let k = usize::from(seg.model_elsewhere) % 5;
            codecs[k] = Enc::Model;
            let harmless = streams[k].is_empty() || (k == DELTA_BYTES && plain);
            if !harmless {
                valid = false;
            }
        }
        if codecs[DELTA_BYTES] == Enc::Model && !streams[DELTA_BYTES].is_empty() && !plain {
            valid = false;
        }
        if seg.codec2 >= 0xf8 {
            let k = usize::from(seg.codec2) % 5;
            codecs[k] = Enc::Undefined;
            if !streams[k].is_empty() {
                valid = false;
            }
        }
        if sound && codec_error.is_none() {
            codec_error = first_codec_error(&streams, codecs, plain, &seg.model, &faults);
        }
        model_streams += streams
            .iter()
            .zip(codecs)
            .filter(|(s, c)| !s.is_empty() && *c == Enc::Model)
            .count();
        let (bytes, model_ok) = encode_segment(
            declared, &streams, codecs, &seg.model, &olds, plain, &faults,
        );
        if !model_ok {
            valid = false;
        }
        encoded_segments.push(bytes);
    }
    if !inp.trailer.is_empty() || inp.new_len_skew != 0 || inp.wrong_old_hash || inp.wrong_new_hash
    {
        valid = false;
    }
    let new_len = total.wrapping_add_signed(i64::from(inp.new_len_skew));
    // The header refuses nothing, and the new length reaches the segment.
    let header_ok = !inp.wrong_old_hash
        && inp.new_len_skew >= 0
        && new_len <= crate::checks::MAX_OUTPUT
        && map_ok;
    let expected_error = codec_error
        .filter(|_| header_ok)
        .map(deltaswap::FormatErrorKind::UnknownCodec);
    let transform = inp.refs.as_ref().map_or(0, Refs::bits);
    let mut patch = header(inp, transform, &old, &new, Some(new_len));
    patch.extend_from_slice(&map_bytes);
    for s in &encoded_segments {
        patch.extend_from_slice(s);
    }
    patch.extend_from_slice(&inp.trailer);
    Case {
        old,
        patch,
        expected: valid.then_some(new),
        expected_error,
        model_streams,
    }
}

/// The patch header: segments with `new_len`, the edit layout (flag bit 0)
/// without it; the digests of `old` and `new`, one bit flipped in each
/// that `inp` asks to be wrong.
fn header(inp: &Input, transform: u8, old: &[u8], new: &[u8], new_len: Option<u64>) -> Vec<u8> {
    let mut old_hash: [u8; 32] = Sha256::digest(old).into();
    let mut new_hash: [u8; 32] = Sha256::digest(new).into();
    if inp.wrong_old_hash {
        old_hash[0] ^= 1;
    }
    if inp.wrong_new_hash {
        new_hash[31] ^= 0x80;
    }
    let flags = u8::from(new_len.is_none());
    let mut patch = vec![b'D', b'S', b'W', b'P', 1, flags, transform, 0];
    varint(&mut patch, old.len() as u64);
    if let Some(n) = new_len {
        varint(&mut patch, n);
    }
    patch.extend_from_slice(&old_hash);
    patch.extend_from_slice(&new_hash);
    patch
}

/// Literal edits a hex edit may refer back to (the reader's ring).
const HEX_SOURCES: usize = 4;
/// The longest literal edit.
const MAX_LITERAL_EDIT: u64 = 4096;

/// [`build`] for the edit layout: the patch, and the new file when the list
/// is valid. The refusal is known for the faults a list without other
/// faults meets first: a transform byte, a count too large or too small,
/// bytes after the list.
fn build_edits(inp: &Input, list: &EditList, old: Vec<u8>) -> Case {
    let pool = literal_pool();
    let mut new = old.clone();
    let mut body = Vec::new();
    // The last literal edits, oldest first.
    let mut literals: Vec<Vec<u8>> = Vec::new();
    let mut lit_counter = inp.old_seed % 4096;
    let mut p = 0u64;
    let mut written = 0u64;
    for e in list.edits.iter().take(64) {
        let room = (old.len() as u64).saturating_sub(p);
        if !inp.clamp {
            // A gap of 0xffff stands for one near 2^64, so that the sums of
            // positions can overflow: at the gap, or at the length after it.
            let gap = match e.gap {
                u16::MAX => u64::MAX - u64::from(e.source & 0xff),
                g => u64::from(g),
            };
            varint(&mut body, gap);
            varint(&mut body, (u64::from(e.len) << 1) | u64::from(e.hex));
            if e.hex {
                varint(&mut body, u64::from(e.source));
            } else {
                // Past 4096 the reader refuses the length before the bytes.
                let n = u64::from(e.len).min(MAX_LITERAL_EDIT + 1);
                body.extend((0..n).map(|i| pool[((lit_counter + i) as usize) % pool.len()]));
                lit_counter += n;
            }
            written += 1;
            continue;
        }
        if room == 0 {
            break;
        }
        let source = (e.hex && room >= 2)
            .then(|| {
                let back = usize::from(e.source & 3) % literals.len().max(1);
                let lit = literals
                    .len()
                    .checked_sub(1 + back)
                    .and_then(|i| literals.get(i))?;
                let from = usize::from(e.source >> 2) % lit.len();
                Some((back, from, lit))
            })
            .flatten();
        let (len, bytes) = match source {
            Some((back, from, lit)) => {
                let avail = (lit.len() - from).min((room / 2) as usize);
                let n = 1 + usize::from(e.len) % avail;
                let digits: Vec<u8> = lit[from..from + n]
                    .iter()
                    .flat_map(|b| [b >> 4, b & 15])
                    .map(|d| b"0123456789abcdef"[usize::from(d)])
                    .collect();
                let len = digits.len() as u64;
                let gap = u64::from(e.gap) % (room - len + 1);
                varint(&mut body, gap);
                varint(&mut body, (len << 1) | 1);
                varint(&mut body, ((from as u64) << 2) | back as u64);
                p += gap;
                (len, digits)
            }
            None => {
                let len = 1 + u64::from(e.len) % room.min(MAX_LITERAL_EDIT);
                let gap = u64::from(e.gap) % (room - len + 1);
                let bytes: Vec<u8> = (0..len)
                    .map(|i| pool[((lit_counter + i) as usize) % pool.len()])
                    .collect();
                lit_counter += len;
                varint(&mut body, gap);
                varint(&mut body, len << 1);
                body.extend_from_slice(&bytes);
                literals.push(bytes.clone());
                if literals.len() > HEX_SOURCES {
                    literals.remove(0);
                }
                p += gap;
                (len, bytes)
            }
        };
        new[p as usize..(p + len) as usize].copy_from_slice(&bytes);
        p += len;
        written += 1;
    }
    let count = written.saturating_add_signed(i64::from(list.count_skew));
    let transform = if list.transform >= 0xf0 {
        list.transform & 0x0f | 1
    } else {
        0
    };
    let mut patch = header(inp, transform, &old, &new, None);
    varint(&mut patch, count);
    patch.extend_from_slice(&body);
    patch.extend_from_slice(&inp.trailer);
    // What a list that is right but for these meets first.
    let sound = inp.clamp && !inp.wrong_old_hash;
    use deltaswap::FormatErrorKind as K;
    let expected_error = if transform != 0 {
        Some(K::UnknownTransform(transform))
    } else if sound && count > written && inp.trailer.is_empty() {
        Some(K::Truncated)
    } else if sound && count <= written && (count < written || !inp.trailer.is_empty()) {
        Some(K::TrailingBytes)
    } else {
        None
    };
    let valid = inp.clamp
        && transform == 0
        && count == written
        && inp.trailer.is_empty()
        && !inp.wrong_old_hash
        && !inp.wrong_new_hash;
    Case {
        old,
        patch,
        expected: valid.then_some(new),
        expected_error,
        model_streams: 0,
    }
}

/// The codec refusal the reader meets first among a segment's descriptors:
/// codec 2 anywhere and the model on any stream but the delta bytes, refused
/// at their descriptor, then the model on the delta bytes of a segment that is
/// not in plain layout, refused once all five are read. None if there is
/// none, or if the model window of the delta bytes may be refused first (out
/// of 10..=30, larger than the stream needs, or its length skewed).
fn first_codec_error(
    streams: &[Vec<u8>; 5],
    codecs: [Enc; 5],
    plain: bool,
    model: &ModelSpec,
    faults: &[&StreamFault],
) -> Option<u8> {
    let skewed = faults.iter().any(|f| {
        !f.stored
            && usize::from(f.stream) % 5 == DELTA_BYTES
            && matches!(f.kind, FaultKind::SkewLen(_))
    });
    let bad_window = skewed || model.declares_bad_window(streams[DELTA_BYTES].len());
    for (k, (s, c)) in streams.iter().zip(codecs).enumerate() {
        match c {
            _ if s.is_empty() => {}
            Enc::Undefined => return Some(2),
            Enc::Model if k != DELTA_BYTES => return Some(model.codec()),
            Enc::Model if bad_window => return None,
            _ => {}
        }
    }
    let model_deltas = codecs[DELTA_BYTES] == Enc::Model && !streams[DELTA_BYTES].is_empty();
    (model_deltas && !plain).then_some(model.codec())
}

fn fault(s: &mut Vec<u8>, f: &StreamFault) {
    let at = usize::from(f.pos) % (s.len() + 1);
    match f.kind {
        FaultKind::Set(b) => {
            if let Some(x) = s.get_mut(at) {
                *x = b
            }
        }
        FaultKind::Insert(b) => s.insert(at, b),
        FaultKind::Remove => {
            if at < s.len() {
                s.remove(at);
            }
        }
        FaultKind::TruncateHere => s.truncate(at),
        FaultKind::FlipBit(b) => {
            if let Some(x) = s.get_mut(at) {
                *x ^= 1 << (b & 7)
            }
        }
        FaultKind::Append(b) => s.push(b),
        // A descriptor fault, applied by `encode_segment`.
        FaultKind::SkewLen(_) => {}
    }
}

/// How a stream is stored.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Enc {
    Raw,
    /// One zstd frame at this level.
    Zstd(i32),
    /// The delta model (codec 3 or 5) with the segment's [`ModelSpec`].
    Model,
    /// Codec byte 2, which no version defines; the stream's bytes stored as is.
    Undefined,
    /// Raw LZMA (codec 4), defined for the literal stream only.
    Lzma,
}

/// Codes `deltas` over `olds` (the same length) with the delta model.
/// Returns the stored bytes, the descriptor's window_log, and whether that
/// descriptor decodes them to `deltas`.
fn model_encode(olds: &[u8], deltas: &[u8], spec: &ModelSpec) -> (Vec<u8>, u8, bool) {
    let w = spec.window_log(deltas.len());
    let blocks = spec.codec() == 5;
    let bytes = deltaswap::model_codec::encode_deltas_with(olds, deltas, u32::from(w), blocks);
    if spec.declare < 0xf0 || spec.declared == w {
        return (bytes, w, true);
    }
    // Another window changes the model's history, so the same bytes may decode
    // to other deltas. Out of 10..=30, or larger than the stream needs, the
    // descriptor is refused outright.
    let d = spec.declared;
    let ok = !spec.declares_bad_window(deltas.len()) && {
        let back = deltaswap::model_codec::decode_deltas_with(&bytes, olds, u32::from(d), blocks);
        back.exact && back.deltas == deltas
    };
    (bytes, d, ok)
}

/// Encodes a segment. Faults of the segment that hit stored bytes are applied
/// to them here, and length faults to the descriptors. `olds` are the old
/// bytes under the copies, one per delta byte; `plain` tells whether the
/// applier will see the segment in plain layout. Returns the bytes and false
/// if a model descriptor was written with a window that does not decode the
/// stream.
fn encode_segment(
    seg_len: u64,
    streams: &[Vec<u8>; 5],
    codecs: [Enc; 5],
    model: &ModelSpec,
    olds: &[u8],
    plain: bool,
    faults: &[&StreamFault],
) -> (Vec<u8>, bool) {
    let mut head = Vec::new();
    let mut body = Vec::new();
    let mut ok = true;
    varint(&mut head, seg_len);
    for (k, (s, enc)) in streams.iter().zip(codecs).enumerate() {
        if s.is_empty() {
            varint(&mut head, 0);
            continue;
        }
        let (codec, mut stored, window) = match enc {
            Enc::Raw => (0, s.clone(), None),
            Enc::Zstd(level) => (
                1,
                zstd::bulk::compress(s, level).expect("zstd compress"),
                None,
            ),
            Enc::Model if k == DELTA_BYTES && plain => {
                let (bytes, w, valid) = model_encode(olds, s, model);
                ok &= valid;
                (model.codec(), bytes, Some(w))
            }
            Enc::Model => {
                // Refused at its descriptor, before any payload is read: the
                // payload is the coding of a short prefix over zero old bytes
                // (coding all of a long literal stream would only cost time).
                let head = s.get(..256).unwrap_or(s);
                let (bytes, w, _) = model_encode(&vec![0; head.len()], head, model);
                (model.codec(), bytes, Some(w))
            }
            Enc::Undefined => (2, s.clone(), None),
            Enc::Lzma => (4, lzma_encode(s), None),
        };
        let (mut raw_skew, mut stored_skew) = (0i64, 0i64);
        for f in faults.iter().filter(|f| usize::from(f.stream) % 5 == k) {
            match f.kind {
                FaultKind::SkewLen(d) if f.stored => stored_skew += i64::from(d),
                FaultKind::SkewLen(d) => raw_skew += i64::from(d),
                _ if f.stored => fault(&mut stored, f),
                // Faults on the decoded bytes were applied before encoding.
                _ => {}
            }
        }
        if codec == 0 {
            // Raw: the stored bytes are the stream, with a single length.
            let len = (stored.len() as u64).wrapping_add_signed(raw_skew + stored_skew);
            varint(&mut head, len);
            if len != 0 {
                head.push(0);
            }
        } else {
            varint(&mut head, (s.len() as u64).wrapping_add_signed(raw_skew));
            head.push(codec);
            varint(
                &mut head,
                (stored.len() as u64).wrapping_add_signed(stored_skew),
            );
            if let Some(w) = window {
                head.push(w);
            }
            if codec == 4 {
                // lc = 1, lp = 2, pb = 2, as the writer; the smallest
                // dictionary the format admits for this stream.
                head.push(LZMA_PROPS);
                head.push(lzma_dict_log(s.len()));
            }
        }
        body.extend_from_slice(&stored);
    }
    head.extend_from_slice(&body);
    (head, ok)
}

/// The properties byte of the LZMA literal streams written here: lc = 1,
/// lp = 2, pb = 2.
const LZMA_PROPS: u8 = (2 * 5 + 2) * 9 + 1;

/// The dictionary of an LZMA stream of `len` bytes (log2): the smallest power
/// of two that holds it, at least 2^12, as the format requires.
fn lzma_dict_log(len: usize) -> u8 {
    let need = usize::BITS - len.saturating_sub(1).leading_zeros();
    u8::try_from(need.max(12)).unwrap_or(30)
}

/// `s` as raw LZMA with [`LZMA_PROPS`] and [`lzma_dict_log`]'s dictionary.
fn lzma_encode(s: &[u8]) -> Vec<u8> {
    let mut opts = lzma_rust2::LzmaOptions::with_preset(1);
    opts.lc = 1;
    opts.lp = 2;
    opts.pb = 2;
    opts.dict_size = 1 << lzma_dict_log(s.len());
    let mut w = lzma_rust2::LzmaWriter::new_no_header(Vec::new(), &opts, false).expect("lzma");
    std::io::Write::write_all(&mut w, s).expect("lzma write");
    w.finish().expect("lzma finish")
}

/// The target: a valid case must apply to exactly the in-target model's output
/// (the new file [`build`] computed); every
/// case goes through [`crate::checks::check_apply`] (appliers and oracle agree,
/// heap budget, reads inside old).
pub fn check(inp: &Input) {
    let case = build(inp);
    let applied = crate::checks::apply_checked(&case.old, &case.patch);
    if let Some(kind) = case.expected_error {
        match &applied {
            Err(deltaswap::Error::Format(f)) => {
                assert_eq!(f.kind(), kind, "a fault is refused as {f:?}")
            }
            // A model window over the fuzzing limit in an earlier segment.
            Err(deltaswap::Error::LimitExceeded { .. }) => {}
            other => panic!("a fault gives {other:?}, not {kind:?}"),
        }
    }
    if let Some(want) = &case.expected {
        if want.len() as u64 <= crate::checks::MAX_OUTPUT {
            match applied {
                Ok(out) => assert!(
                    &out == want,
                    "a valid structured patch applies to other bytes"
                ),
                // Over a fuzzing limit (a model window over 2^20, model
                // deltas over 256 KiB): the default limits apply it, unless
                // it is over theirs too.
                Err(deltaswap::Error::LimitExceeded { .. }) => {
                    match deltaswap::apply(&case.old, &case.patch) {
                        Ok(out) => assert!(
                            &out == want,
                            "a valid structured patch applies to other bytes (default limits)"
                        ),
                        Err(deltaswap::Error::LimitExceeded { .. }) => {}
                        Err(e) => {
                            panic!("a valid structured patch is refused (default limits): {e:?}")
                        }
                    }
                }
                Err(e) => panic!("a valid structured patch is refused: {e:?}"),
            }
        }
    }
}

/// Writes a value as the bytes that `arbitrary` (1.x, as derived above)
/// decodes back into it: fields in order, integers little-endian, a `bool` as
/// a byte's low bit, an enum variant as a `u32` that, multiplied by the number
/// of variants and shifted right by 32, gives its index, and a `Vec` as a
/// `true` byte before each element and a `false` one after the last. For
/// writing seeds; `tests/fuzz_regressions.rs` checks that they decode back.
pub trait Emit {
    fn emit(&self, out: &mut Vec<u8>);
}

/// Variant `index` of an enum with `count` variants.
fn variant(out: &mut Vec<u8>, index: u64, count: u64) {
    let v = (index << 32).div_ceil(count);
    out.extend_from_slice(&(v as u32).to_le_bytes());
}

macro_rules! emit_int {
    ($($t:ty)*) => {$(
        impl Emit for $t {
            fn emit(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
emit_int!(u8 u16 u64 i8 i16 i32);

impl Emit for bool {
    fn emit(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
}

impl<T: Emit, const N: usize> Emit for [T; N] {
    fn emit(&self, out: &mut Vec<u8>) {
        self.iter().for_each(|x| x.emit(out));
    }
}

impl<T: Emit> Emit for Vec<T> {
    fn emit(&self, out: &mut Vec<u8>) {
        for x in self {
            true.emit(out);
            x.emit(out);
        }
        false.emit(out);
    }
}

impl<A: Emit, B: Emit> Emit for (A, B) {
    fn emit(&self, out: &mut Vec<u8>) {
        self.0.emit(out);
        self.1.emit(out);
    }
}

impl<T: Emit> Emit for Option<T> {
    fn emit(&self, out: &mut Vec<u8>) {
        self.is_some().emit(out);
        if let Some(x) = self {
            x.emit(out);
        }
    }
}

/// [`Emit`] for a struct: its fields in declaration order, as `arbitrary`'s
/// derive reads them.
macro_rules! emit_fields {
    ($($t:ty: $($f:ident),+;)*) => {$(
        impl Emit for $t {
            fn emit(&self, out: &mut Vec<u8>) {
                $(self.$f.emit(out);)+
            }
        }
    )*};
}

emit_fields! {
    Refs: breaks, call_every, kinds;
    Input: old_len, old_seed, old_periodic, segments, clamp, wrong_old_hash,
        wrong_new_hash, new_len_skew, stream_faults, trailer, refs, edits;
    EditList: edits, count_skew, transform;
    FuzzEdit: gap, len, hex, source;
    Seg: ops, zstd, level, seg_len_skew, layout, model, model_elsewhere, codec2;
    ModelSpec: window, declare, declared;
    FuzzOp: copy, lit, seek, delta, delta_stride;
    StreamFault: segment, stream, pos, kind, stored;
}

impl Emit for Layout {
    fn emit(&self, out: &mut Vec<u8>) {
        variant(out, *self as u64, 4);
    }
}

impl Emit for FaultKind {
    fn emit(&self, out: &mut Vec<u8>) {
        const N: u64 = 7;
        match *self {
            FaultKind::Set(b) => {
                variant(out, 0, N);
                b.emit(out);
            }
            FaultKind::Insert(b) => {
                variant(out, 1, N);
                b.emit(out);
            }
            FaultKind::Remove => variant(out, 2, N),
            FaultKind::TruncateHere => variant(out, 3, N),
            FaultKind::FlipBit(b) => {
                variant(out, 4, N);
                b.emit(out);
            }
            FaultKind::Append(b) => {
                variant(out, 5, N);
                b.emit(out);
            }
            FaultKind::SkewLen(d) => {
                variant(out, 6, N);
                d.emit(out);
            }
        }
    }
}
